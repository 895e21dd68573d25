"""fsync of what LanceDB wrote on local disk, for ``LanceDBStore(fsync=True)`` (setting ``storage.fsync``).

LanceDB commits a table version by writing its data files, a transaction file and the version's manifest through the
object_store crate; on local disk that is a temporary file renamed into place, without fsync. A write that returned
therefore survives SIGKILL of the process (the kernel has the pages) but not a power cut or a kernel crash, which may
lose the newest versions. With fsync on, after each commit every file of the table that was not synced yet is
fsynced, then each directory that gained an entry: the version is on disk when the write returns. Lance files are
immutable once written, so a file is synced once; the set of synced paths is pruned to what still exists.

The cost is one fsync per new file plus one per touched directory, a few per write (``scripts/bench_memory.py
--fsync`` prints it): it is the disk's flush latency, which on a server SSD is tens to hundreds of microseconds and on
a consumer disk or a network volume milliseconds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _fsync(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalSync:
    """Syncs the files of the tables under ``root`` (a local LanceDB directory). Blocking: call it in a thread."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._files: dict[str, set[str]] = {}
        self._dirs: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.synced_files = 0

    def sync_table(self, name: str) -> int:
        """fsync the table's new files and the directories that hold them; returns how many files were synced."""
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
                    files.add(path)
                    if path not in known_files:
                        _fsync(path)
                        dirty.add(dirpath)
            for directory in sorted(dirty, key=len, reverse=True):  # deepest first
                if os.path.isdir(directory):
                    _fsync(directory, directory=True)
            new = len(files - known_files)
            self._files[name], self._dirs[name] = files, dirs
            self.synced_files += new
            return new
