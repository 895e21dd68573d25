"""fsync of what LanceDB wrote on local disk, for ``LanceDBStore(fsync=...)`` (setting ``storage.fsync``).

LanceDB commits a table version by writing its data files, a transaction file and the version's manifest through the
object_store crate; on local disk that is a temporary file renamed into place, without fsync. A write that returned
therefore survives SIGKILL of the process (the kernel has the pages) but not a power cut or a kernel crash, which may
lose the newest versions. Two ways to make the version durable before the write returns:

- ``"files"`` (``fsync=True``): after each commit, fsync every file of the table that was not synced yet, then each
  directory that gained an entry. Lance files are immutable once written, so a file is synced once; the set of synced
  paths is pruned to what still exists. Costs one disk flush per new file and directory, about 8 per turn (two
  tables), and touches nothing else.
- ``"filesystem"``: one ``syncfs`` of the filesystem holding the memory directory (Linux; ``os.sync`` elsewhere),
  shared by the writes that finished before it started. One flush per write, several times cheaper here, but it also
  flushes whatever else is dirty on that filesystem, so on a disk other programs write to heavily its latency follows
  theirs.

``scripts/bench_durability.py`` measures both against no fsync on the machine at hand (figures in
docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
import time
from pathlib import Path

MODES = ("files", "filesystem")


def _fsync(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs_call() -> object:
    """libc's syncfs(fd) (Linux), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


class LocalSync:
    """Makes the commits of the tables under ``root`` (a local LanceDB directory) durable, by ``mode`` (see the
    module notes). Blocking: call it in a thread."""

    def __init__(self, root: str | Path, mode: str = "files"):
        if mode not in MODES:
            raise ValueError(f"fsync mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.root = Path(root)
        self.mode = mode
        self._files: dict[str, set[str]] = {}
        self._dirs: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._syncfs = _syncfs_call() if mode == "filesystem" else None
        self._last_started = 0.0
        self.synced_files = 0
        self.syncs = 0

    def sync_table(self, name: str) -> int:
        """Make the table's latest commit durable; returns how many files were fsynced ("files" mode)."""
        if self.mode == "filesystem":
            self._sync_filesystem()
            return 0
        return self._sync_files(name)

    def _sync_filesystem(self) -> None:
        asked = time.monotonic()
        with self._lock:
            if self._last_started > asked:
                return  # a sync that started after this write had finished covers it
            started = time.monotonic()
            if self._syncfs is not None:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    if self._syncfs(fd) != 0:  # type: ignore[operator]
                        raise OSError(ctypes.get_errno(), "syncfs failed")
                finally:
                    os.close(fd)
            else:
                os.sync()
            self._last_started = started
            self.syncs += 1

    def _sync_files(self, name: str) -> int:
        table_dir = self.root / f"{name}.lance"
        if not table_dir.is_dir():
            return 0
        with self._lock:
            known_files = self._files.get(name, set())
            known_dirs = self._dirs.get(name, set())
            files: set[str] = set()
            dirs: set[str] = set()
            dirty: set[str] = set()
            for dirpath, _dirnames, filenames in os.walk(table_dir):
                dirs.add(dirpath)
                if dirpath not in known_dirs:
                    dirty.add(os.path.dirname(dirpath))  # a new directory: its parent gained an entry
                for filename in filenames:
                    path = os.path.join(dirpath, filename)
                    if path in known_files:
                        files.add(path)
                        continue
                    try:
                        _fsync(path)
                    except FileNotFoundError:
                        continue  # another writer's temporary file, renamed meanwhile, or one cleanup removed
                    files.add(path)
                    dirty.add(dirpath)
            for directory in sorted(dirty, key=len, reverse=True):  # deepest first
                with contextlib.suppress(FileNotFoundError):
                    _fsync(directory, directory=True)
            new = len(files - known_files)
            self._files[name], self._dirs[name] = files, dirs
            self.synced_files += new
            self.syncs += 1
            return new
