"""What continuing a suspended run needs, shared by agent runs (:mod:`voiceserver.agent.agent`) and network runs
(:mod:`voiceserver.network.api`): claiming the persisted run, marking it running, and keeping / restoring the options
that must survive the suspension (the context, the structured output schema, re-imported by its path).

Each caller passes its own error class (:class:`AgentError` or its subclass ``NetworkError``), so the codes stay
``run_not_found``, ``run_not_owned``, ``run_not_suspended`` and ``structured_output_unavailable`` for both.

Claims and leases: continuing a run claims it (suspended -> running) with the store's compare-and-swap, so two
servers continuing one run at once run it exactly once. While it runs, the claim is renewed (its ``updated_at``
refreshed) every third of the store's ``claim_lease_s``; a run left "running" longer than the lease without renewal
belongs to a process that died, and is claimed again from its snapshot by the next approval or resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import BaseModel

from ..logs import get_logger
from .errors import AgentError
from .loading import load_object
from .store import ClaimingRunStore, RunRecord, RunStore

log = get_logger("AGENT")

# One lock per (run kind, run store) serialises "load a suspended run, check it, mark it running" in this process.
# Across processes, a store with claim_run (LanceDBStore) makes the last step a compare-and-swap, so of two servers
# continuing the same run at once exactly one wins. Keyed weakly: the lock goes with the store. Each kind has its own
# locks because continuing a network run continues its sub-agent's run while it holds the network claim, usually on
# the same store.
_claim_locks: dict[str, weakref.WeakKeyDictionary[Any, asyncio.Lock]] = {}
_open_claims: dict[int, tuple[type[AgentError], str]] = {}  # id(record) -> (error class, label) inside a claim
_keepers: weakref.WeakKeyDictionary[Any, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()

DEFAULT_LEASE_S = 60.0
MAX_HOLD_S = 6 * 3600.0  # a claim is renewed for at most this long (a run that never saves an end is let go)


class _RunState(Protocol):
    status: str

    def to_json(self) -> Any: ...


def lease_of(store: RunStore) -> float:
    """How long a claim lives without renewal in this store (``claim_lease_s``; 60 s by default)."""
    return float(getattr(store, "claim_lease_s", None) or DEFAULT_LEASE_S)


def claimable(record: RunRecord, lease_s: float, now: float | None = None) -> bool:
    """Suspended, or left "running" by a holder that stopped renewing its claim for longer than the lease (its
    process died): such a run is continued again from its snapshot."""
    if record.status == "suspended":
        return True
    return record.status == "running" and (now if now is not None else time.time()) - record.updated_at > lease_s


async def _load(store: RunStore, kind: str, run_id: str) -> RunRecord | None:
    if isinstance(store, ClaimingRunStore):
        return await store.load_run(kind, run_id, fresh=True)
    return await store.load_run(kind, run_id)


@contextlib.asynccontextmanager
async def claim_suspended_run(store: RunStore, kind: str, run_id: str, owner_id: str, *, error: type[AgentError],
                              label: str, fallback_lock: asyncio.Lock | None = None) -> AsyncIterator[RunRecord]:
    """Hold the claim on run ``run_id`` of ``kind`` and yield its record, if it is ``owner_id``'s and suspended (or
    abandoned: see :func:`claimable`).

    Raises ``error`` (code run_not_found, run_not_owned or run_not_suspended; ``label`` names the run in the message,
    e.g. "network run") otherwise. Inside the block the caller checks what it was asked to do, then calls
    :func:`save_as_running`, which raises ``run_not_suspended`` when another process continued the run first;
    raising instead leaves the run suspended. ``fallback_lock`` is used for a store that cannot be weakly
    referenced (without one, such a store raises TypeError).
    """
    locks = _claim_locks.setdefault(kind, weakref.WeakKeyDictionary())
    try:
        lock = locks.setdefault(store, asyncio.Lock())
    except TypeError:
        if fallback_lock is None:
            raise
        lock = fallback_lock
    async with lock:
        record = await _load(store, kind, run_id)
        if record is None:
            raise error("run_not_found", f"no {label} {run_id!r} in agent {owner_id!r}'s storage")
        if record.owner_id != owner_id:
            raise error("run_not_owned", f"{label} {run_id!r} belongs to agent {record.owner_id!r}")
        if not claimable(record, lease_of(store)):
            raise error("run_not_suspended", f"{label} {run_id!r} is {record.status}, not waiting")
        if record.status == "running":
            log.warning(f"{label} {run_id!r} was left running by a holder that stopped renewing its claim; "
                        f"continuing it", fields={"run_id": run_id, "idle_s": round(time.time() - record.updated_at)})
        _open_claims[id(record)] = (error, label)
        try:
            yield record
        finally:
            _open_claims.pop(id(record), None)


async def save_as_running(store: RunStore, record: RunRecord, state: _RunState) -> None:
    """Mark the claimed run running (its state too) and save it: a second approval now sees "running".

    On a store with ``claim_run`` this is the atomic step: it succeeds only if the run is still as it was loaded;
    otherwise another process continued it first and ``run_not_suspended`` is raised (the state is left as it was).
    The claim is then renewed in the background while the run stays running, so a live run is never taken over.
    """
    error, label = _open_claims.get(id(record), (AgentError, "run"))
    expect_status, expect_updated_at = record.status, record.updated_at
    previous = state.status
    state.status = "running"
    record.status, record.snapshot = "running", state.to_json()
    if not isinstance(store, ClaimingRunStore):
        await store.save_run(record)
        return
    if not await store.claim_run(record, expect_status=expect_status, expect_updated_at=expect_updated_at):
        state.status = previous
        raise error("run_not_suspended", f"{label} {record.run_id!r} was just continued elsewhere")
    if getattr(store, "claim_lease_s", None):  # a store shared by processes: keep the claim alive
        _start_keeper(store, record.kind, record.run_id, lease_of(store))


def _start_keeper(store: ClaimingRunStore, kind: str, run_id: str, lease_s: float) -> None:
    task = asyncio.get_running_loop().create_task(_keep_claim(store, kind, run_id, lease_s),
                                                  name=f"claim-{kind}-{run_id}")
    tasks = _keepers.setdefault(store, set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def stop_keepers(store: Any) -> None:
    """Stop renewing the claims held on ``store`` (it is closing; their leases then run out)."""
    tasks = list(_keepers.pop(store, ()))
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def _keep_claim(store: ClaimingRunStore, kind: str, run_id: str, lease_s: float) -> None:
    """Renew the claim while the run is running: whenever it was last saved more than a third of the lease ago, save
    the same record again (compare-and-swap, so a save of the run itself in between wins). Ends when the run is
    saved with another status (finished, suspended again, failed), when it is gone, or after MAX_HOLD_S."""
    started = time.monotonic()
    while time.monotonic() - started < MAX_HOLD_S:
        await asyncio.sleep(lease_s / 3)
        try:
            record = await store.load_run(kind, run_id, fresh=True)
            if record is None or record.status != "running":
                return
            if time.time() - record.updated_at >= lease_s / 3:
                await store.claim_run(record, expect_status="running", expect_updated_at=record.updated_at)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - storage trouble: try again at the next beat
            log.warning(f"renewing the claim on {kind} run {run_id!r} failed: {exc}")


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
