"""Snapshots: what is saved, when, and that the cached encoding always equals the live state."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from voiceserver.runs.store import InMemoryRunStore, RunRecord
from voiceserver.workflows import create_step, create_workflow
from voiceserver.workflows.run import SnapshotEncoder


class Num(BaseModel):
    value: int


class Answer(BaseModel):
    n: int


class CheckingStore(InMemoryRunStore):
    """An InMemoryRunStore that, at every save, checks the snapshot against the run's live state."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, object] = {}
        self.saves: list[tuple[str, str]] = []

    async def save_run(self, record: RunRecord) -> None:
        live = self.runs[record.run_id]._state  # type: ignore[attr-defined]
        decoded = json.loads(record.snapshot["exec_json"])
        assert decoded == live, "snapshot differs from the live state"
        assert record.status == live["status"] and record.kind == "workflow"
        self.saves.append((record.status, ",".join(f"{k}={v['status']}" for k, v in live["steps"].items())))
        await super().save_run(record)


def add(n: int, step_id: str):
    return create_step(id=step_id, input_schema=Num, output_schema=Num,
                       execute=lambda ctx: {"value": ctx.input_data.value + n})


def asking(step_id: str):
    def run(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"prompt": f"{step_id}?"})
        return {"value": ctx.input_data.value + ctx.resume_data.n}
    return create_step(id=step_id, input_schema=Num, output_schema=Num, resume_schema=Answer, execute=run)


async def start(wf, store: CheckingStore, data, resource_id=None):
    run = await wf.create_run(resource_id=resource_id)
    store.runs[run.run_id] = run
    return run, await run.start(input_data=data)


async def test_snapshot_matches_live_state_through_suspend_resume_everywhere():
    store = CheckingStore()
    inner = create_workflow(id="inner", input_schema=Num, output_schema=Num).then(asking("inner-ask")).commit()
    wf = (create_workflow(id="all", input_schema=Num, storage=store)
          .then(add(1, "a"))
          .parallel([asking("p1"), add(2, "p2")])
          .map(lambda ctx: [{"value": ctx.input_data["p1"]["value"]}, {"value": 100}])
          .foreach(asking("fe"), concurrency=2)
          .map(lambda ctx: ctx.input_data[1])
          .dountil(asking("loop"), lambda ctx: ctx.iteration_count >= 2)
          .then(inner)
          .commit())
    run, result = await start(wf, store, {"value": 0}, resource_id="r-1")
    resumes = 0
    while result.status == "suspended":
        result = await run.resume(step=result.suspended[0], resume_data={"n": 1})
        resumes += 1
    assert result.status == "success", result.error
    assert resumes == 1 + 2 + 2 + 1  # parallel, two foreach items, two loop iterations, nested
    assert result.result == {"value": 104}
    assert len(store.saves) > 10
    record = await store.load_run("workflow", run.run_id)
    assert record.owner_id == "all" and record.resource_id == "r-1" and record.status == "success"
    assert record.snapshot["version"] == 1 and record.snapshot["workflow_id"] == "all"


async def test_snapshots_at_every_step_end_and_on_failure():
    store = CheckingStore()

    def boom(ctx):
        raise RuntimeError("broken")

    wf = (create_workflow(id="fails", input_schema=Num, storage=store).then(add(1, "a")).then(add(2, "b"))
          .then(create_step(id="c", execute=boom)).commit())
    _, result = await start(wf, store, {"value": 0})
    assert result.status == "failed" and result.error["step_id"] == "c"
    assert store.saves == [
        ("running", ""),  # run start
        ("running", "a=success"),
        ("running", "a=success,b=success"),
        ("running", "a=success,b=success,c=failed"),
        ("failed", "a=success,b=success,c=failed"),
    ]


async def test_snapshot_after_cancel_marks_running_steps_canceled():
    store = CheckingStore()
    entered = asyncio.Event()

    async def slow(ctx):
        entered.set()
        await asyncio.sleep(3600)

    wf = create_workflow(id="cancel", storage=store).parallel(
        [create_step(id="slow", execute=slow), create_step(id="quick", execute=lambda ctx: 1)]).commit()
    run = await wf.create_run()
    store.runs[run.run_id] = run
    task = asyncio.create_task(run.start(input_data=None))
    await entered.wait()
    await run.cancel()
    await task
    assert store.saves[-1] == ("canceled", "slow=canceled,quick=success")


def test_encoder_reuses_finished_records_but_never_running_ones():
    encoder = SnapshotEncoder()
    done = {"status": "success", "output": {"v": 1}}
    running = {"status": "running", "payload": 1}
    state = {"status": "running", "steps": {"a": done, "b": running}, "pos": 1}
    assert json.loads(encoder.encode(state)) == state
    running["payload"] = 2  # running records may change between snapshots
    assert json.loads(encoder.encode(state))["steps"]["b"]["payload"] == 2
    state["steps"]["a"] = {"status": "success", "output": {"v": 9}}  # a re-run makes a new record
    assert json.loads(encoder.encode(state))["steps"]["a"]["output"] == {"v": 9}
    assert json.loads(encoder.encode({"status": "x", "steps": {}})) == {"status": "x", "steps": {}}


@pytest.mark.parametrize("bad", [{"version": 99, "exec_json": "{}"}, {"version": 1}, {"version": 1, "exec_json": "[]"}])
async def test_unreadable_snapshot_is_a_clear_error(bad):
    from voiceserver.workflows import WorkflowError

    store = InMemoryRunStore()
    wf = create_workflow(id="w", storage=store).then(add(1, "a")).commit()
    await store.save_run(RunRecord(kind="workflow", run_id="r", owner_id="w", status="suspended", snapshot=bad))
    with pytest.raises(WorkflowError, match="snapshot"):
        await wf.create_run(run_id="r")
