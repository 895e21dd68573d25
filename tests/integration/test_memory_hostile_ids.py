"""Hostile ids at every public entry point: each is a clear error, and no other caller's data is read."""

from __future__ import annotations

import pytest

from voiceserver.ids import InvalidIdError
from voiceserver.memory import LanceDBStore, Memory, Message
from voiceserver.memory.schema import MESSAGES
from voiceserver.runs.store import RunRecord

HOSTILE = ["x' OR '1'='1", "../../etc", "", "a" * 10_000, b"\xff\xfe\xfd", "victim' --", "v%27", "a\nb", "\udcff"]


@pytest.fixture
async def memory(tmp_path, models_dir):
    m = Memory(LanceDBStore(tmp_path / "mem"), embedder="wordllama", models_dir=models_dir,
               options={"semantic_recall": {"top_k": 3}, "working_memory": {"enabled": True}})
    await m.save_messages([Message("user", "My secret PIN is 4321 and my favorite color is blue.", "victim-thread",
                                   "victim")])
    await m.update_working_memory("victim-thread", "victim", working_memory="# User\n- Name: Victim\n")
    await m.store("notes", "pin", "4321", resource_id="victim")
    yield m
    await m.close()


def calls(memory: Memory, bad):
    """Every public entry point with ``bad`` in one id position."""
    msg = {"role": "user", "content": "hi"}
    return [
        lambda: memory.prepare(resource_id=bad, thread_id="t", query="what is my PIN"),
        lambda: memory.prepare(resource_id="attacker", thread_id=bad, query="what is my PIN"),
        lambda: memory.create_thread(bad),
        lambda: memory.create_thread("attacker", bad),
        lambda: memory.get_thread_by_id(bad),
        lambda: memory.list_threads(bad),
        lambda: memory.update_thread(bad, title="x"),
        lambda: memory.delete_thread(bad),
        lambda: memory.clone_thread(bad),
        lambda: memory.clone_thread("victim-thread", bad),
        lambda: memory.save_messages([{**msg, "thread_id": bad, "resource_id": "attacker"}]),
        lambda: memory.save_messages([{**msg, "thread_id": "t", "resource_id": bad}]),
        lambda: memory.save_messages([{**msg, "thread_id": "t", "resource_id": "attacker", "id": bad}]),
        lambda: memory.recall(bad),
        lambda: memory.recall("victim-thread", bad),
        lambda: memory.delete_messages([bad]),
        lambda: memory.get_working_memory(bad, "attacker"),
        lambda: memory.get_working_memory(None, bad),
        lambda: memory.update_working_memory(None, bad, working_memory="# x"),
        lambda: memory.store(bad, "k", 1, resource_id="attacker"),
        lambda: memory.store("ns", bad, 1, resource_id="attacker"),
        lambda: memory.store("ns", "k", 1, resource_id=bad),
        lambda: memory.retrieve("notes", "pin", resource_id=bad),
        lambda: memory.retrieve(bad, "pin", resource_id="victim"),
        lambda: memory.search("PIN", resource_id=bad),
        lambda: memory.batch_store([("ns", bad, 1)], resource_id="attacker"),
        lambda: memory.cleanup(0, resource_id=bad),
        lambda: memory.after_turn(resource_id=bad, thread_id="t", messages=[]),
        lambda: memory.storage.load_run("agent", bad),
        lambda: memory.storage.delete_run("agent", bad),
        lambda: memory.storage.save_run(RunRecord("agent", bad, "owner", "suspended", {})),
        lambda: memory.storage.list_runs("agent", resource_id=bad),
    ]


@pytest.mark.parametrize("bad", HOSTILE, ids=lambda v: repr(v)[:20])
async def test_every_entry_point_rejects_hostile_ids(memory, bad):
    for i, call in enumerate(calls(memory, bad)):
        with pytest.raises(InvalidIdError) as info:
            await call()
            pytest.fail(f"entry point #{i} accepted {bad!r}")
        assert info.value.code == "invalid_id", i
        assert "invalid" in str(info.value) and len(str(info.value)) < 200  # clear and short, never the 10k id
    # Nothing was written or deleted, and the victim's data is intact.
    assert await memory.storage.count(MESSAGES) == 1
    assert await memory.retrieve("notes", "pin", resource_id="victim") == "4321"
    assert (await memory.get_thread_by_id("victim-thread")).resource_id == "victim"


async def test_an_attacker_reads_nothing_of_another_caller(memory):
    context = await memory.prepare(resource_id="attacker", thread_id="attacker-thread", query="what is my PIN")
    assert context.recalled == [] and context.history == []
    assert context.working_memory is None and "Victim" not in (context.system_message or "")
    assert await memory.search("secret PIN", resource_id="attacker") == []
    assert await memory.retrieve("notes", "pin", resource_id="attacker") is None
    assert (await memory.list_threads("attacker")).total == 1
    assert await memory.cleanup(0, resource_id="attacker") == {"messages": 0, "entries": 0, "vectors": 0}
    assert (await memory.recall("victim-thread", "victim")).total == 1
