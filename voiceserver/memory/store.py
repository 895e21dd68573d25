"""LanceDBStore: the LanceDB connection, its tables, durable writes with conflict retries, outages and compaction.

Uses LanceDB's asynchronous API (``lancedb.connect_async``): every query and commit is a future of LanceDB's own
runtime awaited on the event loop, so nothing blocks it; the optional pylance compaction runs in a worker thread.

Durability: ``add`` / ``delete`` / ``merge_insert`` return after LanceDB has committed the new table version
(data files and manifest written), and nothing is buffered in this process, so a write that returned survives
SIGKILL of the process. On local disk LanceDB does not fsync, so a power cut may lose the newest versions; with
``fsync=True`` ("files") or ``fsync="filesystem"`` each commit is made durable before the write returns
(:mod:`.local_sync`; ``scripts/bench_durability.py`` measures the cost). An object store acknowledges a PUT once it is
durable.

Outages (``journal_dir`` set): when storage stops answering, writes go to an fsynced local journal and reads are
served from what this process knows, until storage answers and the journal is replayed (:mod:`.outage`).

Concurrency (several tasks or processes on one URI): LanceDB uses optimistic concurrency. Concurrent appends are
compatible and LanceDB rebases them itself; a delete, update or compaction that touched the same rows as a
concurrent commit fails with a commit conflict, which :meth:`_write` retries with backoff (a merge retries itself and
is evaluated again against the new version: that is what makes :meth:`claim` atomic). On S3 the commit is a
conditional put (If-None-Match), so two processes never overwrite each other's version; on local disk it is an
atomic rename. A process sees its own writes at once and other processes' writes within ``read_consistency_s``
(default 1 s; 0 checks on every read, which costs a listing of the table's versions per query, and that listing
grows with the versions kept: ``keep_versions_s``). Compaction: :mod:`.compaction`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import pyarrow as pa

from ..logs import get_logger
from .compaction import CompactionMixin
from .journal import JournalEntry
from .local_sync import LocalSync
from .outage import OPEN_TIMEOUT_FACTOR, OutageGuard
from .runs import LanceRunStoreMixin
from .schema import (
    BASE_TABLES,
    INDEXED_COLUMNS,
    VECTOR_INDEXED_COLUMNS,
    Where,
    key_column,
    vectors_schema,
    vectors_table_name,
)
from .types import MemoryStoreError

log = get_logger("MEMORY")
DEFAULT_INDEX_CACHE_BYTES = 16 << 20
DEFAULT_METADATA_CACHE_BYTES = 16 << 20
T = TypeVar("T")

MAX_QUERY_ROWS = 100_000  # one query never materialises more rows than this


def _is_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "conflict" in text or "preempted" in text or "retry" in text and "commit" in text


def _redact(uri: str) -> str:
    # Credentials never travel in the URI here, but a user could paste one; keep only scheme + path.
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


class LanceDBStore(LanceRunStoreMixin, OutageGuard, CompactionMixin):
    """Memory storage in LanceDB at ``uri`` (a directory, or ``s3://bucket/path`` with ``storage_options`` such as
    ``{"aws_endpoint": ..., "aws_access_key_id": ..., "aws_secret_access_key": ..., "allow_http": "true"}``).

    Tables: threads, messages, resources (working memory, metadata), vectors_<embedder> (message and entry
    vectors), entries (key/value), runs (suspended agent runs and workflow snapshots; see RunStore). It also
    implements :class:`voiceserver.runs.store.RunStore` (methods in :mod:`.runs`).

    ``journal_dir`` (None: off) holds the outage journal of at most ``journal_max_entries`` writes and
    ``journal_max_bytes``; a call without an answer after ``op_timeout_s`` is probed; ``probe_interval_s`` paces the
    probes during an outage; ``cache_rows`` bounds the rows kept to answer reads then. ``claim_lease_s``: a claim on
    a suspended run that its holder stopped renewing may be taken after this long. ``fsync``: see the module notes.
    """

    def __init__(self, uri: str | Path = "./data/memory", *, storage_options: dict[str, str] | None = None,
                 read_consistency_s: float | None = 1.0, compact_every: int = 32,
                 target_rows_per_fragment: int = 4096, full_every: int = 8, keep_versions_s: float = 600.0,
                 maintenance: bool = True, write_retries: int = 8, live_activity: Any = None,
                 journal_dir: str | Path | None = None, journal_max_entries: int = 10_000,
                 journal_max_bytes: int = 64 * 1024 * 1024, op_timeout_s: float = 5.0, probe_interval_s: float = 1.0,
                 cache_rows: int = 20_000, fsync: bool | str = False, claim_lease_s: float = 60.0,
                 index_cache_bytes: int | None = DEFAULT_INDEX_CACHE_BYTES,
                 metadata_cache_bytes: int | None = DEFAULT_METADATA_CACHE_BYTES):
        self.uri = str(uri)
        self.storage_options = dict(storage_options or {})
        self.read_consistency_s = read_consistency_s
        self.compact_every = compact_every
        self.target_rows_per_fragment = target_rows_per_fragment
        self.full_every = full_every
        self.keep_versions_s = keep_versions_s
        self.maintenance = maintenance
        self.write_retries = write_retries
        self.claim_lease_s = claim_lease_s
        # LanceDB's caches, bounded: its defaults (6 GiB of index, 1 GiB of metadata) let a server's RSS grow by
        # about 70 MiB a minute under the soak's 50 callers, as manifests of new versions filled the cache. 16 MiB
        # each fill within minutes and then hold; recall and write times are the same as with 128 + 64 MiB
        # (scripts/bench_memory.py), since the data a turn reads is a few small index pages and the newest manifest.
        self.cache_bytes = (index_cache_bytes, metadata_cache_bytes)
        self._session: Any = None
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._open_lock = asyncio.Lock()
        self._table_lock = asyncio.Lock()
        self._opened = False
        self._writes: dict[str, int] = {}
        self._commit_locks: dict[str, asyncio.Lock] = {}  # a table's commits and its compaction take turns
        self._maintenance_tasks: dict[str, asyncio.Task] = {}
        self._maintenance_gate = asyncio.Semaphore(1)  # one compaction at a time: it is CPU work on 2 cores
        self._maintenance_counts: dict[str, int] = {}
        self._maintenance_thread = None
        self.live_activity = live_activity  # anything with ``async wait_idle_async(timeout)`` (engines.LiveActivity)
        self.maintenance_errors = 0
        mode = "files" if fsync is True else fsync or None
        self.fsync = mode if self.is_local else None
        self._local_sync = LocalSync(self._local_path(), self.fsync) if self.fsync else None
        self._init_guard(journal_dir, journal_max_entries=journal_max_entries, journal_max_bytes=journal_max_bytes,
                         op_timeout_s=op_timeout_s, probe_interval_s=probe_interval_s, cache_rows=cache_rows)

    @classmethod
    def from_settings(cls, settings: Any, uri: str | None = None, **kwargs: Any) -> LanceDBStore:
        """A store for ``uri`` (default ``LANCEDB_URI``) with the settings' object-store options and ``storage.*``
        (:class:`voiceserver.settings.StorageConfig`); ``kwargs`` override."""
        uri = uri or settings.lancedb_uri
        storage = settings.storage
        options: dict[str, Any] = {
            "storage_options": dict(settings.lancedb_storage_options) or None,
            "journal_dir": settings.journal_dir_for(uri), "journal_max_entries": storage.journal_max_entries,
            "journal_max_bytes": storage.journal_max_bytes, "op_timeout_s": storage.op_timeout_s,
            "probe_interval_s": storage.probe_interval_s, "cache_rows": storage.cache_rows, "fsync": storage.fsync,
            "claim_lease_s": storage.claim_lease_s, "index_cache_bytes": storage.index_cache_mib << 20,
            "metadata_cache_bytes": storage.metadata_cache_mib << 20}
        return cls(uri, **{**options, **kwargs})

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def cache_size_bytes(self) -> int:
        """What LanceDB's index and metadata caches hold now (0 before the first connection)."""
        return int(self._session.size_bytes) if self._session is not None else 0

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
        """Connect and create the tables and indexes that are missing; with a journal, replay what a previous
        process left in it. Idempotent; raises MemoryStoreError. With a journal, storage that cannot be reached
        leaves the store degraded (it keeps trying) instead of raising."""
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            if self.is_local:
                await asyncio.to_thread(self._check_writable)
            if self.journal is not None:
                await asyncio.to_thread(self.journal.open)
            try:
                if self.journal is None:
                    await self._connect()
                else:
                    async with asyncio.timeout(self.op_timeout_s * OPEN_TIMEOUT_FACTOR):
                        await self._connect()
            except (MemoryStoreError, TimeoutError) as exc:
                if self.journal is None:
                    raise
                self._opened = True
                self._enter_outage(f"cannot open: {exc}")
                return
            self._opened = True
        if self.journal is not None and self.journal.pending:
            log.info(f"replaying {self.journal.pending} journaled writes at start")
            await self.flush_journal()

    async def _connect(self) -> None:
        """Connect and open every base table (also the outage probe while not connected)."""
        if self._db is not None:
            return
        interval = None if self.read_consistency_s is None else timedelta(seconds=self.read_consistency_s)
        try:
            if self._session is None:
                self._session = lancedb.Session(index_cache_size_bytes=self.cache_bytes[0],
                                                metadata_cache_size_bytes=self.cache_bytes[1])
            db = await lancedb.connect_async(self.uri, read_consistency_interval=interval,
                                             storage_options=self.storage_options or None, session=self._session)
            tables = {name: await self._create_or_open(db, name, schema, INDEXED_COLUMNS[name])
                      for name, schema in BASE_TABLES.items()}
        except MemoryStoreError:
            raise
        except Exception as exc:  # any storage failure at start-up is one clear error
            raise MemoryStoreError(f"cannot open LanceDB at {_redact(self.uri)}: {type(exc).__name__}: {exc}",
                                   code="storage_unavailable") from exc
        self._tables.update(tables)
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
        """Wait for background compaction; stop probing (journaled writes stay on disk for the next start). The
        store can be opened again."""
        tasks = list(self._maintenance_tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._maintenance_thread is not None:
            self._maintenance_thread.shutdown(wait=False)
            self._maintenance_thread = None
        from ..runs.claims import stop_keepers

        await stop_keepers(self)
        await self._stop_guard()
        self._tables.clear()
        self._db = None
        self._opened = False

    async def table(self, name: str) -> Any:
        await self.open()
        try:
            return self._tables[name]
        except KeyError:
            if self._db is None:
                raise MemoryStoreError("storage is unreachable", code="storage_unavailable") from None
            raise MemoryStoreError(f"table {name} is not open", code="storage_read_failed") from None

    async def _table_for(self, name: str, schema: pa.Schema) -> Any:
        """The open table ``name``, opened or created (with ``schema``) when it is not open yet (a journal replay,
        the first write after an outage)."""
        if name in self._tables:
            return self._tables[name]
        if name not in BASE_TABLES and not name.startswith("vectors_"):
            raise MemoryStoreError(f"table {name} is not a memory table", code="storage_write_failed")
        async with self._table_lock:
            if name not in self._tables:
                if self._db is None:
                    await self._connect()
                indexed = INDEXED_COLUMNS.get(name, VECTOR_INDEXED_COLUMNS)
                self._tables[name] = await self._create_or_open(self._db, name, BASE_TABLES.get(name, schema),
                                                                indexed)
            return self._tables[name]

    async def vector_table_names(self) -> list[str]:
        """Every vectors_<embedder> table in the database (opened), for deletes that must reach all of them."""
        await self.open()
        known = {n for n in (*self._tables, *self.journaled_tables()) if n.startswith("vectors_")}
        if self.degraded:
            return sorted(known)
        ok, names = await self._attempt(self._list_vector_tables) if self.journal is not None \
            else (True, await self._list_vector_tables())
        return sorted(set(names or []) | known) if ok else sorted(known)

    async def _list_vector_tables(self) -> list[str]:
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
        return [n for n in self._tables if n.startswith("vectors_")]

    async def vectors_table(self, embedder_name: str, dim: int | None, *, create: bool) -> str | None:
        """The name of the vectors table of one embedder (open); created on first write, None if absent. During an
        outage a table that is not open yet is named anyway for a write (the journal replay creates it)."""
        await self.open()
        name = vectors_table_name(embedder_name)
        if name in self._tables:
            return name
        if self.degraded:
            return name if create or name in self.journaled_tables() else None
        if self.journal is None:
            return await self._open_vectors(name, dim, create)
        ok, found = await self._attempt(lambda: self._open_vectors(name, dim, create))
        return found if ok else (name if create else None)

    async def _open_vectors(self, name: str, dim: int | None, create: bool) -> str | None:
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
        """Run a commit, retrying commit conflicts with jittered backoff; fsync it (if asked); count it for
        compaction."""
        delay = 0.01
        for attempt in range(self.write_retries + 1):
            try:
                async with self.commit_lock(name):
                    result = await op()
                break
            except Exception as exc:  # classified below
                if not _is_conflict(exc) or attempt >= self.write_retries:
                    raise MemoryStoreError(f"write to {name} failed: {exc}", code="storage_write_failed") from exc
                log.debug(f"commit conflict on {name}, retry {attempt + 1}: {exc}")
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)
        if self._local_sync is not None:
            await asyncio.to_thread(self._local_sync.sync_table, name)
        self._note_write(name)
        return result

    async def add(self, name: str, rows: pa.Table, table: Any = None) -> None:
        """Append rows; committed (or journaled, during an outage) when this returns."""
        if rows.num_rows == 0:
            return

        async def direct() -> None:
            target = table or await self._table_for(name, rows.schema)
            await self._write(name, lambda: target.add(rows))

        await self._guarded_write(JournalEntry("add", name, key_column(name), rows), direct)

    async def upsert(self, name: str, key: str, rows: pa.Table, table: Any = None) -> None:
        """Insert or replace rows by ``key`` in one commit (LanceDB retries its own conflicts, then we do)."""
        if rows.num_rows == 0:
            return

        async def direct() -> None:
            target = table or await self._table_for(name, rows.schema)
            await self._write(name, lambda: target.merge_insert(key).when_matched_update_all()
                              .when_not_matched_insert_all().execute(rows))

        await self._guarded_write(JournalEntry("upsert", name, key, rows), direct)

    async def insert_new(self, name: str, key: str, rows: pa.Table) -> int:
        """Insert rows whose ``key`` is not in the table yet; returns how many were inserted (during an outage: how
        many this process did not know yet)."""

        async def direct() -> int:
            target = await self._table_for(name, rows.schema)
            result = await self._write(name, lambda: target.merge_insert(key).when_not_matched_insert_all()
                                       .execute(rows))
            return int(getattr(result, "num_inserted_rows", 0) or 0)

        entry = JournalEntry("insert_new", name, key, rows)
        known = set(self._overlay_keys(name)) if self.degraded else set()
        inserted = await self._guarded_write(entry, direct)
        return inserted if inserted is not None else sum(1 for r in entry.row_dicts if r.get(key) not in known)

    def _overlay_keys(self, name: str) -> list[Any]:
        key = key_column(name)
        return [r.get(key) for r in self._overlay(name, Where("true", ["true"]), [key], MAX_QUERY_ROWS)]

    async def delete(self, name: str, where: str, table: Any = None) -> None:
        async def direct() -> None:
            target = table or await self.table(name)
            await self._write(name, lambda: target.delete(str(where)))

        await self._guarded_write(JournalEntry("delete", name, where=Where.of(where)), direct)

    async def query(self, name: str, where: str, columns: list[str] | None = None, *, table: Any = None,
                    limit: int = MAX_QUERY_ROWS) -> list[dict[str, Any]]:
        """Rows matching ``where`` (built with the helpers in :mod:`.schema`)."""

        async def direct() -> list[dict[str, Any]]:
            q = (table or await self.table(name)).query().where(str(where)).limit(limit)
            if columns:
                q = q.select(columns)
            try:
                return (await q.to_arrow()).to_pylist()
            except Exception as exc:  # storage failure
                raise MemoryStoreError(f"read from {name} failed: {exc}", code="storage_read_failed") from exc

        return await self._guarded_read(name, where, columns, limit, direct)

    async def count(self, name: str, where: str | None = None) -> int:
        async def direct() -> int:
            return int(await (await self.table(name)).count_rows(str(where) if where is not None else None))

        if self.journal is None:
            return await direct()
        condition = where if where is not None else Where("true", ["true"])
        if not self.degraded:
            ok, counted = await self._attempt(direct)
            if ok:
                assert counted is not None
                return counted
        key = key_column(name)
        return len(self._overlay(name, condition, [key], MAX_QUERY_ROWS))

    async def nearest(self, name: str, vector: Any, where: str, limit: int,
                      columns: list[str]) -> list[dict[str, Any]]:
        """Cosine nearest neighbours among rows matching ``where`` (prefiltered, so the filter is exact). During an
        outage: none (semantic recall pauses)."""

        async def direct() -> list[dict[str, Any]]:
            table = await self.table(name)
            q = (table.vector_search(vector).distance_type("cosine").where(str(where))
                 .select([*columns, "_distance"]).limit(limit))
            try:
                return (await q.to_arrow()).to_pylist()
            except Exception as exc:  # storage failure
                raise MemoryStoreError(f"vector search failed: {exc}", code="storage_read_failed") from exc

        if self.journal is None:
            return await direct()
        if self.degraded:
            return []
        ok, rows = await self._attempt(direct)
        return rows if ok and rows is not None else []

    def _note_write(self, name: str) -> None:
        if self.degraded:
            return  # compaction waits until storage is healthy again
        super()._note_write(name)
