"""Run lifecycle: suspend / resume, cancel, retries, bail, abort, state, writer events, watch, streams, listing."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from voiceserver.runs.store import InMemoryRunStore
from voiceserver.workflows import (
    RunStateError,
    SchemaValidationError,
    UnknownStepError,
    create_step,
    create_workflow,
)


class Num(BaseModel):
    value: int


class Answer(BaseModel):
    day: str


class Ask(BaseModel):
    prompt: str


def add(n: int, step_id: str | None = None):
    return create_step(id=step_id or f"add-{n}", input_schema=Num, output_schema=Num,
                       execute=lambda ctx: {"value": ctx.input_data.value + n})


def asking(step_id: str, question: str):
    """A step that suspends with a prompt until resumed with a day, then outputs value + len(day)."""
    calls = []

    async def run(ctx):
        calls.append(ctx.resume_data)
        if ctx.resume_data is None:
            return await ctx.suspend({"prompt": question})
        return {"value": ctx.input_data.value + len(ctx.resume_data.day)}

    step = create_step(id=step_id, input_schema=Num, output_schema=Num, resume_schema=Answer, suspend_schema=Ask,
                       execute=run)
    return step, calls


async def test_suspend_then_resume_same_run_object():
    ask, calls = asking("ask-day", "Which day?")
    wf = create_workflow(id="book", input_schema=Num, output_schema=Num).then(add(1)).then(ask).then(add(100)).commit()
    run = await wf.create_run(resource_id="caller-1")
    result = await run.start(input_data={"value": 0})
    assert result.status == "suspended"
    assert result.suspended == [["ask-day"]]
    assert result.suspend_payload == {"prompt": "Which day?"}
    assert result.steps["ask-day"].status == "suspended"
    assert "add-100" not in result.steps
    resumed = await run.resume(step="ask-day", resume_data={"day": "Monday"})
    assert resumed.status == "success", resumed.error
    assert resumed.result == {"value": 107}
    assert resumed.steps["ask-day"].resume_payload == {"day": "Monday"}
    assert resumed.steps["ask-day"].suspend_payload == {"prompt": "Which day?"}
    assert calls[0] is None and calls[1] == Answer(day="Monday")
    assert resumed.steps["add-1"].output == {"value": 1}  # done steps are not re-run


async def test_resume_from_a_new_run_object_loaded_from_storage_step_omitted():
    store = InMemoryRunStore()
    ask, _ = asking("ask", "Day?")
    wf = create_workflow(id="book2", input_schema=Num, storage=store).then(ask).then(add(1)).commit()
    first = await wf.create_run(resource_id="caller-7")
    await first.start(input_data={"value": 1})
    # a second definition of the same workflow (as another process would build it) over the same store
    ask2, _ = asking("ask", "Day?")
    wf2 = create_workflow(id="book2", input_schema=Num, storage=store).then(ask2).then(add(1)).commit()
    suspended = await wf2.list_runs(resource_id="caller-7", status="suspended")
    assert [r.run_id for r in suspended] == [first.run_id]
    again = await wf2.create_run(run_id=first.run_id)
    assert again.status == "suspended" and again.resource_id == "caller-7"
    result = await again.resume(resume_data={"day": "Tue"})
    assert result.status == "success" and result.result == {"value": 5}
    stored = await wf2.get_run(first.run_id)
    assert stored is not None and stored.status == "success" and stored.result == {"value": 5}


async def test_invalid_resume_data_names_the_field_and_run_stays_suspended():
    ask, calls = asking("ask", "Day?")
    wf = create_workflow(id="bad-resume", input_schema=Num).then(ask).commit()
    run = await wf.create_run()
    await run.start(input_data={"value": 1})
    with pytest.raises(SchemaValidationError) as err:
        await run.resume(resume_data={"dya": "Mon"})
    assert err.value.fields[0]["field"] == "day"
    assert "day" in str(err.value)
    assert run.status == "suspended"
    assert (await wf.get_run(run.run_id)).status == "suspended"
    assert len(calls) == 1
    with pytest.raises(UnknownStepError, match="no suspended step matches 'nope'"):
        await run.resume(step="nope", resume_data={"day": "Mon"})
    done = await run.resume(step=ask, resume_data={"day": "Mon"})
    assert done.status == "success"
    with pytest.raises(RunStateError, match="not suspended"):
        await run.resume(resume_data={"day": "Mon"})


async def test_parallel_suspensions_resume_one_at_a_time():
    a, _ = asking("ask-a", "A?")
    b, _ = asking("ask-b", "B?")
    wf = create_workflow(id="par-susp", input_schema=Num).parallel([a, b, add(5)]).commit()
    run = await wf.create_run()
    result = await run.start(input_data={"value": 0})
    assert result.status == "suspended"
    assert sorted(result.suspended) == [["ask-a"], ["ask-b"]]
    with pytest.raises(UnknownStepError, match="several steps"):
        await run.resume(resume_data={"day": "x"})
    half = await run.resume(step="ask-b", resume_data={"day": "xy"})
    assert half.status == "suspended" and half.suspended == [["ask-a"]]
    done = await run.resume(resume_data={"day": "xyz"})
    assert done.status == "success"
    assert done.result == {"ask-a": {"value": 3}, "ask-b": {"value": 2}, "add-5": {"value": 5}}


async def test_nested_workflow_step_suspends_and_resumes_by_path():
    ask, _ = asking("ask", "Inner?")
    inner = create_workflow(id="inner", input_schema=Num, output_schema=Num).then(ask).then(add(1)).commit()
    outer = create_workflow(id="outer", input_schema=Num).then(add(10)).then(inner).then(add(100)).commit()
    run = await outer.create_run()
    result = await run.start(input_data={"value": 0})
    assert result.status == "suspended"
    assert result.suspended == [["inner", "ask"]]
    assert result.suspend_payload == {"prompt": "Inner?"}
    assert result.steps["inner"].status == "suspended"
    reopened = await outer.create_run(run_id=run.run_id)
    done = await reopened.resume(step=["inner", "ask"], resume_data={"day": "Fri"})
    assert done.status == "success", done.error
    assert done.result == {"value": 114}


async def test_loop_and_foreach_items_can_suspend():
    ask, _ = asking("ask", "Item?")
    wf = create_workflow(id="fe-susp", input_schema=list[Num]).foreach(ask, concurrency=2).commit()
    run = await wf.create_run()
    result = await run.start(input_data=[{"value": 1}, {"value": 2}])
    assert result.status == "suspended" and len(result.suspensions) == 2
    assert [s["indices"] for s in result.suspensions] == [[0], [1]]
    first = await run.resume(step="ask", resume_data={"day": "a"})  # the lowest waiting item
    assert first.status == "suspended" and [s["indices"] for s in first.suspensions] == [[1]]
    done = await run.resume(step="ask", resume_data={"day": "bbb"})
    assert done.result == [{"value": 2}, {"value": 5}]

    ask_loop, _ = asking("ask-loop", "Again?")
    loop = create_workflow(id="loop-susp", input_schema=Num).dountil(
        ask_loop, lambda ctx: ctx.input_data.value >= 10).commit()
    run2 = await loop.create_run()
    r = await run2.start(input_data={"value": 0})
    assert r.status == "suspended"
    r = await run2.resume(resume_data={"day": "1234567"})  # 7, loop again: the next iteration suspends afresh
    assert r.status == "suspended"
    r = await run2.resume(resume_data={"day": "12345"})
    assert r.status == "success" and r.result == {"value": 12}


async def test_cancel_stops_a_running_step_and_saves_canceled():
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def wait_forever(ctx):
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    store = InMemoryRunStore()
    step = create_step(id="slow", execute=wait_forever)
    wf = create_workflow(id="cancel-me", storage=store).then(add(1, "first")).then(step).commit()
    run = await wf.create_run()
    task = asyncio.create_task(run.start(input_data={"value": 1}))
    await asyncio.wait_for(entered.wait(), 5)
    result = await run.cancel()
    assert cancelled.is_set()
    assert result.status == "canceled"
    assert result.steps["slow"].status == "canceled" and result.steps["first"].status == "success"
    assert (await task).status == "canceled"
    record = await store.load_run("workflow", run.run_id)
    assert record.status == "canceled"


async def test_cancel_during_sleep_and_of_a_suspended_run():
    wf = create_workflow(id="sleepy").sleep(60_000).commit()
    run = await wf.create_run()
    task = asyncio.create_task(run.start(input_data=None))
    for _ in range(100):
        if (run.current_result().steps.get("sleep-1") or None) is not None:
            break
        await asyncio.sleep(0.01)
    assert (await run.cancel()).status == "canceled"
    await task
    ask, _ = asking("ask", "?")
    wf2 = create_workflow(id="susp-cancel", input_schema=Num).then(ask).commit()
    run2 = await wf2.create_run()
    await run2.start(input_data={"value": 0})
    assert (await run2.cancel()).status == "canceled"
    assert (await wf2.get_run(run2.run_id)).status == "canceled"


async def test_caller_timeout_cancels_the_run():
    async def hang(ctx):
        await asyncio.sleep(3600)

    wf = create_workflow(id="hang").then(create_step(id="hang", execute=hang)).commit()
    run = await wf.create_run()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await run.start(input_data=None)
    result = await run.result()
    assert result.status == "canceled"


async def test_retries_then_success_and_then_failure_naming_the_step():
    attempts = []

    def flaky(ctx):
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return {"value": 42}

    wf = create_workflow(id="retry").then(create_step(id="flaky", execute=flaky, retries=2)).commit()
    result = await (await wf.create_run()).start(input_data=None)
    assert result.status == "success" and result.result == {"value": 42}
    assert attempts == [0, 1, 2]

    def always(ctx):
        raise ValueError("boom")

    wf2 = create_workflow(id="fail").then(add(1)).then(create_step(id="bad", execute=always, retries=1)).commit()
    failed = await (await wf2.create_run()).start(input_data={"value": 1})
    assert failed.status == "failed"
    assert failed.error["step_id"] == "bad"
    assert "ValueError: boom" in failed.error["message"]
    assert failed.steps["bad"].status == "failed" and failed.steps["bad"].error["type"] == "ValueError"
    assert failed.steps["add-1"].status == "success"


async def test_bail_ends_successfully_and_abort_cancels():
    def bail(ctx):
        if ctx.input_data.value > 5:
            ctx.bail({"value": -1})
        return {"value": ctx.input_data.value}

    after = add(1000, "after")
    wf = create_workflow(id="bail", input_schema=Num, output_schema=Num).then(
        create_step(id="maybe-bail", input_schema=Num, execute=bail)).then(after).commit()
    bailed = await (await wf.create_run()).start(input_data={"value": 9})
    assert bailed.status == "success" and bailed.result == {"value": -1}
    assert "after" not in bailed.steps
    normal = await (await wf.create_run()).start(input_data={"value": 1})
    assert normal.result == {"value": 1001}

    def abort(ctx):
        try:
            ctx.abort()
        except Exception:  # noqa: BLE001 -- the abort signal is not an Exception: user code cannot swallow it by accident
            return {"value": 0}

    wf2 = create_workflow(id="abort").then(create_step(id="abort", execute=abort)).then(add(1)).commit()
    aborted = await (await wf2.create_run()).start(input_data={"value": 1})
    assert aborted.status == "canceled"
    assert "add-1" not in aborted.steps


async def test_state_is_shared_between_steps_and_validated():
    class Counter(BaseModel):
        count: int = 0
        names: list[str] = []

    def bump(name):
        def run(ctx):
            state = ctx.state
            ctx.set_state({"count": state.count + 1, "names": [*state.names, name]})
            return ctx.input_data
        return create_step(id=name, state_schema=Counter, execute=run)

    def read(ctx):
        return {"state": ctx.state, "first": ctx.get_step_result("one"), "missing": ctx.get_step_result("zzz")}

    wf = create_workflow(id="state", state_schema=Counter).then(bump("one")).then(bump("two")).then(
        create_step(id="read", execute=read)).commit()
    result = await (await wf.create_run()).start(input_data={"x": 1}, initial_state={"count": 10})
    assert result.result == {"state": {"count": 12, "names": ["one", "two"]}, "first": {"x": 1}, "missing": None}
    assert result.state == {"count": 12, "names": ["one", "two"]}

    def bad_state(ctx):
        ctx.set_state({"count": "many"})

    wf2 = create_workflow(id="state-bad").then(create_step(id="bad", state_schema=Counter, execute=bad_state)).commit()
    failed = await (await wf2.create_run()).start(input_data=None)
    assert failed.status == "failed" and failed.error["fields"][0]["field"] == "count"
    with pytest.raises(SchemaValidationError, match="count"):
        await (await wf.create_run()).start(input_data=None, initial_state={"count": "x"})


async def test_writer_custom_events_reach_stream_and_watchers():
    async def chatty(ctx):
        await ctx.writer.write({"type": "progress", "percent": 50})
        await ctx.writer.write({"note": "no type given"})
        with pytest.raises(ValueError, match="not allowed"):
            await ctx.writer.write({"type": "workflow-finish"})
        return {"done": True}

    wf = create_workflow(id="writer").then(create_step(id="chatty", execute=chatty)).commit()
    run = await wf.create_run()
    watched = []
    unwatch = run.watch(watched.append)
    streamed = [e async for e in run.stream(input_data=None)]
    result = await run.result()
    assert result.status == "success", result.error
    types = [e["type"] for e in streamed]
    assert types == ["workflow-start", "workflow-step-start", "progress", "custom", "workflow-step-result",
                     "workflow-step-finish", "workflow-finish"]
    progress = streamed[2]
    assert progress["payload"] == {"id": "chatty", "path": ["chatty"], "data": {"type": "progress", "percent": 50}}
    assert progress["run_id"] == run.run_id
    assert watched == streamed
    unwatch()
    assert not run.listening


async def test_stream_events_for_a_suspension_and_resume_stream():
    ask, _ = asking("ask", "Which?")
    wf = create_workflow(id="stream-susp", input_schema=Num).then(ask).commit()
    run = await wf.create_run()
    events = [e async for e in run.stream(input_data={"value": 1})]
    assert [e["type"] for e in events] == ["workflow-start", "workflow-step-start", "workflow-step-suspended",
                                           "workflow-step-finish", "workflow-finish"]
    assert events[2]["payload"]["suspend_payload"] == {"prompt": "Which?"}
    assert events[-1]["payload"] == {"status": "suspended", "suspended": [["ask"]]}
    resumed = [e async for e in run.resume_stream(resume_data={"day": "Sun"})]
    assert resumed[0]["payload"]["resumed"]["path"] == ["ask"]
    assert resumed[-1]["payload"] == {"status": "success", "result": {"value": 4}}


async def test_async_watcher_and_failing_watcher_do_not_break_the_run():
    seen = []

    async def good(event):
        seen.append(event["type"])

    def broken(event):
        raise RuntimeError("watcher bug")

    wf = create_workflow(id="watch", input_schema=Num).then(add(1)).commit()
    run = await wf.create_run()
    run.watch(broken)
    run.watch(good)
    result = await run.start(input_data={"value": 1})
    assert result.status == "success"
    assert seen[0] == "workflow-start" and seen[-1] == "workflow-finish"


async def test_list_runs_get_run_and_run_states():
    store = InMemoryRunStore()
    ask, _ = asking("ask", "?")
    wf = create_workflow(id="listing", input_schema=Num, storage=store).then(ask).commit()
    other = create_workflow(id="other", input_schema=Num, storage=store).then(add(1)).commit()
    r1 = await wf.create_run(resource_id="alice")
    await r1.start(input_data={"value": 1})
    r2 = await wf.create_run(run_id="my-run-2", resource_id="bob")
    await r2.start(input_data={"value": 2})
    await r2.resume(resume_data={"day": "x"})
    await (await other.create_run(resource_id="alice")).start(input_data={"value": 3})
    assert {r.run_id for r in await wf.list_runs()} == {r1.run_id, "my-run-2"}
    assert [r.run_id for r in await wf.list_runs(resource_id="alice")] == [r1.run_id]
    assert [r.run_id for r in await wf.list_runs(status="success")] == ["my-run-2"]
    got = await wf.get_run("my-run-2")
    assert got.status == "success" and got.resource_id == "bob" and got.steps["ask"].status == "success"
    assert await wf.get_run("unknown") is None
    assert await other.get_run(r1.run_id) is None  # another workflow's run is not visible
    with pytest.raises(RunStateError, match="already started"):
        await r2.start(input_data={"value": 1})
    fresh = await wf.create_run()
    assert fresh.status == "pending"
    with pytest.raises(RunStateError, match="has not started"):
        await fresh.result()


async def test_stale_run_objects_never_run_a_step_twice():
    ask, calls = asking("ask", "?")
    wf = create_workflow(id="once", input_schema=Num).then(ask).commit()
    run = await wf.create_run()
    await run.start(input_data={"value": 0})
    a = await wf.create_run(run_id=run.run_id)
    b = await wf.create_run(run_id=run.run_id)
    assert a is not b and a.status == b.status == "suspended"
    outcomes = await asyncio.gather(a.resume(resume_data={"day": "x"}), b.resume(resume_data={"day": "y"}),
                                    return_exceptions=True)
    assert sum(isinstance(o, RunStateError) for o in outcomes) == 1
    assert len(calls) == 2  # the first run plus exactly one resume
    with pytest.raises(RunStateError, match="not suspended"):
        await run.resume(resume_data={"day": "z"})  # the original object is stale too: storage says success
    assert len(calls) == 2
    fresh_same_id = await wf.create_run(run_id=run.run_id)
    with pytest.raises(RunStateError, match="already started"):
        await fresh_same_id.start(input_data={"value": 0})


async def test_bail_in_a_parallel_branch_stops_its_sibling():
    async def slow(ctx):
        await asyncio.sleep(3600)

    def quit_early(ctx):
        ctx.bail({"early": True})

    wf = create_workflow(id="par-bail").parallel(
        [create_step(id="slow", execute=slow), create_step(id="quit", execute=quit_early)]).then(add(1)).commit()
    result = await (await wf.create_run()).start(input_data={"value": 0})
    assert result.status == "success" and result.result == {"early": True}
    assert result.steps["slow"].status == "canceled" and result.steps["quit"].status == "success"
    assert "add-1" not in result.steps


async def test_reopening_a_run_checks_its_resource():
    from voiceserver.workflows import WorkflowError

    ask, _ = asking("ask", "?")
    wf = create_workflow(id="owned", input_schema=Num).then(ask).commit()
    run = await wf.create_run(resource_id="alice")
    await run.start(input_data={"value": 0})
    assert (await wf.create_run(run_id=run.run_id, resource_id="alice")).status == "suspended"
    assert (await wf.create_run(run_id=run.run_id)).resource_id == "alice"
    with pytest.raises(WorkflowError, match="another resource"):
        await wf.create_run(run_id=run.run_id, resource_id="mallory")


async def test_suspend_outside_a_step_fails_cleanly_and_streams_end():
    def cond(ctx):
        ctx.suspend({"no": "pe"})

    wf = create_workflow(id="bad-cond").branch([(cond, add(1))]).commit()
    run = await wf.create_run()
    events = [e async for e in run.stream(input_data={"value": 0})]
    assert events[-1]["type"] == "workflow-finish"
    result = await run.result()
    assert result.status == "failed" and "only be called in a step" in result.error["message"]
    mapped = create_workflow(id="bad-map").map(lambda ctx: ctx.suspend()).commit()
    failed = await (await mapped.create_run()).start(input_data=None)
    assert failed.status == "failed" and "cannot suspend" in failed.error["message"]
    assert failed.steps["map-1"].status == "failed"
