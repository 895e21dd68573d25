"""A run of a workflow: start, stream, resume, watch, cancel; results; snapshots to the RunStore.

A run executes in its own asyncio task. ``start`` / ``resume`` wait for it (cancelling the caller cancels the
run); a ``stream`` consumer that stops reading leaves the run going (its state stays readable with
``wf.get_run``). Snapshots are saved when the run starts, at every step end (success, failure, suspension) and
when it stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voiceserver.logs import get_logger, log_context
from voiceserver.runs.store import ClaimingRunStore, RunRecord
from voiceserver.workflows.executor import Executor, Resume, mark_interrupted, new_state
from voiceserver.workflows.schema import WorkflowError, dump, validate

if TYPE_CHECKING:
    from voiceserver.workflows.workflow import Workflow

log = get_logger("WORKFLOW")

SNAPSHOT_VERSION = 1
STREAM_QUEUE_SIZE = 256
RUN_STATUSES = ("pending", "running", "success", "failed", "suspended", "canceled")
_END = object()


class RunStateError(WorkflowError):
    """The run is not in a state that allows this (start twice, resume a run that is not suspended, ...)."""

    code = "invalid_run_state"


class UnknownStepError(WorkflowError, ValueError):
    """``resume(step=...)`` names no suspended step, or several when it must name one."""

    code = "unknown_step"


@dataclass(slots=True)
class StepResult:
    """One step's record in a result: status, input (payload), output or error, suspension data, times."""

    status: str
    payload: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    suspend_payload: Any = None
    resume_payload: Any = None
    started_at: int | None = None  # epoch milliseconds
    ended_at: int | None = None

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> StepResult:
        return cls(status=rec["status"], payload=rec.get("payload"), output=rec.get("output"), error=rec.get("error"),
                   suspend_payload=rec.get("suspend_payload"), resume_payload=rec.get("resume_payload"),
                   started_at=rec.get("started_at"), ended_at=rec.get("ended_at"))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}  # type: ignore[attr-defined]


@dataclass(slots=True)
class WorkflowResult:
    """A run's status and result. ``error`` (failed runs) names the step that failed and why; ``suspended``
    lists the paths of suspended steps and ``suspensions`` their payloads."""

    run_id: str
    workflow_id: str
    status: str
    result: Any = None
    error: dict[str, Any] | None = None
    steps: dict[str, StepResult] = field(default_factory=dict)
    suspensions: list[dict[str, Any]] = field(default_factory=list)
    resource_id: str | None = None
    input: Any = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def suspended(self) -> list[list[str]]:
        """Paths (step ids, outermost first) of the suspended steps."""
        return [list(s["path"]) for s in self.suspensions]

    @property
    def suspend_payload(self) -> Any:
        """The payload of the first suspended step, or None."""
        return self.suspensions[0]["payload"] if self.suspensions else None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "workflow_id": self.workflow_id, "status": self.status, "result": self.result,
                "error": self.error, "steps": {k: v.to_dict() for k, v in self.steps.items()},
                "suspended": self.suspended, "suspensions": self.suspensions, "resource_id": self.resource_id,
                "input": self.input, "state": self.state}


def _result_of(run_id: str, workflow_id: str, resource_id: str | None, st: dict[str, Any] | None) -> WorkflowResult:
    if st is None:
        return WorkflowResult(run_id=run_id, workflow_id=workflow_id, status="pending", resource_id=resource_id)
    return WorkflowResult(
        run_id=run_id, workflow_id=workflow_id, status=st["status"], result=st["result"], error=st["error"],
        steps={k: StepResult.from_record(v) for k, v in st["steps"].items()},
        suspensions=[dict(s) for s in st["suspended"]], resource_id=resource_id, input=st["input"],
        state=dict(st["state"]))


def exec_state_of(record: RunRecord) -> dict[str, Any]:
    """The executor state inside a stored record (see Run.snapshot)."""
    snap = record.snapshot
    if not isinstance(snap, dict) or snap.get("version") != SNAPSHOT_VERSION or "exec_json" not in snap:
        raise WorkflowError(f"run {record.run_id!r} has a snapshot this version cannot read")
    state = json.loads(snap["exec_json"])
    if not isinstance(state, dict):
        raise WorkflowError(f"run {record.run_id!r} has a malformed snapshot")
    return state


def result_from_record(record: RunRecord) -> WorkflowResult:
    """A result from a stored run record."""
    return _result_of(record.run_id, record.owner_id, record.resource_id, exec_state_of(record))


