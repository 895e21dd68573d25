"""LanceDB storage: unwritable directories, durability under SIGKILL, concurrent writers (tasks and processes),
and background compaction that keeps every row."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voiceserver.memory import LanceDBStore, Memory, MemoryStoreError, Message
from voiceserver.memory.schema import MESSAGES

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {repo!r})
    from voiceserver.memory import LanceDBStore, Memory, Message

    async def main(uri, tag, turns):
        memory = Memory(LanceDBStore(uri, compact_every=8), embedder=None)
        for i in range(turns):
            await memory.save_messages([Message("user", f"{{tag}} question {{i}}", f"{{tag}}-thread", "shared-caller"),
                                        Message("assistant", f"{{tag}} answer {{i}}", f"{{tag}}-thread",
                                                "shared-caller")])
            print(f"acked {{i}}", flush=True)
        await memory.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


def writer_cmd(uri: Path, tag: str, turns: int) -> list[str]:
    return [sys.executable, "-c", WRITER.format(repo=str(REPO)), str(uri), tag, str(turns)]


async def test_a_path_that_cannot_be_a_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the memory directory should be")
    store = LanceDBStore(blocker / "memory")
    with pytest.raises(MemoryStoreError) as info:
        await store.open()
    assert info.value.code == "storage_not_writable" and str(blocker / "memory") in str(info.value)


def test_a_read_only_directory_is_a_clear_error(tmp_path):
    """chmod 555 and open as an unprivileged user (root ignores permissions, so a forked child drops to nobody)."""
    target = tmp_path / "ro"
    target.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(target, 0o555)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                asyncio.run(LanceDBStore(target / "memory").open())
                result = {"error": None}
            except MemoryStoreError as exc:
                result = {"error": str(exc), "code": exc.code}
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as pipe:
        result = json.loads(pipe.read())
    os.chmod(target, 0o755)
    assert result["code"] == "storage_not_writable"
    assert str(target / "memory") in result["error"] and "cannot be written" in result["error"]


async def test_every_acknowledged_turn_survives_sigkill(tmp_path):
    uri = tmp_path / "mem"
    proc = await asyncio.create_subprocess_exec(*writer_cmd(uri, "k", 10_000), stdout=subprocess.PIPE,
                                                stderr=subprocess.DEVNULL)
    acked = -1
    assert proc.stdout is not None
    async with asyncio.timeout(120):
        while acked < 12:
            line = (await proc.stdout.readline()).decode()
            assert line, "the writer died"
            acked = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)  # in the middle of the next write
    await proc.wait()
    memory = Memory(LanceDBStore(uri), embedder=None)
    stored = {m.content for m in (await memory.recall("k-thread", "shared-caller")).messages}
    for i in range(acked + 1):
        assert f"k question {i}" in stored and f"k answer {i}" in stored
    await memory.close()


async def test_two_processes_append_concurrently_without_losing_rows(tmp_path):
    uri = tmp_path / "mem"
    await LanceDBStore(uri).open()  # tables exist before the race
    procs = [await asyncio.create_subprocess_exec(*writer_cmd(uri, tag, 15), stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE) for tag in ("a", "b")]
    async with asyncio.timeout(180):
        results = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1].decode()[-2000:] for r in results]
    memory = Memory(LanceDBStore(uri), embedder=None)
    for tag in ("a", "b"):
        contents = [m.content for m in (await memory.recall(f"{tag}-thread", "shared-caller")).messages]
        assert len(contents) == 30 and contents[:2] == [f"{tag} question 0", f"{tag} answer 0"]
    await memory.close()


async def test_background_compaction_keeps_every_row_under_concurrent_writes(tmp_path):
    store = LanceDBStore(tmp_path / "mem", compact_every=4, target_rows_per_fragment=50)
    memory = Memory(store, embedder=None)

    async def caller(n: int) -> None:
        for i in range(12):
            await memory.save_messages([Message("user", f"c{n} m{i}", f"thread-{n}", f"caller-{n}")])

    await asyncio.gather(*(caller(n) for n in range(6)))
    doomed = (await memory.recall("thread-0", "caller-0")).messages[:6]
    await asyncio.gather(memory.delete_messages([m.id for m in doomed]), caller(6))
    await store.optimize()
    assert (await store.fragment_counts())[MESSAGES] < 6 * 12  # compacted: far fewer fragments than appends
    assert await store.count(MESSAGES) == 7 * 12 - 6
    for n in range(1, 7):
        assert [m.content for m in (await memory.recall(f"thread-{n}", f"caller-{n}")).messages] == [
            f"c{n} m{i}" for i in range(12)]
    assert [m.content for m in (await memory.recall("thread-0", "caller-0")).messages] == [
        f"c0 m{i}" for i in range(6, 12)]
    await memory.close()


async def test_compaction_commits_while_callers_keep_deleting_and_old_versions_are_dropped(tmp_path):
    """Found by the soak: with 50 callers writing, a merge of fragments that a delete touched at the same time was a
    commit conflict, compaction never committed, and versions and fragments grew without bound. Writes and the merge
    take turns now, and old versions go on every full pass."""
    store = LanceDBStore(tmp_path / "mem", compact_every=10_000, full_every=1, keep_versions_s=0)
    memory = Memory(store, embedder=None)
    stop = asyncio.Event()

    async def churn(n: int) -> None:  # save two messages, delete one of them, again and again
        i = 0
        while not stop.is_set():
            saved = await memory.save_messages([Message("user", f"c{n} m{i}", f"thread-{n}", f"caller-{n}"),
                                                Message("assistant", f"c{n} r{i}", f"thread-{n}", f"caller-{n}")])
            await memory.delete_messages([saved[0].id])
            i += 1

    async def compactions() -> None:
        for _ in range(6):
            await store.compact(MESSAGES, full=True)  # raises on a commit conflict
            await asyncio.sleep(0.05)
        stop.set()

    await memory.save_messages([Message("user", "first", "thread-0", "caller-0")])
    await asyncio.gather(compactions(), *(churn(n) for n in range(4)))
    await store.compact(MESSAGES, full=True)
    assert store.maintenance_errors == 0
    assert (await store.fragment_counts())[MESSAGES] <= 2
    table = store._tables[MESSAGES]
    assert len(await table.list_versions()) <= 3  # every older version was dropped
    await memory.close()


async def test_lancedbs_caches_are_bounded_by_the_storage_settings(tmp_path):
    """Found by the soak: LanceDB's default caches (6 GiB index, 1 GiB metadata) filled with the manifests of new
    versions and RSS grew ~70 MiB a minute. The store's caches stay within storage.index_cache_mib and
    storage.metadata_cache_mib."""
    from voiceserver.settings import Settings

    settings = Settings(lancedb_uri=str(tmp_path / "mem"), storage={"index_cache_mib": 1, "metadata_cache_mib": 1})
    store = LanceDBStore.from_settings(settings, maintenance=False)
    assert store.cache_bytes == (1 << 20, 1 << 20)
    memory = Memory(store, embedder=None)
    for i in range(60):  # each save is a new version with its own manifest
        await memory.save_messages([Message("user", f"m{i} " + "x" * 2000, "t1", "caller")])
        await memory.recall("t1", "caller")
    assert 0 < store.cache_size_bytes <= 2 * (1 << 20)
    unbounded = LanceDBStore(tmp_path / "other", maintenance=False, metadata_cache_bytes=None, index_cache_bytes=None)
    other = Memory(unbounded, embedder=None)
    for i in range(60):
        await other.save_messages([Message("user", f"m{i} " + "x" * 2000, "t1", "caller")])
        await other.recall("t1", "caller")
    assert unbounded.cache_size_bytes > store.cache_size_bytes  # the bound is what kept it small
    await memory.close()
    await other.close()


class HeldLiveWork:
    """Stands in for the server's LiveActivity: live work runs until the test ends it."""

    def __init__(self) -> None:
        self.idle = asyncio.Event()
        self.waited = 0

    async def wait_idle_async(self, timeout: float | None = None) -> bool:
        self.waited += 1
        await self.idle.wait()
        return True


