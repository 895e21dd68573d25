"""The executor: runs a workflow's entries against a plain JSON state, step by step.

The state (one dict, the snapshot) says everything about a run::

    {"status", "input", "state", "pos": index of the current entry, "prev": input of the current entry,
     "progress": what the current entry has done (units done / suspended, chosen branch, loop iteration),
     "steps": {step_id: {"status", "payload", "output" | "error" | "suspend_payload", ...}},
     "suspended": [{"path": [ids], "indices": [foreach index or None per level], "payload"}],
     "result", "error"}

A "unit" is one execution of a step at one place (a parallel branch, a foreach item, a loop iteration); its
progress is ``{"status": "success" | "suspended", "output" | "suspensions", "child": nested workflow state}``.
On resume the executor re-enters the current entry: units already done are skipped, the targeted suspended unit
runs again with the resume data, other suspended units stay suspended.

The executor awaits step functions and the hooks (events, persistence) it is given; it opens no sockets.

Step records are mutated only while their status is "running"; a finished record is never changed in place
(a re-run makes a new dict). The snapshot encoder relies on this to reuse the JSON of finished records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from voiceserver.logs import get_logger
from voiceserver.workflows.graph import (
    MAX_SLEEP_MS,
    BranchEntry,
    Entry,
    ForeachEntry,
    LoopEntry,
    MapEntry,
    ParallelEntry,
    SleepEntry,
    StepEntry,
    output_schema_of,
)
from voiceserver.workflows.schema import SchemaValidationError, dump, validate
from voiceserver.workflows.step import AbortSignal, BailSignal, StepContext, SuspendSignal, call_maybe_async

log = get_logger("WORKFLOW")

SUCCESS = "success"
SUSPENDED = "suspended"


class Hooks(Protocol):
    """What the executor needs from the run that owns it."""

    listening: bool

    async def emit(self, event_type: str, payload: dict[str, Any]) -> None: ...

    async def persist(self) -> None: ...


class StepFailed(Exception):
    """A step failed for good (after its retries). ``error`` is the JSON error recorded in the result."""

    def __init__(self, error: dict[str, Any]):
        super().__init__(error["message"])
        self.error = error


@dataclass(slots=True)
class Resume:
    """Which suspended unit to run again (path of step ids, foreach index per level) and with what."""

    path: list[str]
    indices: list[int | None]
    data: Any

    def child(self) -> Resume:
        return Resume(self.path[1:], self.indices[1:], self.data)


def now_ms() -> int:
    """Wall-clock time in integer milliseconds (step records use it: ints encode to JSON much faster than floats)."""
    return time.time_ns() // 1_000_000


def new_state(input_json: Any, state_json: dict[str, Any]) -> dict[str, Any]:
    """A fresh executor state for a run (or a nested workflow) with this input."""
    return {"status": "pending", "input": input_json, "state": state_json, "pos": 0, "prev": input_json,
            "progress": {}, "steps": {}, "suspended": [], "result": None, "error": None}


def error_of(step_id: str | None, path: tuple[str, ...], exc: BaseException) -> dict[str, Any]:
    """The JSON error recorded for a failure of ``step_id`` (which step failed, and why)."""
    if isinstance(exc, SchemaValidationError):
        return {"step_id": step_id, "path": list(path), "code": exc.code, "type": "SchemaValidationError",
                "message": str(exc), "fields": exc.fields}
    if isinstance(exc, StepFailed):
        return exc.error
    where = f"step {step_id!r}" if step_id else "workflow"
    return {"step_id": step_id, "path": list(path), "code": "step_failed", "type": type(exc).__name__,
            "message": f"{where} failed: {type(exc).__name__}: {exc}"}


def mark_interrupted(state: dict[str, Any]) -> None:
    """After a failure or cancellation, steps still marked running (in nested workflows too) become canceled."""
    for record in state["steps"].values():
        if record.get("status") == "running":
            record["status"] = "canceled"
            record["ended_at"] = now_ms()
    _walk_children(state["progress"])


def _walk_children(progress: Any) -> None:
    if isinstance(progress, dict):
        for key, value in progress.items():
            if key == "child" and isinstance(value, dict) and "steps" in value:
                mark_interrupted(value)
            else:
                _walk_children(value)
    elif isinstance(progress, list):
        for value in progress:
            _walk_children(value)


async def run_all(coros: list[Any]) -> list[Any]:
    """Run coroutines concurrently; on the first exception cancel the rest and raise it (signals included)."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if pending:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:  # in order, so the first failing branch in graph order is the one reported
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


