"""Persistence of suspended runs (agent tool approvals, workflow snapshots, network runs).

:class:`RunStore` is the narrow interface the agent, workflow and network engines use. :class:`InMemoryRunStore`
keeps runs in this process (tests, or no storage configured); ``memory.LanceDBStore`` implements the same methods
on LanceDB so a suspended run survives the process that started it. A store that also has ``claim_run``
(:class:`ClaimingRunStore`) lets a suspended run be continued exactly once, even from two servers at once
(:mod:`.claims`).
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

RUN_KINDS = ("agent", "workflow", "network")


@dataclass(slots=True)
class RunRecord:
    """One run's persisted state. ``snapshot`` must be JSON-serialisable."""

    kind: str
    run_id: str
    owner_id: str
    status: str
    snapshot: dict[str, Any]
    resource_id: str | None = None
    thread_id: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@runtime_checkable
class RunStore(Protocol):
    """Where suspended and finished runs are kept."""

    async def save_run(self, record: RunRecord) -> None:
        """Insert or replace the run (kind, run_id). Durable when it returns."""

    async def load_run(self, kind: str, run_id: str) -> RunRecord | None:
        """The run, or None."""

    async def list_runs(self, kind: str, owner_id: str | None = None, resource_id: str | None = None,
                        status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs of a kind, newest first, filtered by owner / resource / status."""

    async def delete_run(self, kind: str, run_id: str) -> None:
        """Remove a run (no error if absent)."""


@runtime_checkable
class ClaimingRunStore(RunStore, Protocol):
    """A RunStore that can claim a run atomically, also across processes sharing it (LanceDBStore does)."""

    async def claim_run(self, record: RunRecord, *, expect_status: str, expect_updated_at: float) -> bool:
        """Save ``record`` only if the stored run still has ``expect_status`` and ``expect_updated_at`` (as it was
        read): a compare-and-swap. True when this call won; False when the run changed (or is gone) meanwhile.
        The saved record gets a new ``updated_at`` (set on ``record`` too)."""

    async def load_run(self, kind: str, run_id: str, *, fresh: bool = False) -> RunRecord | None:
        """The run; ``fresh``: as committed right now (not a version up to ``read_consistency_s`` old)."""


class InMemoryRunStore:
    """RunStore in a dict, for tests and for deployments without storage."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], RunRecord] = {}
        self._lock = asyncio.Lock()

    async def save_run(self, record: RunRecord) -> None:
        async with self._lock:
            existing = self._runs.get((record.kind, record.run_id))
            stored = copy.deepcopy(record)
            if existing is not None:
                stored.created_at = existing.created_at
            stored.updated_at = time.time()
            self._runs[(record.kind, record.run_id)] = stored

    async def load_run(self, kind: str, run_id: str, *, fresh: bool = False) -> RunRecord | None:
        record = self._runs.get((kind, run_id))
        return copy.deepcopy(record) if record else None

    async def claim_run(self, record: RunRecord, *, expect_status: str, expect_updated_at: float) -> bool:
        """See :class:`ClaimingRunStore` (atomic within this process: one dict behind a lock)."""
        async with self._lock:
            existing = self._runs.get((record.kind, record.run_id))
            if existing is None or existing.status != expect_status or existing.updated_at != expect_updated_at:
                return False
            stored = copy.deepcopy(record)
            stored.created_at = existing.created_at
            stored.updated_at = record.updated_at = max(time.time(), existing.updated_at + 1e-6)
            self._runs[(record.kind, record.run_id)] = stored
            return True

    async def list_runs(self, kind: str, owner_id: str | None = None, resource_id: str | None = None,
                        status: str | None = None, limit: int = 100) -> list[RunRecord]:
        rows = [
            r for (k, _), r in self._runs.items()
            if k == kind and (owner_id is None or r.owner_id == owner_id)
            and (resource_id is None or r.resource_id == resource_id) and (status is None or r.status == status)
        ]
        rows.sort(key=lambda r: r.updated_at, reverse=True)
        return [copy.deepcopy(r) for r in rows[:limit]]

    async def delete_run(self, kind: str, run_id: str) -> None:
        async with self._lock:
            self._runs.pop((kind, run_id), None)