class SnapshotEncoder:
    """Encodes an executor state to JSON, reusing the encoding of finished step records.

    Without this a snapshot at every step end costs O(steps so far) to encode, O(n^2) per run. Finished records
    are never mutated in place (executor.py), so a record object seen before with the same identity has the same
    JSON; running records are always encoded afresh.
    """

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, tuple[dict[str, Any], str]] = {}

    def encode(self, state: dict[str, Any]) -> str:
        parts = []
        cache = self._cache
        for step_id, rec in state["steps"].items():
            hit = cache.get(step_id)
            if hit is not None and hit[0] is rec:
                parts.append(hit[1])
                continue
            fragment = f"{json.dumps(step_id)}:{json.dumps(rec, separators=(',', ':'))}"
            if rec.get("status") != "running":
                cache[step_id] = (rec, fragment)
            parts.append(fragment)
        rest = json.dumps({k: v for k, v in state.items() if k != "steps"}, separators=(",", ":"))
        return f'{rest[:-1]},"steps":{{{",".join(parts)}}}}}'


class WorkflowStream:
    """``run.stream(...)``: iterate the run's events (dicts); ``await stream.result()`` afterwards.

    The run starts when iteration begins. Events are queued (bounded: a slow reader slows the run down).
    """

    def __init__(self, run: Run, begin: Callable[[], Awaitable[None]]):
        self.run = run
        self._begin = begin
        self._started = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        if self._started:
            raise RunStateError("a workflow stream can be iterated once")
        self._started = True
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=STREAM_QUEUE_SIZE)
        self.run._queues.append(queue)
        try:
            await self._begin()
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            if queue in self.run._queues:
                self.run._queues.remove(queue)

    async def result(self) -> WorkflowResult:
        return await self.run.result()


