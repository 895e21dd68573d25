"""Storage outages, mixed into :class:`~voiceserver.memory.store.LanceDBStore`: when LanceDB (an object store, most
likely) stops answering, turns go on; writes wait in the local journal (:mod:`.journal`) and are flushed in order
when storage answers again.

How an outage is noticed: a call that fails, or gives no answer within ``op_timeout_s``, is followed by a probe (a
listing of the tables, with the same timeout). If the probe answers, storage is up and the call's own error is
raised (a bad write is still an error) or, for a slow call, its answer is awaited further; if the probe fails too,
storage is *degraded*:

- writes are appended to the journal (fsynced) and return: a turn acknowledged with ``response.done`` is on local
  disk. A write that was in flight when the outage began is left to finish or fail on its own (bound it with the
  object store's ``timeout`` / ``client_max_retries`` storage options); replaying it is harmless, see below.
- reads are answered from what this process knows: a bounded cache of rows it read or wrote recently
  (``cache_rows``, least recently used first out), with the journal's pending writes applied in order, then the
  filter. A thread this process has not seen yet reads as empty; semantic recall (vector search) returns nothing;
  counts are those of the same view.
- a background task probes every ``probe_interval_s``; when storage answers it replays the journal in order (while
  entries are pending, new writes keep going to the journal behind them, so order holds), then storage is healthy.

Replay is idempotent: an append or an insert-if-absent is replayed as a merge on the table's key (nothing happens
for a row that is already stored), an upsert as an upsert, a delete as the same delete. A crash during a replay
replays the same entries again at the next start, with the same result. Suspended-run claims need storage itself
(they are atomic there), so they fail with ``storage_unavailable`` during an outage.

Without a journal directory (``journal_dir=None``) none of this happens: storage errors are raised as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ..logs import get_logger
from .journal import JournalEntry, StorageJournal
from .schema import BASE_TABLES, Where, key_column
from .types import MemoryStoreError

log = get_logger("MEMORY")
T = TypeVar("T")

OPEN_TIMEOUT_FACTOR = 6  # opening creates or opens every table: several round trips, so a longer bound


class RowCache:
    """Whole rows this process read or wrote recently, per table by key; at most ``max_rows`` over all tables."""

    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self._tables: dict[str, dict[Any, dict[str, Any]]] = {}
        self._order: OrderedDict[tuple[str, Any], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def remember(self, table: str, rows: list[dict[str, Any]], *, only_new: bool = False) -> None:
        if self.max_rows <= 0:
            return
        key = key_column(table)
        stored = self._tables.setdefault(table, {})
        for row in rows:
            k = row.get(key)
            if k is None or (only_new and k in stored):
                continue
            stored[k] = row
            self._order[(table, k)] = None
            self._order.move_to_end((table, k))
        while len(self._order) > self.max_rows:
            (t, k), _ = self._order.popitem(last=False)
            self._tables.get(t, {}).pop(k, None)

    def forget(self, table: str, where: Where) -> None:
        """Drop the rows a delete removed (all of the table's when the filter cannot be tested in Python)."""
        stored = self._tables.get(table, {})
        gone = [k for k, row in stored.items() if where.spec[0] == "sql" or where.matches(row)]
        for k in gone:
            stored.pop(k, None)
            self._order.pop((table, k), None)

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        return dict(self._tables.get(table, {}))


def journal_directory(base: str | Path, uri: str) -> Path:
    """One journal directory per storage URI under ``base`` (two stores in one process never share a file)."""
    return Path(base) / hashlib.sha256(uri.encode()).hexdigest()[:16]


class OutageGuard:
    """The degraded mode of a store (see the module notes). LanceDBStore calls :meth:`_init_guard` and routes its
    primitives through :meth:`_guarded_write` / :meth:`_guarded_read`."""

    uri: str
    _db: Any
    _tables: dict[str, Any]

    async def _connect(self) -> None:  # LanceDBStore: connect and open the tables
        raise NotImplementedError

    async def table(self, name: str) -> Any:  # LanceDBStore: an open table
        raise NotImplementedError

    async def _table_for(self, name: str, schema: Any) -> Any:  # LanceDBStore: open or create a table
        raise NotImplementedError

    async def _write(self, name: str, op: Callable[[], Awaitable[T]]) -> T:  # LanceDBStore: commit with retries
        raise NotImplementedError

    async def _replay(self, entry: JournalEntry) -> None:
        """Apply one journaled write idempotently (see :mod:`.outage`)."""
        if entry.op == "delete":
            if entry.table not in self._tables and entry.table not in BASE_TABLES:
                return  # a vectors table that was never created: nothing to delete
            table = await self.table(entry.table)
            await self._write(entry.table, lambda: table.delete(str(entry.where)))
            return
        assert entry.rows is not None and entry.key is not None
        table = await self._table_for(entry.table, entry.rows.schema)

        def merge() -> Any:
            builder = table.merge_insert(entry.key)
            if entry.op == "upsert":
                builder = builder.when_matched_update_all()
            return builder.when_not_matched_insert_all().execute(entry.rows)

        await self._write(entry.table, merge)


    def _init_guard(self, journal_dir: str | Path | None, *, journal_max_entries: int, journal_max_bytes: int,
                    op_timeout_s: float, probe_interval_s: float, cache_rows: int) -> None:
        self.journal = None if journal_dir is None else StorageJournal(
            journal_directory(journal_dir, self.uri), max_entries=journal_max_entries, max_bytes=journal_max_bytes)
        self.op_timeout_s = op_timeout_s
        self.probe_interval_s = probe_interval_s
        self.cache = RowCache(cache_rows)
        self._outage: dict[str, Any] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._journal_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._abandoned: set[asyncio.Future[Any]] = set()
        self.journaled_writes = 0
        self.flushed_writes = 0
        self.dropped_writes = 0

    # --- state ----------------------------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """Storage is unreachable, or journaled writes are still waiting to be flushed."""
        return self.journal is not None and (self._outage is not None or self.journal.pending > 0)

    def health(self) -> dict[str, Any]:
        """For /readyz: ``state`` ok | degraded (storage unreachable) | flushing (back, journal being replayed)."""
        pending = self.journal.pending if self.journal is not None else 0
        state = "degraded" if self._outage is not None else "flushing" if pending else "ok"
        out: dict[str, Any] = {"state": state, "pending_writes": pending,
                               "pending_bytes": self.journal.bytes if self.journal is not None else 0,
                               "journaled_writes": self.journaled_writes, "flushed_writes": self.flushed_writes}
        if self._outage is not None:
            out.update(since=round(self._outage["since"], 3), reason=self._outage["reason"])
        if self.dropped_writes:
            out["dropped_writes"] = self.dropped_writes
        return out

    def _enter_outage(self, reason: str) -> None:
        if self._outage is None:
            self._outage = {"since": time.time(), "reason": reason}
            log.warning(f"storage unreachable ({reason}): writes go to the local journal until it answers",
                        fields={"journal": str(self.journal.directory) if self.journal else None})
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover(), name="storage-recovery")

    async def _stop_guard(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        self._recovery = None
        if self.journal is not None:
            async with self._journal_lock:
                await asyncio.to_thread(self.journal.close)

    # --- calls ----------------------------------------------------------------------------------------------------

    async def _reachable(self) -> bool:
        """A probe: connect (when not connected yet) or list the tables, within the timeout."""
        try:
            if self._db is None:
                async with asyncio.timeout(self.op_timeout_s * OPEN_TIMEOUT_FACTOR):
                    await self._connect()
            else:
                async with asyncio.timeout(self.op_timeout_s):
                    await self._db.list_tables()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means unreachable
            log.debug(f"storage probe failed: {type(exc).__name__}: {exc}")
            return False

    async def _attempt(self, op: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run ``op``: (True, its result); (False, None) when storage is unreachable. Raises ``op``'s own error when
        storage answers the probe (the error is real), and waits on for a slow call while it does."""
        task = asyncio.ensure_future(op())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.op_timeout_s)
                if done:
                    if task.exception() is None:
                        return True, task.result()
                    if await self._reachable():
                        raise task.exception()  # type: ignore[misc]
                    self._enter_outage(f"{type(task.exception()).__name__}: {task.exception()}")
                    return False, None
                if not await self._reachable():
                    self._abandon(task)
                    self._enter_outage(f"no answer within {self.op_timeout_s:g} s")
                    return False, None
        except asyncio.CancelledError:
            task.cancel()
            raise

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        """Leave a call that hangs on the dead link to finish or fail by itself (its error is retrieved)."""
        self._abandoned.add(task)
        task.add_done_callback(lambda t: (self._abandoned.discard(t), t.cancelled() or t.exception()))

    async def _journal_append(self, entry: JournalEntry) -> None:
        assert self.journal is not None
        async with self._journal_lock:
            await asyncio.to_thread(self.journal.append, entry)
        self.journaled_writes += 1

    async def _guarded_write(self, entry: JournalEntry, direct: Callable[[], Awaitable[T]]) -> T | None:
        """A write: to storage when it answers (None returned if it went to the journal instead)."""
        if self.journal is None:
            return await direct()
        if self.degraded:
            await self._journal_append(entry)
            return None
        ok, result = await self._attempt(direct)
        if not ok:
            await self._journal_append(entry)
            return None
        self._cache_write(entry)
        return result

    async def _guarded_read(self, name: str, where: str, columns: list[str] | None, limit: int,
                            direct: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
        """A query: from storage when it answers, else from the cache and the journal."""
        if self.journal is None:
            return await direct()
        if self.degraded:
            return self._overlay(name, where, columns, limit)
        ok, rows = await self._attempt(direct)
        if not ok:
            return self._overlay(name, where, columns, limit)
        assert rows is not None
        schema = BASE_TABLES.get(name)
        if schema is not None and (columns is None or set(schema.names) <= set(columns)):
            self.cache.remember(name, rows)
        return rows

    def _cache_write(self, entry: JournalEntry) -> None:
        if entry.table not in BASE_TABLES:
            return  # vectors are not cached: search is skipped during an outage
        if entry.op == "delete":
            assert entry.where is not None
            self.cache.forget(entry.table, entry.where)
        else:
            self.cache.remember(entry.table, entry.row_dicts, only_new=entry.op == "insert_new")

    def _overlay(self, name: str, where: str, columns: list[str] | None, limit: int) -> list[dict[str, Any]]:
        """The rows of ``name`` matching ``where`` as this process knows them: the cache, then the journal."""
        if not isinstance(where, Where) or where.spec[0] == "sql":
            raise MemoryStoreError("storage is unreachable and this query cannot be answered from the local cache",
                                   code="storage_unavailable")
        state = self.cache.rows(name)
        key = key_column(name)
        for entry in self.journal.entries if self.journal is not None else []:
            if entry.table != name:
                continue
            if entry.op == "delete":
                assert entry.where is not None
                state = {k: r for k, r in state.items() if not entry.where.matches(r)}
                continue
            for row in entry.row_dicts:
                if entry.op == "insert_new":
                    state.setdefault(row.get(key), row)
                else:
                    state[row.get(key)] = row
        rows = [r for r in state.values() if where.matches(r)][:limit]
        if columns:
            rows = [{c: r.get(c) for c in columns} for r in rows]
        return rows

    def journaled_tables(self) -> set[str]:
        return {e.table for e in self.journal.entries} if self.journal is not None else set()

    # --- recovery -------------------------------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Probe until storage answers, then flush the journal; again after a failed flush."""
        while True:
            await asyncio.sleep(self.probe_interval_s)
            if not await self._reachable():
                continue
            down_since = self._outage["since"] if self._outage is not None else time.time()
            self._outage = None
            if await self.flush_journal():
                log.info(f"storage answers again after {time.time() - down_since:.1f} s; the journal is flushed",
                         fields={"flushed_writes": self.flushed_writes})
                return

    async def flush_journal(self) -> bool:
        """Replay the pending writes in order; True when none is left (False: storage failed again)."""
        if self.journal is None:
            return True
        async with self._flush_lock:
            while self.journal.entries:
                batch = list(self.journal.entries)
                done = 0
                try:
                    for entry in batch:
                        try:
                            ok, _ = await self._attempt(lambda e=entry: self._replay(e))
                        except Exception as exc:  # noqa: BLE001 - storage answers but refuses this write
                            self.dropped_writes += 1
                            log.error(f"a journaled write to {entry.table} is refused by storage and dropped: "
                                      f"{exc}", fields={"op": entry.op})
                            ok = True
                        if not ok:
                            return False
                        done += 1
                        self.flushed_writes += 1
                        self._cache_write(entry)
                finally:
                    if done:
                        async with self._journal_lock:
                            await asyncio.to_thread(self.journal.flushed, done)
            return True
