"""A suspended run resumes in another OS process, after the process that started it has exited.

This file is also the script the child processes run (``python test_workflow_restart.py <store> <command> ...``):
both sides build the same workflows over the same persistent RunStore. The store is a small JSON-file RunStore
(below); when ``voiceserver.memory.LanceDBStore`` exists, the same scenario runs on LanceDB too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # when run as a script by the child process
    sys.path.insert(0, str(REPO))

from voiceserver.ids import validate_id  # noqa: E402
from voiceserver.runs.store import RunRecord  # noqa: E402
from voiceserver.workflows import create_step, create_workflow  # noqa: E402


class FileRunStore:
    """A RunStore keeping one JSON file per run (durable when save_run returns: write, fsync, rename)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, kind: str, run_id: str) -> Path:
        return self.directory / f"{validate_id(kind, 'kind')}__{validate_id(run_id, 'run')}.json"

    def _write(self, record: RunRecord) -> None:
        path = self._path(record.kind, record.run_id)
        if path.exists():
            record = dataclasses.replace(record, created_at=json.loads(path.read_text())["created_at"])
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(dataclasses.asdict(record), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read_all(self, kind: str) -> list[RunRecord]:
        return [RunRecord(**json.loads(p.read_text())) for p in self.directory.glob(f"{kind}__*.json")]

    async def save_run(self, record: RunRecord) -> None:
        await asyncio.to_thread(self._write, record)

    async def load_run(self, kind: str, run_id: str) -> RunRecord | None:
        path = self._path(kind, run_id)
        text = await asyncio.to_thread(lambda: path.read_text() if path.exists() else None)
        return RunRecord(**json.loads(text)) if text else None

    async def list_runs(self, kind: str, owner_id: str | None = None, resource_id: str | None = None,
                        status: str | None = None, limit: int = 100) -> list[RunRecord]:
        rows = [r for r in await asyncio.to_thread(self._read_all, kind)
                if (owner_id is None or r.owner_id == owner_id)
                and (resource_id is None or r.resource_id == resource_id)
                and (status is None or r.status == status)]
        return sorted(rows, key=lambda r: r.updated_at, reverse=True)[:limit]

    async def delete_run(self, kind: str, run_id: str) -> None:
        await asyncio.to_thread(self._path(kind, run_id).unlink, True)


# --- the workflows both processes define ------------------------------------------------------------------------

class Request(BaseModel):
    name: str


class Booking(BaseModel):
    name: str
    day: str | None = None
    time: str | None = None


class DayAnswer(BaseModel):
    day: str


class TimeAnswer(BaseModel):
    time: str


def build(store: Any):
    async def ask_day(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"prompt": f"Which day, {ctx.input_data.name}?", "pid": os.getpid()})
        return {"name": ctx.input_data.name, "day": ctx.resume_data.day}

    async def ask_time(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"prompt": "What time?", "pid": os.getpid()})
        return {**ctx.input_data.model_dump(), "time": ctx.resume_data.time}

    def confirm(ctx):
        b = ctx.input_data
        ctx.set_state({"confirmed_by": os.getpid()})
        return {**b.model_dump(), "day": f"{b.day} at {b.time} (booked)"}

    time_flow = create_workflow(id="time-flow", input_schema=Booking, output_schema=Booking).then(
        create_step(id="ask-time", input_schema=Booking, output_schema=Booking, resume_schema=TimeAnswer,
                    execute=ask_time)).commit()
    return (create_workflow(id="book-appointment", input_schema=Request, output_schema=Booking, storage=store)
            .then(create_step(id="ask-day", input_schema=Request, output_schema=Booking, resume_schema=DayAnswer,
                              execute=ask_day))
            .then(time_flow)
            .then(create_step(id="confirm", input_schema=Booking, output_schema=Booking, execute=confirm))
            .commit())


def lancedb_store_class() -> Any:
    try:
        from voiceserver.memory import LanceDBStore
    except ImportError:
        try:
            from voiceserver import LanceDBStore  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return None
    return LanceDBStore


def open_store(kind: str, location: str) -> Any:
    if kind == "file":
        return FileRunStore(location)
    return lancedb_store_class()(uri=location)


async def child_main(argv: list[str]) -> None:
    store_kind, location, command, run_id, *rest = argv
    wf = build(open_store(store_kind, location))
    run = await wf.create_run(run_id=run_id, resource_id="caller-42")
    if command == "start":
        result = await run.start(input_data={"name": "Ann"})
    else:
        step, data = rest
        result = await run.resume(step=json.loads(step), resume_data=json.loads(data))
    print(json.dumps({"pid": os.getpid(), "result": result.to_dict()}))


# --- the tests --------------------------------------------------------------------------------------------------

def run_child(store_kind: str, location: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, store_kind, str(location), *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


STORES = ["file", pytest.param("lancedb", marks=[pytest.mark.slow, pytest.mark.skipif(
    lancedb_store_class() is None, reason="voiceserver.memory.LanceDBStore is not importable")])]


@pytest.mark.parametrize("store_kind", STORES)
async def test_suspended_run_resumes_in_another_process(tmp_path, store_kind):
    location = tmp_path / "runs"
    first = run_child(store_kind, location, "start", "run-restart-1")
    assert first["result"]["status"] == "suspended"
    assert first["result"]["suspensions"][0]["payload"]["prompt"] == "Which day, Ann?"

    # the parent (a third process) sees the suspended run of this caller through the same storage
    wf = build(open_store(store_kind, str(location)))
    waiting = await wf.list_runs(resource_id="caller-42", status="suspended")
    assert [r.run_id for r in waiting] == ["run-restart-1"]

    second = run_child(store_kind, location, "resume", "run-restart-1", json.dumps("ask-day"),
                       json.dumps({"day": "Tuesday"}))
    assert second["pid"] != first["pid"]
    assert second["result"]["status"] == "suspended"
    assert second["result"]["suspended"] == [["time-flow", "ask-time"]]  # now inside the nested workflow

    third = run_child(store_kind, location, "resume", "run-restart-1", json.dumps(["time-flow", "ask-time"]),
                      json.dumps({"time": "10:30"}))
    result = third["result"]
    assert result["status"] == "success", result["error"]
    assert result["result"] == {"name": "Ann", "day": "Tuesday at 10:30 (booked)", "time": "10:30"}
    assert result["state"] == {"confirmed_by": third["pid"]}
    assert result["steps"]["ask-day"]["resume_payload"] == {"day": "Tuesday"}
    assert result["steps"]["ask-day"]["suspend_payload"]["pid"] == first["pid"]

    stored = await wf.get_run("run-restart-1")
    assert stored.status == "success" and stored.result == result["result"]


@pytest.mark.parametrize("store_kind", STORES)
async def test_bad_resume_in_another_process_leaves_the_run_suspended(tmp_path, store_kind):
    location = tmp_path / "runs"
    run_child(store_kind, location, "start", "run-restart-2")
    proc = subprocess.run([sys.executable, __file__, store_kind, str(location), "resume", "run-restart-2",
                           json.dumps("ask-day"), json.dumps({"weekday": "Mon"})],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0 and "SchemaValidationError" in proc.stderr and "day: Field required" in proc.stderr
    wf = build(open_store(store_kind, str(location)))
    assert (await wf.get_run("run-restart-2")).status == "suspended"


if __name__ == "__main__":
    asyncio.run(child_main(sys.argv[1:]))
