"""Storage unreachable: LanceDB on moto S3 behind the fault proxy, blackholed. Writes wait in the local journal and
are flushed in order when storage answers; reads are served from the cache and the journal; a store that starts
during an outage works and catches up; a full journal is a clear error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest

from voiceserver.memory import LanceDBStore, Memory, MemoryStoreError, Message
from voiceserver.memory.schema import MESSAGES
from voiceserver.runs.store import RunRecord
from voiceserver.testing.faults import FaultProxy
from voiceserver.testing.processes import moto_s3

URI = "s3://voice-outage/memory"
MEMORY_OPTIONS = {"last_messages": 20, "semantic_recall": {"enabled": False},
                  "working_memory": {"enabled": True, "scope": "resource"}}


@pytest.fixture
async def s3() -> AsyncIterator[tuple[dict, FaultProxy]]:
    """moto S3 with the fault proxy in front; the options point LanceDB at the proxy, with short client timeouts
    so calls left on the dead link end soon."""
    with moto_s3("voice-outage") as options:
        async with FaultProxy(options["aws_endpoint"]) as proxy:
            yield {**options, "aws_endpoint": proxy.url, "timeout": "3s", "connect_timeout": "1s",
                   "client_max_retries": "1", "client_retry_timeout": "4"}, proxy


def store_for(options: dict, journal_dir, **kwargs) -> LanceDBStore:
    return LanceDBStore(URI, storage_options=options, journal_dir=journal_dir, op_timeout_s=0.5,
                        probe_interval_s=0.2, **kwargs)


async def until(condition, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def said(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


async def test_an_outage_mid_conversation_loses_nothing_and_flushes_in_order(s3, tmp_path):
    options, proxy = s3
    store = store_for(options, tmp_path / "journal")
    memory = Memory(store, embedder=None, options=MEMORY_OPTIONS)
    await memory.open()
    await memory.save_messages([Message("user", "before 1", "call-1", "ada"), Message("assistant", "reply 1",
                                                                                     "call-1", "ada")])
    await memory.update_working_memory("call-1", "ada", working_memory="# User\n- Name: Ada\n")
    assert said((await memory.recall("call-1", "ada")).messages) == ["before 1", "reply 1"]

    outage = proxy.blackhole()
    started = time.perf_counter()
    await memory.save_messages([Message("user", "during 2", "call-1", "ada")])  # noticed: probe, then journal
    noticed_s = time.perf_counter() - started
    await memory.save_messages([Message("assistant", "reply 2", "call-1", "ada")])  # straight to the journal
    await memory.update_working_memory("call-1", "ada", working_memory="# User\n- Name: Ada\n- City: Paris\n")
    await memory.save_messages([Message("user", "new call", "call-2", "ada")])  # a thread created in the outage
    doomed = (await memory.recall("call-1", "ada")).messages[0]
    await memory.delete_messages([doomed.id])
    health = store.health()
    assert health["state"] == "degraded" and health["pending_writes"] >= 5, health
    assert noticed_s < 5, "an unanswered write is noticed within the op timeout plus a probe"
    # Reads during the outage: what this process read or wrote, with the journal applied in order.
    assert said((await memory.recall("call-1", "ada")).messages) == ["reply 1", "during 2", "reply 2"]
    assert said((await memory.recall("call-2", "ada")).messages) == ["new call"]
    assert "City: Paris" in await memory.get_working_memory("call-1", "ada")
    assert (await memory.list_threads("ada")).total == 2
    assert proxy.counts["blackhole"] > 0

    proxy.remove(outage)
    await until(lambda: store.health()["state"] == "ok")
    assert store.health()["flushed_writes"] == health["pending_writes"]
    # A second process's view (no cache, no journal) reads it all from S3, exactly once, in order.
    other = Memory(LanceDBStore(URI, storage_options=options), embedder=None, options=MEMORY_OPTIONS)
    assert said((await other.recall("call-1", "ada")).messages) == ["reply 1", "during 2", "reply 2"]
    assert said((await other.recall("call-2", "ada")).messages) == ["new call"]
    assert "City: Paris" in await other.get_working_memory("call-1", "ada")
    assert await other.storage.count(MESSAGES) == 4
    await other.close()
    await memory.close()
    assert not list((tmp_path / "journal").rglob("journal-*.wal")), "a flushed journal leaves no file"


async def test_a_store_that_starts_during_an_outage_catches_up(s3, tmp_path):
    options, proxy = s3
    await LanceDBStore(URI, storage_options=options).open()  # the tables exist on S3
    outage = proxy.blackhole()
    store = store_for(options, tmp_path / "journal")
    memory = Memory(store, embedder=None, options=MEMORY_OPTIONS)
    await memory.open()  # does not raise: degraded, probing
    assert store.health()["state"] == "degraded"
    await memory.save_messages([Message("user", "said while down", "call-9", "bob")])
    assert said((await memory.recall("call-9", "bob")).messages) == ["said while down"]
    await store.save_run(RunRecord("agent", "run-1", "Assistant", "suspended", {"step": 1}))
    assert (await store.load_run("agent", "run-1")).status == "suspended"
    with pytest.raises(MemoryStoreError) as claim:  # a claim cannot wait in a journal
        await store.claim_run(RunRecord("agent", "run-1", "Assistant", "running", {}), expect_status="suspended",
                              expect_updated_at=0.0)
    assert claim.value.code == "storage_unavailable"
    proxy.remove(outage)
    await until(lambda: store.health()["state"] == "ok")
    await asyncio.sleep(1.1)  # another reader sees new versions within read_consistency_s
    other = LanceDBStore(URI, storage_options=options)
    assert said((await Memory(other, embedder=None).recall("call-9", "bob")).messages) == ["said while down"]
    assert (await other.load_run("agent", "run-1")).snapshot == {"step": 1}
    await other.close()
    await memory.close()


async def test_a_full_journal_refuses_writes_with_a_clear_error(s3, tmp_path):
    options, proxy = s3
    store = store_for(options, tmp_path / "journal", journal_max_entries=2)
    memory = Memory(store, embedder=None, options=MEMORY_OPTIONS)
    await memory.open()
    proxy.blackhole()
    await memory.save_messages([Message("user", "one", "call-f", "cy")])  # thread insert + message: two entries
    with pytest.raises(MemoryStoreError) as info:
        await memory.save_messages([Message("user", "two", "call-f", "cy")])
    assert info.value.code == "storage_journal_full"
    assert "journal_max_entries=2" in str(info.value)
    proxy.clear()
    await until(lambda: store.health()["state"] == "ok")
    await memory.close()


async def test_a_real_storage_error_is_still_raised(s3, tmp_path):
    options, proxy = s3
    store = store_for(options, tmp_path / "journal")
    await store.open()
    with pytest.raises(MemoryStoreError) as info:  # storage answers the probe, so the write's own error is raised
        await store.add(MESSAGES, pa.table({"not_a_column": [1]}))
    assert info.value.code == "storage_write_failed"
    with pytest.raises(MemoryStoreError) as unknown:
        await store.add("no_such_table", pa.table({"x": [1]}))
    assert "no_such_table" in str(unknown.value)
    assert store.health()["state"] == "ok" and store.health()["pending_writes"] == 0
    await store.close()


async def test_vectors_written_during_an_outage_reach_semantic_recall_after_it(s3, tmp_path, models_dir):
    options, proxy = s3
    recall = {"last_messages": 2, "semantic_recall": {"top_k": 1, "message_range": 0, "scope": "resource",
                                                      "threshold": None}}
    memory = Memory(store_for(options, tmp_path / "journal"), embedder="wordllama", models_dir=models_dir,
                    options=recall)
    await memory.open()
    outage = proxy.blackhole()
    await memory.save_messages([Message("user", "My favourite colour is blue.", "call-a", "dee")])
    context = await memory.prepare(resource_id="dee", thread_id="call-b", query="which colour do I like?")
    assert context.recalled == [], "semantic recall pauses during an outage"
    proxy.remove(outage)
    await until(lambda: memory.storage.health()["state"] == "ok")
    await asyncio.sleep(1.1)
    other = Memory(LanceDBStore(URI, storage_options=options), embedder="wordllama", models_dir=models_dir,
                   options=recall)
    context = await other.prepare(resource_id="dee", thread_id="call-c", query="which colour do I like?")
    assert [m.content for m in context.recalled] == ["My favourite colour is blue."]
    await other.close()
    await memory.close()


async def test_a_journal_left_by_a_dead_process_is_replayed_at_start(s3, tmp_path):
    import os

    options, proxy = s3
    store = store_for(options, tmp_path / "journal")
    memory = Memory(store, embedder=None, options=MEMORY_OPTIONS)
    await memory.open()
    outage = proxy.blackhole()
    await memory.save_messages([Message("user", "kept 1", "call-d", "eve")])
    await memory.save_messages([Message("user", "kept 2", "call-d", "eve")])
    pending = store.health()["pending_writes"]
    # The process dies: its probing stops, and its journal file is let go (the lock goes with the process).
    store._recovery.cancel()
    os.close(store.journal._fd)
    store.journal._fd = None
    proxy.remove(outage)
    fresh = store_for(options, tmp_path / "journal")
    await fresh.open()  # adopts the file and replays it before it returns
    assert fresh.health() == {**fresh.health(), "state": "ok", "pending_writes": 0, "flushed_writes": pending}
    assert said((await Memory(fresh, embedder=None).recall("call-d", "eve")).messages) == ["kept 1", "kept 2"]
    await fresh.close()
