"""Compaction of LanceDB tables, mixed into :class:`~voiceserver.memory.store.LanceDBStore`.

Fragments: every append creates one small fragment, and a query pays for each fragment that no index covers.
After ``compact_every`` writes to a table, a background task (one at a time, on one dedicated thread whose nice
value is raised so live turns get the CPU first, and, given ``live_activity``, only once live work pauses) merges
the new small fragments into one (at most ``target_rows_per_fragment`` rows; larger fragments are never rewritten
again, so the cost does not grow with the table). Every ``full_every``-th pass also adds the new rows to the scalar
indexes and drops versions older than ``keep_versions_s``; in between, queries flat-scan the one small unindexed
fragment. Tiered compaction needs pylance (``lance``); without it, LanceDB's ``optimize()`` is used, which also
rewrites large fragments next to small ones. Nothing is compacted while storage is unreachable (see :mod:`.outage`).

In one process, a table's compaction and its writes take turns (:meth:`commit_lock`): a rewrite of fragments that an
update or delete touches at the same time is a commit conflict, and under steady writes (the soak's 50 callers)
compaction then never committed, so fragments, versions and files grew without bound. Writes wait for the merge
(tens of milliseconds for ``compact_every`` small fragments). Dropping old versions needs no turn and runs on a full
pass even when the merge failed. Across processes sharing a store, Lance's own commit retries remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from ..logs import get_logger

log = get_logger("MEMORY")

MAINTENANCE_NICE = 10  # compaction's thread runs at this nice value: the CPU goes to live turns first
MAINTENANCE_IDLE_WAIT_S = 30.0  # compaction waits this long at most for live work to pause before it starts


def _lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread's nice value is its own; threads it starts inherit
    it). Best effort: other systems, or a sandbox that forbids it, keep the normal priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MAINTENANCE_NICE)


class CompactionMixin:
    """Background and on-demand compaction (see the module notes)."""

    _tables: dict[str, Any]
    _writes: dict[str, int]
    _commit_locks: dict[str, asyncio.Lock]
    _maintenance_tasks: dict[str, asyncio.Task]
    _maintenance_gate: asyncio.Semaphore
    _maintenance_counts: dict[str, int]
    _maintenance_thread: ThreadPoolExecutor | None
    maintenance: bool
    compact_every: int
    full_every: int
    keep_versions_s: float
    target_rows_per_fragment: int
    storage_options: dict[str, str]
    live_activity: Any
    maintenance_errors: int

    async def open(self) -> None:  # provided by LanceDBStore
        raise NotImplementedError

    def commit_lock(self, name: str) -> asyncio.Lock:
        """The lock a table's commits and its compaction hold (see the module notes)."""
        lock = self._commit_locks.get(name)
        if lock is None:
            lock = self._commit_locks[name] = asyncio.Lock()
        return lock

    def _note_write(self, name: str) -> None:
        self._writes[name] = self._writes.get(name, 0) + 1
        if not self.maintenance or self._writes[name] < self.compact_every or name in self._maintenance_tasks:
            return
        self._writes[name] = 0
        task = asyncio.get_running_loop().create_task(self._maintain(name))
        self._maintenance_tasks[name] = task
        task.add_done_callback(lambda _t, n=name: self._maintenance_tasks.pop(n, None))

    async def _maintain(self, name: str) -> None:
        async with self._maintenance_gate:
            if self.live_activity is not None:  # start between live turns, not during one
                with contextlib.suppress(Exception):
                    await self.live_activity.wait_idle_async(timeout=MAINTENANCE_IDLE_WAIT_S)
            try:
                await self.compact(name)
            except Exception as exc:  # noqa: BLE001 - compaction is an optimisation; the next run retries
                self.maintenance_errors += 1
                log.warning(f"compaction of {name} failed (will retry later): {exc}")

    async def compact(self, name: str, *, full: bool | None = None) -> None:
        """Merge the table's small fragments; on a full pass also index the new rows and drop old versions.

        Cheap passes only merge the new, unindexed fragments into one (LanceDB never merges fragments that an
        index covers with ones it does not), so between full passes a query flat-scans one small fragment
        instead of one per write. Every ``full_every``-th pass (or ``full=True``) adds the new rows to the scalar
        indexes (one segment each) and drops table versions older than ``keep_versions_s``.
        """
        table = self._tables[name]
        runs = self._maintenance_counts[name] = self._maintenance_counts.get(name, 0) + 1
        if full is None:
            full = runs % self.full_every == 0
        started = time.perf_counter()
        try:
            import lance  # noqa: F401 - pylance: tiered compaction
        except ImportError:
            async with self.commit_lock(name):
                await table.optimize(cleanup_older_than=timedelta(seconds=self.keep_versions_s) if full else None)
        else:
            uri = await table.uri()
            loop = asyncio.get_running_loop()
            try:
                async with self.commit_lock(name):
                    await loop.run_in_executor(self._maintenance_executor(), self._compact_with_lance, uri, full)
            finally:
                if full:  # old versions go even when the merge failed: they are what grows without bound
                    await loop.run_in_executor(self._maintenance_executor(), self._cleanup_with_lance, uri)
            await table.checkout_latest()  # read the compacted version now, not after read_consistency_s
        log.debug(f"compacted {name} ({'full' if full else 'delta'}) in {time.perf_counter() - started:.3f}s")

    def _maintenance_executor(self) -> ThreadPoolExecutor:
        """The one thread compaction runs on, at a lower CPU priority (created on first use, closed by close())."""
        if self._maintenance_thread is None:
            self._maintenance_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lancedb-maintenance",
                                                          initializer=_lower_thread_priority)
        return self._maintenance_thread

    def _compact_with_lance(self, uri: str, full: bool) -> None:
        import lance

        options = self.storage_options or None
        dataset = lance.dataset(uri, storage_options=options)
        # One thread: compaction is background work and must leave the other core to live turns.
        dataset.optimize.compact_files(target_rows_per_fragment=self.target_rows_per_fragment, num_threads=1)
        if full:
            dataset = lance.dataset(uri, storage_options=options)
            dataset.optimize.optimize_indices()  # the new rows join the index, one segment per index

    def _cleanup_with_lance(self, uri: str) -> None:
        import lance

        dataset = lance.dataset(uri, storage_options=self.storage_options or None)
        dataset.cleanup_old_versions(older_than=timedelta(seconds=self.keep_versions_s))

    async def optimize(self) -> None:
        """Compact and index every table now (waits for running background compactions first)."""
        await self.open()
        tasks = list(self._maintenance_tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        async with self._maintenance_gate:
            for name in list(self._tables):
                await self.compact(name, full=True)

    async def fragment_counts(self) -> dict[str, int]:
        """Fragments per table (for benchmarks and health checks)."""
        await self.open()
        out = {}
        for name, table in self._tables.items():
            stats = await table.stats()
            out[name] = int(stats["fragment_stats"]["num_fragments"]) if isinstance(stats, dict) \
                else int(stats.fragment_stats.num_fragments)
        return out