class Executor:
    """Runs one workflow (root or nested) over its state dict."""

    def __init__(self, workflow: Any, state: dict[str, Any], run_id: str, hooks: Hooks,
                 prefix: tuple[str, ...] = ()):
        self.workflow = workflow
        self.state = state
        self.run_id = run_id
        self.hooks = hooks
        self.prefix = prefix

    # --- the run -----------------------------------------------------------------------------------------------

    async def run(self, resume: Resume | None = None) -> None:
        """Run from the current entry until the end, a suspension, a failure or an abort; the result is in state."""
        st = self.state
        st["status"] = "running"
        st["suspended"] = []
        st["error"] = None
        entries: list[Entry] = self.workflow.entries
        wf_id = self.workflow.id
        try:
            while st["pos"] < len(entries):
                status, value = await self._run_entry(entries[st["pos"]], st["progress"], resume)
                resume = None
                if status == SUSPENDED:
                    st["status"] = "suspended"
                    st["suspended"] = value
                    return
                st["prev"] = value
                st["pos"] += 1
                st["progress"] = {}
            st["result"] = dump(self.workflow.output_schema, st["prev"], f"output of workflow {wf_id!r}")
            st["status"] = "success"
        except BailSignal as bail:
            try:
                st["result"] = dump(self.workflow.output_schema, bail.result, f"bail result of workflow {wf_id!r}")
                st["status"] = "success"
            except SchemaValidationError as e:
                st["status"], st["error"] = "failed", error_of(None, self.prefix, e)
        except (StepFailed, SchemaValidationError) as e:
            st["status"], st["error"] = "failed", error_of(None, self.prefix, e)
        except AbortSignal:
            st["status"] = "canceled"
        except SuspendSignal:  # from a branch or loop condition: only a step's execute may suspend
            st["status"], st["error"] = "failed", {
                "step_id": None, "path": list(self.prefix), "code": "step_failed", "type": "SuspendNotAllowed",
                "message": "ctx.suspend() may only be called in a step's execute, not in a condition"}
        mark_interrupted(st)  # after a failure, abort or bail, parallel siblings that were cut short

    async def _run_entry(self, entry: Entry, progress: dict[str, Any], resume: Resume | None) -> tuple[str, Any]:
        if isinstance(entry, StepEntry):
            return await self._unit(entry.step, self.state["prev"], progress, resume)
        if isinstance(entry, ParallelEntry):
            return await self._parallel(entry, progress, resume)
        if isinstance(entry, BranchEntry):
            return await self._branch(entry, progress, resume)
        if isinstance(entry, LoopEntry):
            return await self._loop(entry, progress, resume)
        if isinstance(entry, ForeachEntry):
            return await self._foreach(entry, progress, resume)
        if isinstance(entry, MapEntry):
            return SUCCESS, await self._simple(entry.id, self._map, entry)
        if isinstance(entry, SleepEntry):
            return SUCCESS, await self._simple(entry.id, self._sleep, entry)
        raise TypeError(f"unknown workflow entry {entry!r}")

    # --- one execution of a step ------------------------------------------------------------------------------

    async def _unit(self, step: Any, raw_input: Any, unit: dict[str, Any], resume: Resume | None,
                    index: int | None = None, iteration: int = 0, record: bool = True) -> tuple[str, Any]:
        status = unit.get("status")
        if status == SUCCESS:
            return SUCCESS, unit["output"]
        resuming = False
        if status == SUSPENDED:
            if resume is None or resume.path[0] != step.id or resume.indices[0] != index:
                return SUSPENDED, unit["suspensions"]
            resuming = True
        path = (*self.prefix, step.id)
        rec: dict[str, Any] = {"status": "running", "payload": raw_input, "started_at": now_ms()}
        if resuming:
            earlier = self.state["steps"].get(step.id) if record else None
            if earlier is not None and "suspend_payload" in earlier:
                rec["suspend_payload"] = earlier["suspend_payload"]
            if len(resume.path) == 1:  # type: ignore[union-attr]
                rec["resume_payload"] = resume.data  # type: ignore[union-attr]
        if iteration:
            rec["iteration"] = iteration
        if record:
            self.state["steps"][step.id] = rec
        listening = self.hooks.listening
        if listening:
            await self.hooks.emit("workflow-step-start", _ids(step.id, path, index, {"payload": raw_input}))
        try:
            if getattr(step, "is_workflow", False):
                status, value = await self._run_child(step, raw_input, unit, resume.child() if resuming else None,
                                                      path)
                if status == SUSPENDED:
                    value = [{"path": [step.id, *s["path"]], "indices": [index, *s["indices"]],
                              "payload": s["payload"]} for s in value]
            else:
                value = await self._invoke(step, raw_input, resume.data if resuming else None, resuming,  # type: ignore[union-attr]
                                           path, index, iteration)
                status = SUCCESS
        except SuspendSignal as signal:
            status, value = SUSPENDED, [{"path": [step.id], "indices": [index], "payload": signal.payload}]
        except BailSignal as bail:
            rec.update(status="success", output=dump(None, bail.result, "bail result"), ended_at=now_ms())
            await self._finish_events(step.id, path, index, rec)
            raise
        except AbortSignal:
            rec.update(status="canceled", ended_at=now_ms())
            await self._finish_events(step.id, path, index, rec)
            raise
        except StepFailed as failed:
            rec.update(status="failed", error=failed.error, ended_at=now_ms())
            await self._finish_events(step.id, path, index, rec)
            await self.hooks.persist()
            raise
        rec["ended_at"] = now_ms()
        if status == SUSPENDED:
            unit["status"], unit["suspensions"] = SUSPENDED, value
            rec["status"], rec["suspend_payload"] = "suspended", value[0]["payload"]
        else:
            unit["status"], unit["output"] = SUCCESS, value
            unit.pop("suspensions", None)
            rec["status"], rec["output"] = "success", value
        if listening:
            await self._finish_events(step.id, path, index, rec)
        if record or status == SUSPENDED:  # foreach items are saved when they suspend and with their foreach
            await self.hooks.persist()
        return status, value

    async def _invoke(self, step: Any, raw_input: Any, resume_data: Any, resuming: bool, path: tuple[str, ...],
                      index: int | None, iteration: int) -> Any:
        """Validate the input, run execute with retries, validate and dump the output."""
        try:
            value = validate(step.input_schema, raw_input, f"input of step {step.id!r}")
            resume_value = (validate(step.resume_schema, resume_data, f"resume data of step {step.id!r}")
                            if resuming else None)
        except SchemaValidationError as e:
            raise StepFailed(error_of(step.id, path, e)) from None
        attempts = step.retries + 1
        for attempt in range(attempts):
            ctx = StepContext(self, step, step.id, path, value, resume_value, iteration, attempt)
            try:
                out = await call_maybe_async(step.execute, ctx)
                return dump(step.output_schema, out, f"output of step {step.id!r}")
            except Exception as e:
                if attempt + 1 < attempts:
                    log.info("step failed, retrying", fields={"step_id": step.id, "attempt": attempt + 1,
                                                              "error": f"{type(e).__name__}: {e}"})
                    continue
                raise StepFailed(error_of(step.id, path, e)) from e
        raise AssertionError("unreachable")

    async def _run_child(self, workflow: Any, raw_input: Any, unit: dict[str, Any], resume: Resume | None,
                         path: tuple[str, ...]) -> tuple[str, Any]:
        """Run a nested workflow as a step; its state lives in the unit, so it persists with the parent."""
        if "child" not in unit:
            try:
                child_input = dump(workflow.input_schema, raw_input, f"input of workflow {workflow.id!r}",
                                   "invalid_input")
                unit["child"] = new_state(child_input, workflow.initial_state(None))
            except SchemaValidationError as e:
                raise StepFailed(error_of(workflow.id, path, e)) from None
        child_state = unit["child"]
        await Executor(workflow, child_state, self.run_id, self.hooks, path).run(resume)
        status = child_state["status"]
        if status == "success":
            return SUCCESS, child_state["result"]
        if status == "suspended":
            return SUSPENDED, child_state["suspended"]
        if status == "canceled":
            raise AbortSignal()
        inner = child_state["error"] or {}
        raise StepFailed({**inner, "step_id": workflow.id, "path": list(path), "cause": inner.get("step_id"),
                          "message": f"workflow {workflow.id!r} failed: {inner.get('message', 'unknown error')}"})

    async def _finish_events(self, step_id: str, path: tuple[str, ...], index: int | None,
                             rec: dict[str, Any]) -> None:
        if not self.hooks.listening:
            return
        status = rec["status"]
        if status == "suspended":
            await self.hooks.emit("workflow-step-suspended",
                                  _ids(step_id, path, index, {"suspend_payload": rec.get("suspend_payload")}))
        else:
            body: dict[str, Any] = {"status": status}
            if status == "success":
                body["output"] = rec.get("output")
            elif status == "failed":
                body["error"] = rec.get("error")
            await self.hooks.emit("workflow-step-result", _ids(step_id, path, index, body))
        await self.hooks.emit("workflow-step-finish", _ids(step_id, path, index, {"status": status}))

    # --- composite entries -------------------------------------------------------------------------------------

    async def _parallel(self, entry: ParallelEntry, progress: dict[str, Any],
                        resume: Resume | None) -> tuple[str, Any]:
        units: dict[str, Any] = progress.setdefault("units", {})
        prev = self.state["prev"]
        outcomes = await run_all([self._unit(s, prev, units.setdefault(s.id, {}), resume) for s in entry.steps])
        suspensions = [s for status, value in outcomes if status == SUSPENDED for s in value]
        if suspensions:
            return SUSPENDED, suspensions
        return SUCCESS, {s.id: value for s, (_, value) in zip(entry.steps, outcomes, strict=True)}

    async def _branch(self, entry: BranchEntry, progress: dict[str, Any], resume: Resume | None) -> tuple[str, Any]:
        if "chosen" not in progress:
            chosen = -1
            ctx = self._context(f"branch@{self.state['pos']}", self._prev_view())
            for i, (condition, step) in enumerate(entry.branches):
                try:
                    matched = await call_maybe_async(condition, ctx)
                except Exception as e:
                    raise StepFailed(error_of(step.id, (*self.prefix, step.id), e) | {
                        "code": "condition_failed",
                        "message": f"branch condition for step {step.id!r} failed: {type(e).__name__}: {e}"}) from e
                if matched:
                    chosen = i
                    break
            progress["chosen"] = chosen
        if progress["chosen"] < 0:
            return SUCCESS, {}
        step = entry.branches[progress["chosen"]][1]
        status, value = await self._unit(step, self.state["prev"], progress.setdefault("unit", {}), resume)
        return (status, value) if status == SUSPENDED else (SUCCESS, {step.id: value})

    async def _loop(self, entry: LoopEntry, progress: dict[str, Any], resume: Resume | None) -> tuple[str, Any]:
        step = entry.step
        while True:
            iteration = progress.setdefault("iteration", 0)
            value_in = progress.get("input", self.state["prev"])
            status, out = await self._unit(step, value_in, progress.setdefault("unit", {}), resume,
                                           iteration=iteration + 1)
            resume = None
            if status == SUSPENDED:
                return status, out
            iteration += 1
            progress["iteration"] = iteration
            ctx = self._context(step.id, validate(step.output_schema, out, f"output of step {step.id!r}"),
                                iteration)
            try:
                matched = bool(await call_maybe_async(entry.condition, ctx))
            except Exception as e:
                raise StepFailed(error_of(step.id, (*self.prefix, step.id), e) | {
                    "code": "condition_failed",
                    "message": f"loop condition of step {step.id!r} failed: {type(e).__name__}: {e}"}) from e
            if matched == entry.until:
                return SUCCESS, out
            if iteration >= entry.max_iterations:
                raise StepFailed({"step_id": step.id, "path": [*self.prefix, step.id], "code": "loop_limit",
                                  "type": "LoopLimit",
                                  "message": f"loop of step {step.id!r} reached max_iterations={entry.max_iterations}"})
            progress["input"] = out
            progress["unit"] = {}

    async def _foreach(self, entry: ForeachEntry, progress: dict[str, Any], resume: Resume | None) -> tuple[str, Any]:
        step = entry.step
        path = (*self.prefix, step.id)
        items = self.state["prev"]
        if not isinstance(items, list):
            raise StepFailed({"step_id": step.id, "path": list(path), "code": "invalid_input", "type": "TypeError",
                              "message": f"foreach step {step.id!r} expects a list, got {type(items).__name__}",
                              "fields": [{"field": "", "message": "expected a list", "type": "list_type"}]})
        rec = self.state["steps"].get(step.id)
        if "units" not in progress or rec is None:
            progress["units"] = [{} for _ in items]
            rec = {"status": "running", "payload": items, "started_at": now_ms()}
            self.state["steps"][step.id] = rec
        else:  # resuming: keep the outputs of the items already done (a new dict: see the note on records)
            rec = {**rec, "status": "running"}
            self.state["steps"][step.id] = rec
        units: list[dict[str, Any]] = progress["units"]
        todo = iter(range(len(items)))

        async def worker() -> None:
            for i in todo:  # the shared iterator hands each index to exactly one worker
                await self._unit(step, items[i], units[i], resume, index=i, record=False)

        try:
            await run_all([worker() for _ in range(max(1, min(entry.concurrency, len(items))))])
        except StepFailed as failed:
            rec.update(status="failed", error=failed.error, ended_at=now_ms())
            raise
        rec["ended_at"] = now_ms()
        suspensions = [s for u in units if u.get("status") == SUSPENDED for s in u["suspensions"]]
        if suspensions:
            rec.update(status="suspended", suspend_payload=suspensions[0]["payload"])
            return SUSPENDED, suspensions
        outputs = [u["output"] for u in units]
        rec.update(status="success", output=outputs)
        rec.pop("suspend_payload", None)
        await self.hooks.persist()
        return SUCCESS, outputs

    async def _simple(self, entry_id: str, body: Any, entry: Entry) -> Any:
        """A map or sleep: recorded and reported like a step, no retries, no suspension."""
        path = (*self.prefix, entry_id)
        prev = self.state["prev"]
        rec: dict[str, Any] = {"status": "running", "payload": prev, "started_at": now_ms()}
        self.state["steps"][entry_id] = rec
        if self.hooks.listening:
            await self.hooks.emit("workflow-step-start", _ids(entry_id, path, None, {"payload": prev}))
        try:
            try:
                output = await body(entry, self._context(entry_id, self._prev_view()))
            except SuspendSignal:
                raise RuntimeError(f"{entry_id!r} is a map or sleep and cannot suspend") from None
        except BailSignal as bail:
            rec.update(status="success", output=dump(None, bail.result, "bail result"), ended_at=now_ms())
            await self._finish_events(entry_id, path, None, rec)
            raise
        except AbortSignal:
            rec.update(status="canceled", ended_at=now_ms())
            await self._finish_events(entry_id, path, None, rec)
            raise
        except Exception as e:
            rec.update(status="failed", error=error_of(entry_id, path, e), ended_at=now_ms())
            await self._finish_events(entry_id, path, None, rec)
            await self.hooks.persist()
            raise StepFailed(rec["error"]) from e
        rec.update(status="success", output=output, ended_at=now_ms())
        await self._finish_events(entry_id, path, None, rec)
        await self.hooks.persist()
        return output

    async def _map(self, entry: MapEntry, ctx: StepContext) -> Any:
        return dump(None, await call_maybe_async(entry.fn, ctx), f"output of map {entry.id!r}")

    async def _sleep(self, entry: SleepEntry, ctx: StepContext) -> Any:
        if entry.until is not None:
            when = await call_maybe_async(entry.until, ctx) if callable(entry.until) else entry.until
            if not isinstance(when, dt.datetime):
                raise TypeError(f"sleep_until needs a datetime, got {type(when).__name__}")
            delay_ms = (when.timestamp() - time.time()) * 1000
        else:
            delay_ms = await call_maybe_async(entry.ms, ctx) if callable(entry.ms) else entry.ms
            if isinstance(delay_ms, bool) or not isinstance(delay_ms, int | float) or not math.isfinite(delay_ms):
                raise TypeError(f"sleep needs a number of milliseconds, got {delay_ms!r}")
        if delay_ms > MAX_SLEEP_MS:
            raise ValueError(f"sleep of {delay_ms:.0f} ms exceeds the limit of {MAX_SLEEP_MS} ms; suspend instead")
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        return self.state["prev"]

    # --- helpers ----------------------------------------------------------------------------------------------

    def _context(self, step_id: str, input_data: Any, iteration: int = 0) -> StepContext:
        return StepContext(self, None, step_id, (*self.prefix, step_id), input_data, None, iteration)

    def _prev_view(self) -> Any:
        """The previous output as a condition or map sees it: validated with its step's schema when known."""
        pos = self.state["pos"]
        schema = self.workflow.input_schema if pos == 0 else output_schema_of(self.workflow.entries[pos - 1])
        try:
            return validate(schema, self.state["prev"], "previous output")
        except SchemaValidationError:
            return self.state["prev"]

    async def emit_custom(self, event_type: str, step_id: str, path: tuple[str, ...], data: Any) -> None:
        """A step's ``ctx.writer.write``: forwarded to streams and watchers."""
        if self.hooks.listening:
            await self.hooks.emit(event_type, {"id": step_id, "path": list(path), "data": data})


def _ids(step_id: str, path: tuple[str, ...], index: int | None, body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": step_id, "path": list(path)}
    if index is not None:
        payload["index"] = index
    payload.update(body)
    return payload
