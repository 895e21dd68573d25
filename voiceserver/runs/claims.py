"""What continuing a suspended run needs, shared by agent runs (:mod:`voiceserver.agent.agent`) and network runs
(:mod:`voiceserver.network.api`): claiming the persisted run, marking it running, and keeping / restoring the options
that must survive the suspension (the context, the structured output schema, re-imported by its path).

Each caller passes its own error class (:class:`AgentError` or its subclass ``NetworkError``), so the codes stay
``run_not_found``, ``run_not_owned``, ``run_not_suspended`` and ``structured_output_unavailable`` for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import BaseModel

from .errors import AgentError
from .loading import load_object
from .store import RunRecord, RunStore

# One lock per (run kind, run store) serialises "load a suspended run, check it, mark it running", so two approvals
# of the same run in this process cannot both continue it (another process sees the "running" status once it is
# saved). Keyed weakly: the lock goes with the store. Each kind has its own locks because continuing a network run
# continues its sub-agent's run while it holds the network claim, usually on the same store.
_claim_locks: dict[str, weakref.WeakKeyDictionary[Any, asyncio.Lock]] = {}


class _RunState(Protocol):
    status: str

    def to_json(self) -> Any: ...


@contextlib.asynccontextmanager
async def claim_suspended_run(store: RunStore, kind: str, run_id: str, owner_id: str, *, error: type[AgentError],
                              label: str, fallback_lock: asyncio.Lock | None = None) -> AsyncIterator[RunRecord]:
    """Hold the claim on run ``run_id`` of ``kind`` and yield its record, if it is ``owner_id``'s and suspended.

    Raises ``error`` (code run_not_found, run_not_owned or run_not_suspended; ``label`` names the run in the message,
    e.g. "network run") otherwise. Inside the block the caller checks what it was asked to do, then calls
    :func:`save_as_running`; raising instead leaves the run suspended. ``fallback_lock`` is used for a store that
    cannot be weakly referenced (without one, such a store raises TypeError).
    """
    locks = _claim_locks.setdefault(kind, weakref.WeakKeyDictionary())
    try:
        lock = locks.setdefault(store, asyncio.Lock())
    except TypeError:
        if fallback_lock is None:
            raise
        lock = fallback_lock
    async with lock:
        record = await store.load_run(kind, run_id)
        if record is None:
            raise error("run_not_found", f"no {label} {run_id!r} in agent {owner_id!r}'s storage")
        if record.owner_id != owner_id:
            raise error("run_not_owned", f"{label} {run_id!r} belongs to agent {record.owner_id!r}")
        if record.status != "suspended":
            raise error("run_not_suspended", f"{label} {run_id!r} is {record.status}, not waiting")
        yield record


async def save_as_running(store: RunStore, record: RunRecord, state: _RunState) -> None:
    """Mark the claimed run running (its state too) and save it: a second approval now sees "running"."""
    state.status = "running"
    record.status, record.snapshot = "running", state.to_json()
    await store.save_run(record)


def persistable_context(context: dict[str, Any]) -> dict[str, Any]:
    """A JSON copy of a run's ``context`` option for its snapshot; {} when it is not JSON (a continued run then gets
    ``context=`` again from its caller)."""
    try:
        return json.loads(json.dumps(context))
    except (TypeError, ValueError):
        return {}


def restore_structured(saved: dict[str, Any], *, error: type[AgentError]) -> dict[str, Any]:
    """The ``structured_output`` option back from what :meth:`StructuredOutput.persistable` kept.

    The schema is re-imported by its path; when that fails, or the schema had no path (a class local to a function),
    ``error("structured_output_unavailable")`` asks the caller to pass ``structured_output=`` again.
    """
    schema = saved.get("schema")
    if schema is None and saved.get("schema_path"):
        try:
            schema = load_object(saved["schema_path"])
        except Exception as exc:  # noqa: BLE001 - any import failure means the same to the caller
            raise error("structured_output_unavailable",
                        f"cannot load the run's structured output schema ({exc}); pass structured_output=") from None
    if schema is None:
        raise error("structured_output_unavailable", "pass structured_output= to continue this run")
    out: dict[str, Any] = {"schema": schema, "error_strategy": saved.get("error_strategy", "strict")}
    if out["error_strategy"] == "fallback":
        fallback = saved.get("fallback_value")
        if isinstance(schema, type) and issubclass(schema, BaseModel) and isinstance(fallback, dict):
            fallback = schema.model_validate(fallback)
        out["fallback_value"] = fallback
    return out