async def test_compaction_waits_for_live_work_to_pause_and_runs_on_a_low_priority_thread(tmp_path):
    live = HeldLiveWork()
    store = LanceDBStore(tmp_path / "mem", compact_every=2, live_activity=live)
    memory = Memory(store, embedder=None)
    for i in range(4):
        await memory.save_messages([Message("user", f"m{i}", "thread-1", "caller-1")])
    for _ in range(50):
        if live.waited:
            break
        await asyncio.sleep(0.01)
    assert live.waited >= 1 and store._maintenance_counts == {}  # due, but held while live work runs
    live.idle.set()
    for _ in range(500):
        if store._maintenance_counts:
            break
        await asyncio.sleep(0.01)
    assert store._maintenance_counts, "compaction never ran after live work paused"
    nice = store._maintenance_executor().submit(lambda: os.getpriority(os.PRIO_PROCESS, 0)).result()
    assert nice >= 10  # the compaction thread yields the CPU to live turns
    assert os.getpriority(os.PRIO_PROCESS, 0) < nice  # the loop's own thread keeps its priority
    await memory.close()
    assert [m.content for m in (await Memory(LanceDBStore(tmp_path / "mem"), embedder=None)
                                .recall("thread-1", "caller-1")).messages] == ["m0", "m1", "m2", "m3"]
