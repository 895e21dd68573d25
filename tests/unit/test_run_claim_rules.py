"""Claims on suspended runs, on values and an in-process store: the compare-and-swap, leases, and the error a lost
race gives. The cross-process behaviour is in tests/integration/test_run_claims.py (a different basename: pytest
collects both as top-level modules)."""

from __future__ import annotations

import time

import pytest

from voiceserver.runs.claims import claim_suspended_run, claimable, save_as_running
from voiceserver.runs.errors import AgentError
from voiceserver.runs.store import ClaimingRunStore, InMemoryRunStore, RunRecord


class State:
    def __init__(self, status: str = "suspended"):
        self.status = status

    def to_json(self) -> dict:
        return {"status": self.status}


async def stored(store: InMemoryRunStore, status: str = "suspended") -> RunRecord:
    await store.save_run(RunRecord("agent", "run-1", "Assistant", status, {"status": status}))
    record = await store.load_run("agent", "run-1")
    assert record is not None
    return record


async def test_claim_run_is_a_compare_and_swap():
    store = InMemoryRunStore()
    assert isinstance(store, ClaimingRunStore)
    seen = await stored(store)
    first = RunRecord("agent", "run-1", "Assistant", "running", {"by": "first"})
    second = RunRecord("agent", "run-1", "Assistant", "running", {"by": "second"})
    assert await store.claim_run(first, expect_status="suspended", expect_updated_at=seen.updated_at)
    assert first.updated_at > seen.updated_at, "the winner holds the new token"
    assert not await store.claim_run(second, expect_status="suspended", expect_updated_at=seen.updated_at)
    now = await store.load_run("agent", "run-1")
    assert now.snapshot == {"by": "first"} and now.status == "running" and now.created_at == seen.created_at
    assert not await store.claim_run(RunRecord("agent", "gone", "A", "running", {}), expect_status="suspended",
                                     expect_updated_at=0.0)


def test_a_run_is_claimable_when_suspended_or_abandoned_past_its_lease():
    now = time.time()
    assert claimable(RunRecord("agent", "r", "A", "suspended", {}, updated_at=now), 60, now)
    assert not claimable(RunRecord("agent", "r", "A", "running", {}, updated_at=now - 59), 60, now)
    assert claimable(RunRecord("agent", "r", "A", "running", {}, updated_at=now - 61), 60, now)
    assert not claimable(RunRecord("agent", "r", "A", "finished", {}, updated_at=now - 1e6), 60, now)


async def test_losing_the_race_after_the_checks_raises_run_not_suspended():
    store = InMemoryRunStore()
    await stored(store)
    state = State()
    with pytest.raises(AgentError) as lost:
        async with claim_suspended_run(store, "agent", "run-1", "Assistant", error=AgentError,
                                       label="agent run") as record:
            # Another process claims it between our read and our claim (its save changes the token).
            await store.save_run(RunRecord("agent", "run-1", "Assistant", "running", {"by": "other"}))
            await save_as_running(store, record, state)
    assert lost.value.code == "run_not_suspended" and "continued elsewhere" in str(lost.value)
    assert state.status == "suspended", "the loser's state is left as it was"
    assert (await store.load_run("agent", "run-1")).snapshot == {"by": "other"}


async def test_a_fresh_running_claim_is_refused_and_the_owner_is_checked():
    store = InMemoryRunStore()
    await stored(store, status="running")
    with pytest.raises(AgentError) as busy:
        async with claim_suspended_run(store, "agent", "run-1", "Assistant", error=AgentError, label="agent run"):
            pass
    assert busy.value.code == "run_not_suspended"
    with pytest.raises(AgentError) as owner:
        async with claim_suspended_run(store, "agent", "run-1", "Someone", error=AgentError, label="agent run"):
            pass
    assert owner.value.code == "run_not_owned"


async def test_an_abandoned_running_claim_is_taken_over():
    store = InMemoryRunStore()
    store.claim_lease_s = 0.05  # type: ignore[attr-defined]  # a shared store's lease, shortened
    await stored(store, status="running")
    time.sleep(0.06)
    state = State("running")
    async with claim_suspended_run(store, "agent", "run-1", "Assistant", error=AgentError,
                                   label="agent run") as record:
        await save_as_running(store, record, state)
    assert (await store.load_run("agent", "run-1")).status == "running" and state.status == "running"
    from voiceserver.runs.claims import stop_keepers

    await stop_keepers(store)
