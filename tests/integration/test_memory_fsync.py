"""storage.fsync on local disk: each commit's files are synced before the write returns (files mode), or the
filesystem is (filesystem mode); writes and reads work the same. A power cut cannot be simulated here: what is
checked is that every file the commit left on disk went through fsync before the write returned."""

from __future__ import annotations

import os

import pytest

from voiceserver.memory import LanceDBStore, Memory, Message
from voiceserver.memory.local_sync import LocalSync
from voiceserver.memory.schema import MESSAGES
from voiceserver.settings import Settings, StorageConfig


def table_files(root, name: str) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root / f"{name}.lance") for f in files}


async def test_files_mode_syncs_every_file_of_each_commit(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    store = LanceDBStore(tmp_path / "mem", fsync=True)
    memory = Memory(store, embedder=None)
    await memory.open()
    monkeypatch.setattr(os, "fsync", recording_fsync)
    for i in range(3):
        await memory.save_messages([Message("user", f"turn {i}", "call-1", "caller-1")])
        on_disk = table_files(tmp_path / "mem", MESSAGES)
        assert on_disk <= set(synced), sorted(on_disk - set(synced))
    assert str(tmp_path / "mem" / f"{MESSAGES}.lance" / "_versions") in synced, "directories are synced too"
    before = len(synced)
    await memory.save_messages([Message("user", "one more", "call-1", "caller-1")])
    new_files = len(synced) - before
    assert 0 < new_files < 20, "only the new commit's files and their directories are synced again"
    monkeypatch.undo()
    assert [m.content for m in (await memory.recall("call-1", "caller-1")).messages] == [
        "turn 0", "turn 1", "turn 2", "one more"]
    await memory.close()


async def test_filesystem_mode_runs_one_syncfs_per_write(tmp_path):
    store = LanceDBStore(tmp_path / "mem", fsync="filesystem")
    memory = Memory(store, embedder=None)
    await memory.open()
    for i in range(3):
        await memory.save_messages([Message("user", f"turn {i}", "call-1", "caller-1")])
    assert store._local_sync.mode == "filesystem" and store._local_sync.syncs >= 3
    assert (await memory.recall("call-1", "caller-1")).total == 3
    await memory.close()


def test_fsync_settings_and_modes(tmp_path):
    assert LanceDBStore(tmp_path, fsync=True).fsync == "files"
    assert LanceDBStore(tmp_path).fsync is None
    assert LanceDBStore("s3://bucket/mem", fsync=True).fsync is None, "an object store is durable on ack"
    assert Settings(storage=StorageConfig(fsync="filesystem")).storage.fsync == "filesystem"
    assert LanceDBStore.from_settings(Settings(lancedb_uri=str(tmp_path / "m"),
                                               storage=StorageConfig(fsync=True))).fsync == "files"
    with pytest.raises(ValueError):
        LocalSync(tmp_path, "sometimes")
