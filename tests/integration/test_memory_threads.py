"""Threads against real LanceDB in tmp_path: create, get, list (paging, order), update, delete, clone, owners."""

from __future__ import annotations

import asyncio

import pytest

from voiceserver.memory import LanceDBStore, Memory, Message, ThreadNotFoundError, ThreadOwnerError
from voiceserver.memory.schema import MESSAGES, eq


@pytest.fixture
async def memory(tmp_path, models_dir):
    m = Memory(LanceDBStore(tmp_path / "mem"), embedder="wordllama", models_dir=models_dir,
               options={"last_messages": 10, "semantic_recall": {"top_k": 2, "message_range": 0}})
    await m.open()
    yield m
    await m.close()


async def test_create_get_and_idempotent_create(memory):
    thread = await memory.create_thread("user-1", "conv-1", title="First", metadata={"channel": "phone"})
    assert (thread.id, thread.resource_id, thread.title, thread.metadata) == ("conv-1", "user-1", "First",
                                                                               {"channel": "phone"})
    fetched = await memory.get_thread_by_id("conv-1")
    assert fetched is not None and fetched.resource_id == "user-1" and fetched.title == "First"
    again = await memory.create_thread("user-1", "conv-1", title="ignored")
    assert again.title == "First"  # an existing thread is returned as it is
    generated = await memory.create_thread("user-1")
    assert generated.id.startswith("thread_") and generated.id != "conv-1"
    assert await memory.get_thread_by_id("nope") is None


async def test_owner_never_changes(memory):
    await memory.create_thread("alice", "shared-id")
    expected = "Thread shared-id is for resource alice but resource mallory was queried"
    with pytest.raises(ThreadOwnerError, match=expected):
        await memory.create_thread("mallory", "shared-id")
    with pytest.raises(ThreadOwnerError, match=expected):
        await memory.prepare(resource_id="mallory", thread_id="shared-id", query="hello")
    with pytest.raises(ThreadOwnerError, match=expected):
        await memory.save_messages([Message("user", "let me in", "shared-id", "mallory")])
    with pytest.raises(ThreadOwnerError, match=expected):
        await memory.recall("shared-id", "mallory")
    # A fresh Memory on the same directory (no owner cache) enforces the same.
    fresh = Memory(memory.storage, embedder=None)
    with pytest.raises(ThreadOwnerError, match=expected):
        await fresh.prepare(resource_id="mallory", thread_id="shared-id", query=None)
    assert (await memory.get_thread_by_id("shared-id")).resource_id == "alice"
    assert await memory.storage.count(MESSAGES) == 0


async def test_list_threads_paging_and_order(memory):
    for i in range(5):
        await memory.create_thread("user-1", f"t{i}", title=f"T{i}")
        await asyncio.sleep(0.002)
    await memory.create_thread("user-2", "other")
    # A message makes t1 the most recently updated.
    await memory.save_messages([Message("user", "bump", "t1", "user-1")])
    page = await memory.list_threads("user-1", page=0, per_page=2)
    assert page.total == 5 and page.has_more and [t.id for t in page.threads] == ["t1", "t4"]
    last = await memory.list_threads("user-1", page=2, per_page=2)
    assert [t.id for t in last.threads] == ["t0"] and not last.has_more
    oldest_first = await memory.list_threads("user-1", order_by="created_at", direction="asc")
    assert [t.id for t in oldest_first.threads] == ["t0", "t1", "t2", "t3", "t4"]
    assert [t.id for t in (await memory.list_threads("user-2")).threads] == ["other"]
    assert (await memory.list_threads("nobody")).total == 0
    with pytest.raises(Exception, match="order_by"):
        await memory.list_threads("user-1", order_by="title")


async def test_update_thread(memory):
    await memory.create_thread("user-1", "conv", title="Old", metadata={"a": 1})
    updated = await memory.update_thread("conv", title="New")
    assert updated.title == "New" and updated.metadata == {"a": 1}
    updated = await memory.update_thread("conv", metadata={"b": 2})
    assert updated.title == "New" and updated.metadata == {"b": 2}
    fetched = await memory.get_thread_by_id("conv")
    assert (fetched.title, fetched.metadata, fetched.resource_id) == ("New", {"b": 2}, "user-1")
    with pytest.raises(ThreadNotFoundError):
        await memory.update_thread("missing", title="x")


async def test_delete_thread_removes_messages_and_vectors(memory):
    await memory.save_messages([Message("user", "My favorite color is blue.", "doomed", "user-1"),
                                Message("user", "I live in Lisbon.", "kept", "user-1")])
    vectors = await memory._vectors()
    assert await memory.storage.count(vectors, eq("thread_id", "doomed")) == 1
    await memory.delete_thread("doomed")
    assert await memory.get_thread_by_id("doomed") is None
    assert await memory.storage.count(MESSAGES, eq("thread_id", "doomed")) == 0
    assert await memory.storage.count(vectors, eq("thread_id", "doomed")) == 0
    assert [m.content for m in (await memory.recall("kept", "user-1")).messages] == ["I live in Lisbon."]
    context = await memory.prepare(resource_id="user-1", thread_id="new", query="what colour do I like")
    assert all("blue" not in m.content for m in context.recalled)
    await memory.delete_thread("doomed")  # deleting twice is fine


async def test_clone_thread_copies_messages_vectors_and_owner(memory):
    await memory.save_messages([Message("user", "My favorite color is blue.", "orig", "user-1"),
                                Message("assistant", "Blue is lovely.", "orig", "user-1")])
    cloned = await memory.clone_thread("orig", "copy")
    assert cloned.thread.id == "copy" and cloned.thread.resource_id == "user-1"
    assert [m.content for m in cloned.messages] == ["My favorite color is blue.", "Blue is lovely."]
    original_ids = {m.id for m in (await memory.recall("orig")).messages}
    copied = (await memory.recall("copy", "user-1")).messages
    assert [m.content for m in copied] == ["My favorite color is blue.", "Blue is lovely."]
    assert not original_ids & {m.id for m in copied}
    await memory.delete_thread("orig")
    hits = (await memory.recall("copy", "user-1", vector_search_string="what colour do I like")).messages
    assert any("blue" in m.content for m in hits)
    with pytest.raises(ThreadOwnerError):
        await memory.recall("copy", "user-2")
    with pytest.raises(ThreadNotFoundError):
        await memory.clone_thread("orig")
