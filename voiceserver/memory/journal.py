"""The local journal: writes that storage could not take yet, kept on local disk until it can.

One append-only file per process, ``<dir>/journal-<id>.wal``, held with an exclusive ``flock`` while the process
lives. Each record is ``b"VSJ1" | u32 length | u32 crc32 | payload`` (little endian), the payload a u32 header
length, a JSON header (op, table, key column, filter, time) and the rows as an Arrow IPC stream. :meth:`append`
returns once the record is written and ``fsync``-ed: an acknowledged turn survives SIGKILL and a power cut.

A record cut short by a crash mid-append (it was never acknowledged) ends the file: it and anything after it is
dropped when the file is read. A file whose lock can be taken belongs to a process that died: the next store to open
the same directory adopts it (copies its records into its own file, then deletes it) and replays them.

Bounded: at most ``max_entries`` records and ``max_bytes`` bytes are pending; past that :meth:`append` raises
``MemoryStoreError(code="storage_journal_full")``. After a flush the file is rewritten with what is still pending
(or truncated when nothing is), so it never grows past the bounds.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..logs import get_logger
from .schema import Where
from .types import MemoryStoreError

log = get_logger("MEMORY")

MAGIC = b"VSJ1"
RECORD_HEAD = struct.Struct("<4sII")
OPS = ("add", "upsert", "insert_new", "delete")


@dataclass
class JournalEntry:
    """One write: ``op`` on ``table``; rows for add / upsert / insert_new (keyed by ``key``), a filter for delete."""

    op: str
    table: str
    key: str | None = None
    rows: pa.Table | None = None
    where: Where | None = None
    at: float = field(default_factory=time.time)
    _pylist: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown journal op {self.op!r}")

    @property
    def row_dicts(self) -> list[dict[str, Any]]:
        if self._pylist is None:
            self._pylist = self.rows.to_pylist() if self.rows is not None else []
        return self._pylist

    def encode(self) -> bytes:
        header = json.dumps({"op": self.op, "table": self.table, "key": self.key, "at": self.at,
                             "where": self.where.spec if self.where is not None else None}).encode()
        body = b""
        if self.rows is not None:
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, self.rows.schema) as writer:
                writer.write_table(self.rows)
            body = sink.getvalue()
        payload = struct.pack("<I", len(header)) + header + body
        return RECORD_HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> JournalEntry:
        (header_len,) = struct.unpack_from("<I", payload)
        header = json.loads(payload[4:4 + header_len])
        body = payload[4 + header_len:]
        rows = pa.ipc.open_stream(body).read_all() if body else None
        where = Where.from_spec(header["where"]) if header.get("where") is not None else None
        return cls(header["op"], header["table"], header.get("key"), rows, where, header.get("at", time.time()))


def read_records(data: bytes) -> tuple[list[JournalEntry], int]:
    """The entries of a journal file's bytes, and the length of its valid prefix (a torn tail is left out)."""
    entries: list[JournalEntry] = []
    offset = 0
    while offset + RECORD_HEAD.size <= len(data):
        magic, length, crc = RECORD_HEAD.unpack_from(data, offset)
        start = offset + RECORD_HEAD.size
        payload = data[start:start + length]
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            break
        try:
            entries.append(JournalEntry.decode(payload))
        except Exception as exc:  # noqa: BLE001 - a record that cannot be decoded ends the valid part
            log.error(f"journal record at byte {offset} cannot be read ({exc}); it and what follows are dropped")
            break
        offset = start + length
    return entries, offset


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StorageJournal:
    """The append-only journal of one store (see the module notes). Blocking calls: run them in a thread."""

    def __init__(self, directory: str | Path, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024):
        self.directory = Path(directory)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: list[JournalEntry] = []  # pending, in order
        self.bytes = 0
        self.path: Path | None = None
        self._fd: int | None = None

    @property
    def pending(self) -> int:
        return len(self.entries)

    def open(self) -> list[JournalEntry]:
        """Create and lock this process's file; adopt the files of processes that died. Returns what is pending."""
        if self._fd is not None:
            return self.entries
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.path = self.directory / f"journal-{uuid.uuid4().hex}.wal"
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_dir(self.directory)
            adopted = self._adopt()
        except OSError as exc:
            raise MemoryStoreError(f"the storage journal in {self.directory} cannot be opened "
                                   f"({exc.strerror or exc}): give the server write access or set "
                                   f"storage.journal_dir", code="storage_journal_failed") from exc
        if adopted:
            log.warning(f"adopted {len(self.entries)} journaled writes of a process that stopped",
                        fields={"journal": str(self.directory), "files": adopted})
        return self.entries

    def _adopt(self) -> int:
        """Move the records of unlocked (orphaned) journal files into ours, then delete those files."""
        assert self._fd is not None and self.path is not None
        orphans = []
        for other in sorted(self.directory.glob("journal-*.wal"), key=lambda p: p.stat().st_mtime):
            if other == self.path:
                continue
            fd = os.open(other, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # a live process holds it
                continue
            try:
                with open(fd, "rb", closefd=False) as f:
                    entries, _valid = read_records(f.read())
            finally:
                orphans.append((other, fd))
            if entries:
                self._write_records(entries)
        for other, fd in orphans:
            other.unlink(missing_ok=True)
            os.close(fd)
        for stale in self.directory.glob("journal-*.tmp"):  # a rewrite a crash interrupted: its records are in
            with contextlib.suppress(OSError):              # the .wal file it was made from
                fd = os.open(stale, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    stale.unlink()
                finally:
                    os.close(fd)
        if orphans:
            _fsync_dir(self.directory)
        return len(orphans)

    def _write_records(self, entries: list[JournalEntry]) -> None:
        assert self._fd is not None
        data = b"".join(e.encode() for e in entries)
        os.write(self._fd, data)
        os.fsync(self._fd)
        self.entries.extend(entries)
        self.bytes += len(data)

    def append(self, entry: JournalEntry) -> None:
        """Write one entry and fsync it. Raises MemoryStoreError ``storage_journal_full`` past the bounds."""
        if self._fd is None:
            raise MemoryStoreError("the storage journal is not open", code="storage_journal_failed")
        record = entry.encode()
        if len(self.entries) >= self.max_entries or self.bytes + len(record) > self.max_bytes:
            raise MemoryStoreError(
                f"storage is unreachable and its local journal is full ({len(self.entries)} writes, {self.bytes} "
                f"bytes; limits storage.journal_max_entries={self.max_entries}, storage.journal_max_bytes="
                f"{self.max_bytes}): this write is refused", code="storage_journal_full")
        try:
            os.write(self._fd, record)
            os.fsync(self._fd)
        except OSError as exc:
            raise MemoryStoreError(f"the storage journal cannot be written ({exc.strerror or exc})",
                                   code="storage_journal_failed") from exc
        self.entries.append(entry)
        self.bytes += len(record)

    def flushed(self, count: int) -> None:
        """The first ``count`` pending entries are in storage now: keep only the rest on disk."""
        if count <= 0 or self._fd is None or self.path is None:
            return
        self.entries = self.entries[count:]
        if not self.entries:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self.bytes = 0
            return
        # Rewrite what is still pending next to the file, then swap it in (atomic rename), keeping our lock on it.
        data = b"".join(e.encode() for e in self.entries)
        fresh = self.path.with_suffix(".tmp")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, data)
            os.fsync(fd)
            os.replace(fresh, self.path)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        old, self._fd = self._fd, fd
        os.close(old)
        self.bytes = len(data)

    def close(self) -> None:
        """Release the file; an empty journal file is removed (a non-empty one is adopted at the next start)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if not self.entries and self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(fd)
