"""Messages and recall against real LanceDB: save (dicts and Messages), recall with paging / date range / vector
search, delete, replacement by id, tool messages, and 'nothing stored without both ids'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voiceserver.ids import InvalidIdError
from voiceserver.memory import LanceDBStore, Memory, MemoryStoreError, Message
from voiceserver.memory.schema import MESSAGES


@pytest.fixture
async def memory(tmp_path, models_dir):
    m = Memory(LanceDBStore(tmp_path / "mem"), embedder="wordllama", models_dir=models_dir,
               options={"last_messages": 10, "semantic_recall": {"top_k": 1, "message_range": 1}})
    await m.open()
    yield m
    await m.close()


async def test_save_dicts_and_messages_then_recall_in_order(memory):
    saved = await memory.save_messages([
        {"role": "user", "content": "Hello there", "thread_id": "t1", "resource_id": "r1"},
        Message("assistant", "Hi! How can I help?", "t1", "r1"),
        {"role": "user", "content": "Book a table", "thread_id": "t1"},  # resource comes from the thread
    ])
    assert [m.resource_id for m in saved] == ["r1", "r1", "r1"]
    result = await memory.recall("t1", "r1")
    assert [m.content for m in result.messages] == ["Hello there", "Hi! How can I help?", "Book a table"]
    assert result.total == 3 and not result.has_more
    assert all(isinstance(m, Message) and m.thread_id == "t1" for m in result.messages)
    assert [m.role for m in result.messages] == ["user", "assistant", "user"]


async def test_paging_and_date_range(memory):
    start = datetime(2024, 1, 1, tzinfo=UTC)
    await memory.save_messages([Message("user", f"message {i}", "t1", "r1", created_at=start + timedelta(minutes=i))
                                for i in range(7)])
    page = await memory.recall("t1", "r1", page=1, per_page=3)
    assert [m.content for m in page.messages] == ["message 3", "message 4", "message 5"]
    assert page.total == 7 and page.has_more
    ranged = await memory.recall("t1", "r1", date_range=(start + timedelta(minutes=2), start + timedelta(minutes=4)))
    assert [m.content for m in ranged.messages] == ["message 2", "message 3"]
    open_end = await memory.recall("t1", date_range={"start": start + timedelta(minutes=5)})
    assert [m.content for m in open_end.messages] == ["message 5", "message 6"]
    with pytest.raises(MemoryStoreError):
        await memory.recall("t1", date_range=("yesterday", None))


async def test_recall_with_vector_search_adds_hits_and_neighbours(memory):
    await memory.save_messages([Message("user", "My favorite color is blue.", "old", "r1"),
                                Message("assistant", "Noted, blue.", "old", "r1")])
    texts = ["The train leaves at nine.", "I need a taxi to the station.", "Bring an umbrella tomorrow."]
    await memory.save_messages([Message("user", t, "t1", "r1") for t in texts])
    result = await memory.recall("t1", "r1", page=0, per_page=1, vector_search_string="which colour do I like?")
    contents = [m.content for m in result.messages]
    assert "The train leaves at nine." in contents  # the page
    # The semantic hit from the caller's other thread, with its neighbour (message_range=1).
    assert "My favorite color is blue." in contents and "Noted, blue." in contents


async def test_nothing_is_stored_without_both_ids(memory):
    with pytest.raises(MemoryStoreError, match="thread"):
        await memory.save_messages([{"role": "user", "content": "hi", "resource_id": "r1"}])
    with pytest.raises(MemoryStoreError, match="resource"):
        await memory.save_messages([{"role": "user", "content": "hi", "thread_id": "brand-new"}])
    assert await memory.storage.count(MESSAGES) == 0
    assert await memory.get_thread_by_id("brand-new") is None
    assert (await memory.recall("brand-new")).messages == []


async def test_invalid_messages_are_refused(memory):
    bad = [
        {"role": "wizard", "content": "x", "thread_id": "t", "resource_id": "r"},
        {"role": "user", "content": "x", "thread_id": "t", "resource_id": "r", "type": "image"},
        {"role": "user", "content": 42, "thread_id": "t", "resource_id": "r"},
        {"role": "user", "content": "\udcff bad surrogate", "thread_id": "t", "resource_id": "r"},
        {"role": "user", "content": "x" * 300_000, "thread_id": "t", "resource_id": "r"},
        {"role": "user", "content": "x", "thread_id": "t", "resource_id": "r", "metadata": {"f": object()}},
    ]
    for message in bad:
        with pytest.raises(MemoryStoreError):
            await memory.save_messages([message])
    with pytest.raises(MemoryStoreError):
        await memory.save_messages("not a list")  # type: ignore[arg-type]
    assert await memory.storage.count(MESSAGES) == 0


async def test_tool_messages_and_replace_by_id(memory):
    call = Message("assistant", "weather(Paris)", "t1", "r1", type="tool-call",
                   metadata={"tool_call_id": "c1", "tool_name": "weather", "args": {"city": "Paris"}})
    result = Message("tool", "20 degrees", "t1", "r1", type="tool-result",
                     metadata={"tool_call_id": "c1", "tool_name": "weather", "result": {"celsius": 20}})
    answer = Message("assistant", "It is twenty degrees in Paris and", "t1", "r1", id="answer-1")
    await memory.save_messages([call, result, answer])
    # Barge-in: the assistant message is saved again with only what was heard; it replaces the first version.
    heard = Message("assistant", "It is twenty degrees", "t1", "r1", id="answer-1", created_at=answer.created_at)
    await memory.save_messages([heard])
    stored = (await memory.recall("t1", "r1")).messages
    assert [m.type for m in stored] == ["tool-call", "tool-result", "text"]
    assert stored[0].metadata["args"] == {"city": "Paris"} and stored[1].metadata["result"] == {"celsius": 20}
    assert stored[2].content == "It is twenty degrees"
    # An id of another caller's thread cannot be overwritten.
    with pytest.raises(MemoryStoreError, match="another thread"):
        await memory.save_messages([Message("user", "mine now", "t9", "r2", id="answer-1")])
    assert (await memory.recall("t1", "r1")).messages[2].content == "It is twenty degrees"


async def test_resaving_a_message_object_replaces_it(memory):
    answer = Message("assistant", "Your table is booked for eight and I also", "t1", "r1")  # generated id
    await memory.save_messages([Message("user", "Book it", "t1", "r1"), answer])
    answer.content = "Your table is booked for eight"  # what the caller heard before barging in
    await memory.save_messages([answer])
    stored = (await memory.recall("t1", "r1")).messages
    assert [m.content for m in stored] == ["Book it", "Your table is booked for eight"]
    assert await memory.storage.count(await memory._vectors()) == 2


async def test_delete_messages(memory):
    saved = await memory.save_messages([Message("user", f"m{i}", "t1", "r1") for i in range(4)])
    await memory.delete_messages([saved[1].id, saved[2].id])
    assert [m.content for m in (await memory.recall("t1")).messages] == ["m0", "m3"]
    vectors = await memory._vectors()
    assert await memory.storage.count(vectors) == 2
    with pytest.raises(InvalidIdError):
        await memory.delete_messages([saved[0].id, "x' OR '1'='1"])
    assert [m.content for m in (await memory.recall("t1")).messages] == ["m0", "m3"]


async def test_read_only_memory_stores_nothing(tmp_path, models_dir):
    store = LanceDBStore(tmp_path / "ro")
    writer = Memory(store, embedder=None, options={"working_memory": {"enabled": True}})
    await writer.save_messages([Message("user", "remember me", "t1", "r1")])
    reader = Memory(store, embedder=None, options={"read_only": True, "working_memory": {"enabled": True}})
    context = await reader.prepare(resource_id="r1", thread_id="t1", query=None)
    assert [m.content for m in context.history] == ["remember me"] and context.working_memory_tool is None
    await reader.save_messages([Message("user", "not stored", "t1", "r1")])
    context = await reader.prepare(resource_id="r1", thread_id="unknown", query=None)
    assert context.history == []
    assert await store.count(MESSAGES) == 1 and await reader.get_thread_by_id("unknown") is None
    with pytest.raises(MemoryStoreError, match="read_only"):
        await reader.update_working_memory("t1", "r1", working_memory="# x")
