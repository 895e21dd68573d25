"""LanceDBStore as a RunStore: suspended runs survive the store (and the process) that saved them."""

from __future__ import annotations

import pytest

from voiceserver.memory import LanceDBStore, MemoryStoreError
from voiceserver.runs.store import RunRecord, RunStore


async def test_save_load_list_delete_and_reopen(tmp_path):
    store = LanceDBStore(tmp_path / "mem")
    assert isinstance(store, RunStore)
    snapshot = {"step": "approve", "args": {"amount": 12.5, "to": "Ada"}, "messages": ["a", "b"], "ok": True}
    await store.save_run(RunRecord("agent", "run-1", "Assistant", "suspended", snapshot, resource_id="ada",
                                   thread_id="call-1", created_at=100.0))
    await store.save_run(RunRecord("workflow", "wf-1", "booking", "running", {"i": 1}))
    await store.save_run(RunRecord("agent", "run-2", "Other Agent", "done", {}, resource_id="bob"))
    loaded = await store.load_run("agent", "run-1")
    assert loaded.snapshot == snapshot and loaded.owner_id == "Assistant" and loaded.thread_id == "call-1"
    assert loaded.created_at == 100.0
    # Replace keeps created_at and bumps updated_at.
    await store.save_run(RunRecord("agent", "run-1", "Assistant", "approved", {"step": "done"}, resource_id="ada"))
    replaced = await store.load_run("agent", "run-1")
    assert replaced.status == "approved" and replaced.created_at == 100.0 and replaced.updated_at > 100.0
    assert [r.run_id for r in await store.list_runs("agent")] == ["run-1", "run-2"]
    assert [r.run_id for r in await store.list_runs("agent", owner_id="Other Agent")] == ["run-2"]
    assert [r.run_id for r in await store.list_runs("agent", resource_id="ada")] == ["run-1"]
    assert [r.run_id for r in await store.list_runs("agent", status="done")] == ["run-2"]
    assert len(await store.list_runs("agent", limit=1)) == 1
    await store.close()

    reopened = LanceDBStore(tmp_path / "mem")
    assert (await reopened.load_run("workflow", "wf-1")).snapshot == {"i": 1}
    await reopened.delete_run("workflow", "wf-1")
    await reopened.delete_run("workflow", "never-existed")
    assert await reopened.load_run("workflow", "wf-1") is None
    assert await reopened.load_run("agent", "missing") is None
    with pytest.raises(MemoryStoreError):
        await reopened.load_run("rocket", "run-1")
    with pytest.raises(MemoryStoreError):
        await reopened.save_run(RunRecord("agent", "run-3", "A", "x", {"bad": object()}))
    await reopened.close()
