"""LanceDBStore: the LanceDB connection, its tables, durable writes with conflict retries, and compaction.

Uses LanceDB's asynchronous API (``lancedb.connect_async``): every query and commit is a future of LanceDB's own
runtime awaited on the event loop, so nothing blocks it; the optional pylance compaction runs in a worker thread.

Durability: ``add`` / ``delete`` / ``merge_insert`` return after LanceDB has committed the new table version
(data files and manifest written), and nothing is buffered in this process, so a write that returned survives
SIGKILL of the process (LanceDB does not fsync on local disk: a power cut may lose the newest versions).

Concurrency (several tasks or processes on one URI): LanceDB uses optimistic concurrency. Concurrent appends are
compatible and LanceDB rebases them itself; a delete, update or compaction that touched the same fragments as a
concurrent commit fails with a commit conflict, which :meth:`_write` retries with backoff. On S3 the commit is a
conditional put (If-None-Match), so two processes never overwrite each other's version; on local disk it is an
atomic rename. A process sees its own writes at once and other processes' writes within ``read_consistency_s``
(default 1 s; 0 checks on every read, which costs a listing of the table's versions per query, and that listing
grows with the versions kept: ``keep_versions_s``).

Fragments: every append creates one small fragment, and a query pays for each fragment that no index covers.
After ``compact_every`` writes to a table, a background task (one at a time, on one dedicated thread whose nice
value is raised so live turns get the CPU first, and, given ``live_activity``, only once live work pauses) merges
the new small fragments into one (at most ``target_rows_per_fragment`` rows; larger fragments are never rewritten
again, so the cost does not grow with the table). Every ``full_every``-th pass also adds the new rows to the scalar
indexes and drops versions older than ``keep_versions_s``; in between, queries flat-scan the one small unindexed
fragment. Tiered compaction needs pylance (``lance``); without it, LanceDB's ``optimize()`` is used, which also
rewrites large fragments next to small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import pyarrow as pa

from ..logs import get_logger
from .runs import LanceRunStoreMixin
from .schema import BASE_TABLES, INDEXED_COLUMNS, VECTOR_INDEXED_COLUMNS, vectors_schema, vectors_table_name
from .types import MemoryStoreError

log = get_logger("MEMORY")
T = TypeVar("T")

MAX_QUERY_ROWS = 100_000  # one query never materialises more rows than this
MAINTENANCE_NICE = 10  # compaction's thread runs at this nice value: the CPU goes to live turns first
MAINTENANCE_IDLE_WAIT_S = 30.0  # compaction waits this long at most for live work to pause before it starts


def _lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread's nice value is its own; threads it starts inherit
    it). Best effort: other systems, or a sandbox that forbids it, keep the normal priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MAINTENANCE_NICE)


def _is_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "conflict" in text or "preempted" in text or "retry" in text and "commit" in text


def _redact(uri: str) -> str:
    # Credentials never travel in the URI here, but a user could paste one; keep only scheme + path.
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


class LanceDBStore(LanceRunStoreMixin):
    """Memory storage in LanceDB at ``uri`` (a directory, or ``s3://bucket/path`` with ``storage_options`` such as
    ``{"aws_endpoint": ..., "aws_access_key_id": ..., "aws_secret_access_key": ..., "allow_http": "true"}``).

    Tables: threads, messages, resources (working memory, metadata), vectors_<embedder> (message and entry
    vectors), entries (key/value), runs (suspended agent runs and workflow snapshots; see RunStore). It also
    implements :class:`voiceserver.runs.store.RunStore` (methods in :mod:`.runs`).
    """

    def __init__(self, uri: str | Path = "./data/memory", *, storage_options: dict[str, str] | None = None,
                 read_consistency_s: float | None = 1.0, compact_every: int = 32,
                 target_rows_per_fragment: int = 4096, full_every: int = 8, keep_versions_s: float = 600.0,
                 maintenance: bool = True, write_retries: int = 8, live_activity: Any = None):
        self.uri = str(uri)
        self.storage_options = dict(storage_options or {})
        self.read_consistency_s = read_consistency_s
        self.compact_every = compact_every
        self.target_rows_per_fragment = target_rows_per_fragment
        self.full_every = full_every
        self.keep_versions_s = keep_versions_s
        self.maintenance = maintenance
        self.write_retries = write_retries
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._open_lock = asyncio.Lock()
        self._table_lock = asyncio.Lock()
        self._writes: dict[str, int] = {}
        self._maintenance_tasks: dict[str, asyncio.Task] = {}
        self._maintenance_gate = asyncio.Semaphore(1)  # one compaction at a time: it is CPU work on 2 cores
        self._maintenance_counts: dict[str, int] = {}
        self._maintenance_thread: ThreadPoolExecutor | None = None
        self.live_activity = live_activity  # anything with ``async wait_idle_async(timeout)`` (engines.LiveActivity)
        self.maintenance_errors = 0

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def is_local(self) -> bool:
        return "://" not in self.uri or self.uri.startswith("file://")

    def _local_path(self) -> Path:
        return Path(self.uri[len("file://"):] if self.uri.startswith("file://") else self.uri)

    def _check_writable(self) -> None:
        path = self._local_path()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise MemoryStoreError(
                f"LanceDB directory {path} cannot be written ({exc.strerror or exc}): give the server write access "
                f"to it or set LANCEDB_URI to a writable place", code="storage_not_writable") from exc

    async def open(self) -> None:
        """Connect and create the tables and indexes that are missing. Idempotent; raises MemoryStoreError."""
        if self._db is not None:
            return
        async with self._open_lock:
            if self._db is not None:
                return
            if self.is_local:
                await asyncio.to_thread(self._check_writable)
            interval = None if self.read_consistency_s is None else timedelta(seconds=self.read_consistency_s)
            try:
                db = await lancedb.connect_async(self.uri, read_consistency_interval=interval,
                                                 storage_options=self.storage_options or None)
                for name, schema in BASE_TABLES.items():
                    self._tables[name] = await self._create_or_open(db, name, schema, INDEXED_COLUMNS[name])
            except MemoryStoreError:
                raise
            except Exception as exc:  # any storage failure at start-up is one clear error
                raise MemoryStoreError(f"cannot open LanceDB at {_redact(self.uri)}: {type(exc).__name__}: {exc}",
                                       code="storage_unavailable") from exc
            self._db = db

    async def _create_or_open(self, db: Any, name: str, schema: pa.Schema, indexed: tuple[str, ...]) -> Any:
        for attempt in range(5):
            try:
                table = await db.create_table(name, schema=schema, exist_ok=True)
                break
            except Exception:  # another process may be creating it right now
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
                with contextlib.suppress(Exception):
                    table = await db.open_table(name)
                    break
        existing = {tuple(i.columns) for i in await table.list_indices()}
        for column in indexed:
            if (column,) not in existing:
                try:
                    await table.create_index(column, config=lancedb.index.BTree())
                except Exception as exc:  # noqa: BLE001 - a concurrent creator won; the index exists
                    log.debug(f"index {name}.{column}: {exc}")
        return table

    async def close(self) -> None:
        """Wait for background compaction to finish. The store can be opened again."""
        tasks = list(self._maintenance_tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._maintenance_thread is not None:
            self._maintenance_thread.shutdown(wait=False)
            self._maintenance_thread = None
        self._tables.clear()
        self._db = None

    async def table(self, name: str) -> Any:
        await self.open()
        try:
            return self._tables[name]
        except KeyError:
            raise MemoryStoreError(f"table {name} is not open", code="storage_read_failed") from None

    async def vector_table_names(self) -> list[str]:
        """Every vectors_<embedder> table in the database (opened), for deletes that must reach all of them."""
        await self.open()
        names: list[str] = []
        token = None
        while True:
            page = await self._db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token or not page.tables:
                break
        for name in names:
            if name.startswith("vectors_") and name not in self._tables:
                self._tables[name] = await self._db.open_table(name)
        return sorted(n for n in self._tables if n.startswith("vectors_"))

    async def vectors_table(self, embedder_name: str, dim: int | None, *, create: bool) -> str | None:
        """The name of the vectors table of one embedder (open); created on first write, None if absent."""
        await self.open()
        name = vectors_table_name(embedder_name)
        if name in self._tables:
            return name
        async with self._table_lock:
            if name in self._tables:
                return name
            try:
                table = await self._db.open_table(name)
            except Exception:  # noqa: BLE001 - not created yet
                if not create or not dim:
                    return None
                table = await self._create_or_open(self._db, name, vectors_schema(dim), VECTOR_INDEXED_COLUMNS)
            field = (await table.schema()).field("vector")
            if dim and field.type.list_size != dim:
                raise MemoryStoreError(
                    f"table {name} holds {field.type.list_size}-dimension vectors but the embedder gives {dim}",
                    code="embedder_mismatch")
            self._tables[name] = table
            return name

    # ----------------------------------------------------------------------------------------------- primitives
    async def _write(self, name: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run a commit, retrying commit conflicts with jittered backoff; count it for compaction."""
        delay = 0.01
        for attempt in range(self.write_retries + 1):
            try:
                result = await op()
                break
            except Exception as exc:  # classified below
                if not _is_conflict(exc) or attempt >= self.write_retries:
                    raise MemoryStoreError(f"write to {name} failed: {exc}", code="storage_write_failed") from exc
                log.debug(f"commit conflict on {name}, retry {attempt + 1}: {exc}")
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)
        self._note_write(name)
        return result

    async def add(self, name: str, rows: pa.Table, table: Any = None) -> None:
        """Append rows; committed when this returns."""
        if rows.num_rows == 0:
            return
        table = table or await self.table(name)
        await self._write(name, lambda: table.add(rows))

    async def upsert(self, name: str, key: str, rows: pa.Table, table: Any = None) -> None:
        """Insert or replace rows by ``key`` in one commit (LanceDB retries its own conflicts, then we do)."""
        if rows.num_rows == 0:
            return
        table = table or await self.table(name)
        await self._write(name, lambda: table.merge_insert(key).when_matched_update_all()
                          .when_not_matched_insert_all().execute(rows))

    async def insert_new(self, name: str, key: str, rows: pa.Table) -> int:
        """Insert rows whose ``key`` is not in the table yet; returns how many were inserted."""
        table = await self.table(name)
        result = await self._write(name, lambda: table.merge_insert(key).when_not_matched_insert_all().execute(rows))
        return int(getattr(result, "num_inserted_rows", 0) or 0)

    async def delete(self, name: str, where: str, table: Any = None) -> None:
        table = table or await self.table(name)
        await self._write(name, lambda: table.delete(where))

    async def query(self, name: str, where: str, columns: list[str] | None = None, *, table: Any = None,
                    limit: int = MAX_QUERY_ROWS) -> list[dict[str, Any]]:
        """Rows matching ``where`` (built with the helpers in :mod:`.schema`)."""
        table = table or await self.table(name)
        q = table.query().where(where).limit(limit)
        if columns:
            q = q.select(columns)
        try:
            return (await q.to_arrow()).to_pylist()
        except Exception as exc:  # storage failure
            raise MemoryStoreError(f"read from {name} failed: {exc}", code="storage_read_failed") from exc

    async def count(self, name: str, where: str | None = None) -> int:
        table = await self.table(name)
        return int(await table.count_rows(where))

    async def nearest(self, name: str, vector: Any, where: str, limit: int,
                      columns: list[str]) -> list[dict[str, Any]]:
        """Cosine nearest neighbours among rows matching ``where`` (prefiltered, so the filter is exact)."""
        table = await self.table(name)
        q = (table.vector_search(vector).distance_type("cosine").where(where)
             .select([*columns, "_distance"]).limit(limit))
        try:
            return (await q.to_arrow()).to_pylist()
        except Exception as exc:  # storage failure
            raise MemoryStoreError(f"vector search failed: {exc}", code="storage_read_failed") from exc

    # ----------------------------------------------------------------------------------------------- compaction
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
            await table.optimize(cleanup_older_than=timedelta(seconds=self.keep_versions_s) if full else None)
        else:
            uri = await table.uri()
            await asyncio.get_running_loop().run_in_executor(self._maintenance_executor(), self._compact_with_lance,
                                                             uri, full)
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
