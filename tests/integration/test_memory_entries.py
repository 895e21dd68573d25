"""Key/value memory scoped to a caller, and age-based cleanup, against real LanceDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voiceserver.memory import LanceDBStore, Memory, MemoryStoreError, Message


@pytest.fixture
async def memory(tmp_path, models_dir):
    m = Memory(LanceDBStore(tmp_path / "mem"), embedder="wordllama", models_dir=models_dir)
    yield m
    await m.close()


async def test_store_retrieve_replace_and_scope(memory):
    await memory.store("profile", "name", "Ada", resource_id="ada")
    await memory.store("profile", "prefs", {"drink": "tea", "sizes": [1, 2]}, resource_id="ada")
    assert await memory.retrieve("profile", "name", resource_id="ada") == "Ada"
    assert await memory.retrieve("profile", "prefs", resource_id="ada") == {"drink": "tea", "sizes": [1, 2]}
    await memory.store("profile", "name", "Ada Lovelace", resource_id="ada")
    assert await memory.retrieve("profile", "name", resource_id="ada") == "Ada Lovelace"
    assert await memory.retrieve("profile", "name", resource_id="bob") is None
    assert await memory.retrieve("other", "name", resource_id="ada") is None
    with pytest.raises(MemoryStoreError):
        await memory.store("profile", "bad", {1, 2}, resource_id="ada")  # not JSON


async def test_batch_store_and_search(memory):
    await memory.batch_store([{"namespace": "facts", "key": "pet", "value": "a grey cat called Moss"},
                              ("facts", "city", "lives in Lisbon"), ("facts", "job", "works as a nurse")],
                             resource_id="ada")
    await memory.store("facts", "pet", "a black dog called Rex", resource_id="bob")
    await memory.save_messages([Message("user", "I drive a red bicycle to work.", "t1", "ada")])
    hits = await memory.search("what animal do I have at home", resource_id="ada", top_k=2)
    assert hits[0].kind == "entry" and hits[0].key == "pet" and hits[0].value == "a grey cat called Moss"
    assert all(h.namespace != "facts" or h.value != "a black dog called Rex" for h in hits)
    bike = await memory.search("bicycle", resource_id="ada", top_k=1)
    assert bike[0].kind == "message" and bike[0].message.content == "I drive a red bicycle to work."
    assert hits[0].score >= hits[-1].score
    assert await memory.search("anything", resource_id="nobody") == []
    for bad in [[("a", "b")], [{"namespace": "a", "key": "b"}], "nope"]:
        with pytest.raises(MemoryStoreError):
            await memory.batch_store(bad, resource_id="ada")  # type: ignore[arg-type]


async def test_cleanup_by_age(memory):
    old = datetime.now(UTC) - timedelta(days=40)
    await memory.save_messages([Message("user", "ancient history", "t1", "ada", created_at=old),
                                Message("user", "fresh news", "t1", "ada")])
    await memory.save_messages([Message("user", "bob's old message", "t2", "bob", created_at=old)])
    await memory.store("notes", "k", "v", resource_id="ada")
    counts = await memory.cleanup(timedelta(days=30), resource_id="ada")
    assert counts == {"messages": 1, "entries": 0, "vectors": 1}
    assert [m.content for m in (await memory.recall("t1", "ada")).messages] == ["fresh news"]
    assert [m.content for m in (await memory.recall("t2", "bob")).messages] == ["bob's old message"]
    # Everyone, with a cut-off in the future: everything goes, entries included.
    counts = await memory.cleanup(datetime.now(UTC) + timedelta(seconds=5))
    assert counts == {"messages": 2, "entries": 1, "vectors": 3}  # two messages and the entry
    assert await memory.retrieve("notes", "k", resource_id="ada") is None
    with pytest.raises(MemoryStoreError):
        await memory.cleanup(-1)