class Run:
    """One run of a workflow. Create with ``await workflow.create_run()``."""

    def __init__(self, workflow: Workflow, run_id: str, resource_id: str | None = None,
                 state: dict[str, Any] | None = None, created_at: float | None = None):
        self.workflow = workflow
        self.run_id = run_id
        self.resource_id = resource_id
        self._state = state
        self._created_at = created_at or time.time()
        self._task: asyncio.Task[WorkflowResult] | None = None
        self._watchers: list[Callable[[dict[str, Any]], Any]] = []
        self._queues: list[asyncio.Queue[Any]] = []
        self._persist_lock = asyncio.Lock()
        self._encoder = SnapshotEncoder()
        self._loaded: tuple[str, float] | None = None  # (status, updated_at) of the record last read from storage

    @classmethod
    def from_record(cls, workflow: Workflow, record: RunRecord) -> Run:
        return cls(workflow, record.run_id, record.resource_id, exec_state_of(record), record.created_at)

    # --- state ------------------------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """pending (not started), running, success, failed, suspended or canceled."""
        return "pending" if self._state is None else self._state["status"]

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def current_result(self) -> WorkflowResult:
        """The run's status and result as of now (while running too)."""
        return _result_of(self.run_id, self.workflow.id, self.resource_id, self._state)

    @property
    def snapshot(self) -> dict[str, Any]:
        """The JSON snapshot that is persisted.

        The executor state travels as one JSON string: encoding it is a single C call, a store that copies or
        serialises the record (InMemoryRunStore deep-copies; others may serialise in a thread while the run goes
        on) then handles one immutable string instead of a large tree of dicts that is still being mutated.
        """
        return {"version": SNAPSHOT_VERSION, "workflow_id": self.workflow.id, "run_id": self.run_id,
                "resource_id": self.resource_id, "exec_json": self._encoder.encode(self._state)}  # type: ignore[arg-type]

    # --- events -----------------------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return bool(self._watchers or self._queues)

    def watch(self, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` (sync or async) for every event of this run; returns a function to stop."""
        self._watchers.append(callback)

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unwatch

    async def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        event = {"type": event_type, "run_id": self.run_id, "workflow_id": self.workflow.id, "payload": payload}
        for queue in list(self._queues):
            await queue.put(event)
        for callback in list(self._watchers):
            try:
                outcome = callback(event)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception:
                log.exception("workflow watcher failed", fields={"workflow_id": self.workflow.id})

    async def persist(self) -> None:
        """Save the snapshot (in order: the lock keeps a later snapshot from being overwritten by an earlier one)."""
        async with self._persist_lock:
            st = self._state
            assert st is not None
            snapshot = self.snapshot
            await self.workflow.storage.save_run(RunRecord(
                kind="workflow", run_id=self.run_id, owner_id=self.workflow.id, status=st["status"],
                snapshot=snapshot, resource_id=self.resource_id, created_at=self._created_at))

    # --- driving ----------------------------------------------------------------------------------------------

    def _prepare(self, input_data: Any, initial_state: Any) -> dict[str, Any]:
        if self.running or self._state is not None:
            raise RunStateError(f"run {self.run_id!r} has already started (status {self.status})")
        wf = self.workflow
        input_json = dump(wf.input_schema, input_data, f"input of workflow {wf.id!r}", "invalid_input")
        return new_state(input_json, wf.initial_state(initial_state))

    async def _refresh(self) -> None:
        """Re-read the run from storage unless it runs here, so a stale Run object (another request's, another
        process's) never executes a step a second time. The caller then checks and begins with no await between."""
        if self.running:
            return
        other = self.workflow._active.get(self.run_id)
        if other is not None and other is not self:
            raise RunStateError(f"run {self.run_id!r} is already running")
        record = await self.workflow.storage.load_run("workflow", self.run_id)
        if record is not None:
            if record.owner_id != self.workflow.id:
                raise WorkflowError(f"run {self.run_id!r} belongs to workflow {record.owner_id!r}")
            self._state = exec_state_of(record)
            self._loaded = (record.status, record.updated_at)

    async def _claim(self) -> None:
        """Mark the suspended run running in storage with the store's compare-and-swap (a ClaimingRunStore), so of two
        servers resuming it at once exactly one goes on; the other gets RunStateError."""
        store, token = self.workflow.storage, self._loaded
        if token is None or not isinstance(store, ClaimingRunStore) or self._state is None:
            return
        previous, self._state["status"] = self._state["status"], "running"
        try:
            record = RunRecord(kind="workflow", run_id=self.run_id, owner_id=self.workflow.id, status="running",
                               snapshot=self.snapshot, resource_id=self.resource_id, created_at=self._created_at)
            won = await store.claim_run(record, expect_status=token[0], expect_updated_at=token[1])
        finally:
            self._state["status"] = previous
        self._loaded = None
        if not won:
            raise RunStateError(f"run {self.run_id!r} was just resumed elsewhere")

    def _begin(self, state: dict[str, Any], resume: Resume | None) -> None:
        other = self.workflow._active.get(self.run_id)
        if self.running or (other is not None and other is not self):
            raise RunStateError(f"run {self.run_id!r} is already running")
        self._state = state
        state["status"] = "running"
        self.workflow._active[self.run_id] = self
        self._task = asyncio.create_task(self._execute(resume), name=f"workflow-run-{self.run_id}")
        self._task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        if self.workflow._active.get(self.run_id) is self:
            del self.workflow._active[self.run_id]

    async def _wait(self) -> WorkflowResult:
        task = self._task
        assert task is not None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()  # the caller gave up: the run stops too (and records itself as canceled)
            raise

    async def start(self, input_data: Any = None, *, initial_state: Any = None) -> WorkflowResult:
        """Run the workflow on ``input_data`` until it ends or suspends. Bad input raises SchemaValidationError."""
        self._prepare(input_data, initial_state)  # bad input fails before any storage access
        await self._refresh()
        self._begin(self._prepare(input_data, initial_state), None)
        return await self._wait()

    def stream(self, input_data: Any = None, *, initial_state: Any = None) -> WorkflowStream:
        """Like start, but iterate the events; the input is checked now, the run starts on iteration."""
        state = self._prepare(input_data, initial_state)

        async def begin() -> None:
            await self._refresh()
            if self._state is not None:
                raise RunStateError(f"run {self.run_id!r} has already started (status {self.status})")
            self._begin(state, None)

        return WorkflowStream(self, begin)

    async def resume(self, step: Any = None, resume_data: Any = None) -> WorkflowResult:
        """Run a suspended step again with ``resume_data`` and continue the run.

        ``step``: a step, a step id, a dotted or list path into nested workflows; may be omitted when one step
        is suspended. Resume data that does not fit the step's resume_schema raises SchemaValidationError and
        leaves the run suspended.
        """
        await self._refresh()
        target = self._resume_target(step, resume_data)
        await self._claim()
        self._begin(self._state, target)  # type: ignore[arg-type]
        return await self._wait()

    def resume_stream(self, step: Any = None, resume_data: Any = None) -> WorkflowStream:
        """Like resume, but iterate the events."""
        self._resume_target(step, resume_data)  # bad resume data fails now, before any event

        async def begin() -> None:
            await self._refresh()
            target = self._resume_target(step, resume_data)
            await self._claim()
            self._begin(self._state, target)  # type: ignore[arg-type]

        return WorkflowStream(self, begin)

    async def result(self) -> WorkflowResult:
        """Wait for the current execution to end (or suspend) and return the result."""
        if self._task is not None:
            return await asyncio.shield(self._task)
        if self._state is None:
            raise RunStateError(f"run {self.run_id!r} has not started")
        return self.current_result()

    async def cancel(self) -> WorkflowResult:
        """Stop the run: running steps are cancelled, the status becomes canceled and the snapshot is saved.

        A suspended run (or one left running by a process that died) is marked canceled in storage.
        """
        if self.running:
            assert self._task is not None
            self._task.cancel()
            await asyncio.wait([self._task])
            return self.current_result()
        other = self.workflow._active.get(self.run_id)
        if other is not None and other is not self:
            return await other.cancel()
        await self._refresh()
        st = self._state
        if st is None:
            raise RunStateError(f"run {self.run_id!r} has not started")
        if st["status"] in ("suspended", "running"):
            st["status"] = "canceled"
            mark_interrupted(st)
            await self.persist()
            if self.listening:
                await self.emit("workflow-finish", {"status": "canceled"})
        return self.current_result()

    async def _execute(self, resume: Resume | None) -> WorkflowResult:
        st = self._state
        assert st is not None
        with log_context(run_id=self.run_id):
            try:
                try:
                    if self.listening:
                        start: dict[str, Any] = {"input": st["input"]}
                        if resume is not None:
                            start["resumed"] = {"path": resume.path, "resume_data": resume.data}
                        await self.emit("workflow-start", start)
                    await self.persist()
                    await Executor(self.workflow, st, self.run_id, self).run(resume)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()  # we own this task: record the cancellation and finish normally
                    st["status"] = "canceled"
                except Exception as e:
                    log.exception("workflow run failed", fields={"workflow_id": self.workflow.id})
                    st["status"] = "failed"
                    st["error"] = {"step_id": None, "path": [], "code": "internal_error", "type": type(e).__name__,
                                   "message": f"workflow engine error: {type(e).__name__}: {e}"}
                if st["status"] in ("failed", "canceled"):
                    mark_interrupted(st)
                try:
                    await self.persist()
                except Exception:
                    log.exception("saving the final workflow snapshot failed")
                if self.listening:
                    await self.emit("workflow-finish", _finish_payload(st))
            finally:  # whatever happened, stream readers are told the run stopped
                for queue in list(self._queues):
                    await queue.put(_END)
        return self.current_result()

    def _resume_target(self, step: Any, resume_data: Any) -> Resume:
        if self.running:
            raise RunStateError(f"run {self.run_id!r} is running")
        if self._state is None or self._state["status"] != "suspended":
            raise RunStateError(f"run {self.run_id!r} is {self.status}, not suspended")
        suspensions: list[dict[str, Any]] = self._state["suspended"]
        chosen = _match_suspension(suspensions, step)
        target = self.workflow.find_step(chosen["path"])
        if target is None:
            raise UnknownStepError(f"step {'.'.join(chosen['path'])!r} is not in workflow {self.workflow.id!r}")
        what = f"resume data of step {target.id!r}"
        validate(target.resume_schema, resume_data, what)
        data = dump(target.resume_schema, resume_data, what, "invalid_input")
        return Resume(list(chosen["path"]), list(chosen["indices"]), data)


def _finish_payload(st: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": st["status"]}
    if st["status"] == "success":
        payload["result"] = st["result"]
    elif st["status"] == "failed":
        payload["error"] = st["error"]
    elif st["status"] == "suspended":
        payload["suspended"] = [list(s["path"]) for s in st["suspended"]]
    return payload


def _step_path(step: Any) -> list[str] | str:
    if isinstance(step, str):
        return step
    if isinstance(step, Sequence):
        return [s if isinstance(s, str) else getattr(s, "id", str(s)) for s in step]
    return str(getattr(step, "id", step))


def _match_suspension(suspensions: list[dict[str, Any]], step: Any) -> dict[str, Any]:
    """The suspension ``step`` names (see Run.resume); the lowest foreach index when several items wait."""
    paths = [list(s["path"]) for s in suspensions]
    if step is None:
        candidates = suspensions
    else:
        wanted = _step_path(step)
        if isinstance(wanted, list):
            candidates = [s for s, p in zip(suspensions, paths, strict=True) if p == wanted]
        else:
            candidates = [s for s, p in zip(suspensions, paths, strict=True)
                          if wanted in (".".join(p), p[-1], p[0])]
    distinct = {tuple(s["path"]) for s in candidates}
    listing = ", ".join(repr(".".join(p)) for p in paths) or "none"
    if not candidates:
        raise UnknownStepError(f"no suspended step matches {_step_path(step)!r}; suspended: {listing}")
    if len(distinct) > 1:
        raise UnknownStepError(f"several steps are suspended ({listing}); say which one to resume")
    return candidates[0]
