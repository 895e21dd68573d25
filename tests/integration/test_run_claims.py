"""Suspended runs shared by several processes on one S3 store (moto): continued from two processes at once, a run
runs exactly once (an atomic claim in LanceDB); a claim whose process died is taken over after the lease; a live run
longer than the lease keeps its claim (it is renewed). Agent runs through the library in child processes, workflow
runs through REST on two server processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from voiceserver.memory import LanceDBStore
from voiceserver.testing.processes import moto_s3, start_serve_process, stop_process

SUPPORT = Path(__file__).resolve().parents[1] / "support"
APP = SUPPORT / "claims_app.py"
URI = "s3://voice-claims/memory"
pytestmark = pytest.mark.slow


@pytest.fixture
def shared(tmp_path):
    """moto S3 and the environment every process of a test shares (store, journal, marks file)."""
    with moto_s3("voice-claims") as s3:
        marks = tmp_path / "marks.txt"
        marks.touch()
        env = {"LANCEDB_URI": URI, "VOICESERVER_LANCEDB_STORAGE_OPTIONS": json.dumps(s3),
               "VOICESERVER_STORAGE__JOURNAL_DIR": str(tmp_path / "journal"), "CLAIMS_APP_MARKS": str(marks),
               "PYTHONPATH": str(SUPPORT), "VOICESERVER_LOG_LEVEL": "warn"}
        yield env, marks, s3


def child(env: dict, *args: str, **extra: str) -> subprocess.Popen:
    import os

    return subprocess.Popen([sys.executable, str(APP), *args], env={**os.environ, **env, **extra},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def answer(proc: subprocess.Popen, timeout_s: float = 120.0) -> dict:
    out, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), timeout_s)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, f"exit {proc.returncode}: {err.decode()[-3000:]}"
    return json.loads(lines[-1])


async def ready(*procs: subprocess.Popen) -> None:
    """Wait until each child opened the store and waits for its go-file (its first line)."""
    for proc in procs:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert json.loads(line) == {"ready": True}, line


def marks_of(marks: Path, what: str) -> list[str]:
    return [line.split()[1] for line in marks.read_text().splitlines() if line.split()[0] == what]


async def suspended_run(env: dict) -> str:
    return (await answer(child(env, "suspend")))["run_id"]


async def status_of(s3: dict, run_id: str) -> str:
    store = LanceDBStore(URI, storage_options=s3)
    try:
        return (await store.load_run("agent", run_id, fresh=True)).status
    finally:
        await store.close()


async def test_an_agent_run_approved_from_two_processes_at_once_runs_once(shared):
    env, marks, s3 = shared
    run_id = await suspended_run(env)
    at = str(time.time() + 8)  # both children are up by then; they claim within a few milliseconds of each other
    results = await asyncio.gather(answer(child(env, "approve", run_id, at)), answer(child(env, "approve", run_id, at)))
    winners = [r for r in results if r["ok"]]
    losers = [r for r in results if not r["ok"]]
    assert len(winners) == 1 and winners[0]["text"] == "Paid.", results
    assert [r["code"] for r in losers] == ["run_not_suspended"], results
    assert marks_of(marks, "agent-pay") == [str(winners[0]["pid"])], "the tool ran once, in the winner"
    assert await status_of(s3, run_id) == "finished"


async def test_a_claim_whose_process_died_is_taken_over_after_the_lease(shared, tmp_path):
    env, marks, s3 = shared
    lease = 6.0
    env = {**env, "VOICESERVER_STORAGE__CLAIM_LEASE_S": str(lease)}
    run_id = await suspended_run(env)
    # Every child starts now and waits for its go-file, so process start-up does not move the timeline.
    go = {name: tmp_path / f"go-{name}" for name in ("holder", "early", "late")}
    holder = child(env, "approve", run_id, str(go["holder"]), CLAIMS_APP_HOLD_S="120")
    early = child(env, "approve", run_id, str(go["early"]))
    late = child(env, "approve", run_id, str(go["late"]))
    await ready(holder, early, late)
    go["holder"].touch()
    async with asyncio.timeout(60):
        while not marks_of(marks, "agent-pay"):
            await asyncio.sleep(0.05)
    claimed_at = time.time()  # the holder claimed the run, and hangs in the tool
    holder.send_signal(signal.SIGKILL)  # dies holding the claim: the run stays "running", nobody renews it
    await asyncio.to_thread(holder.wait)
    assert await status_of(s3, run_id) == "running"
    go["early"].touch()  # well within the lease
    refused = await answer(early)
    assert time.time() - claimed_at < lease, "the early attempt came within the lease"
    assert refused["ok"] is False and refused["code"] == "run_not_suspended", refused
    await asyncio.sleep(max(0.0, claimed_at + lease + 1 - time.time()))
    go["late"].touch()  # past the lease: taken over
    taken = await answer(late)
    assert taken["ok"] and taken["text"] == "Paid.", taken
    assert marks_of(marks, "agent-pay") == [str(holder.pid), str(taken["pid"])]
    assert await status_of(s3, run_id) == "finished"


async def test_a_live_run_longer_than_the_lease_keeps_its_claim(shared, tmp_path):
    env, marks, s3 = shared
    lease = 2.0
    env = {**env, "VOICESERVER_STORAGE__CLAIM_LEASE_S": str(lease)}
    run_id = await suspended_run(env)
    go_holder, go_other = tmp_path / "go-holder", tmp_path / "go-other"
    holder = child(env, "approve", run_id, str(go_holder), CLAIMS_APP_HOLD_S="10")  # 5 leases, renewing its claim
    other = child(env, "approve", run_id, str(go_other))
    await ready(holder, other)
    go_holder.touch()
    async with asyncio.timeout(60):
        while not marks_of(marks, "agent-pay"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(2 * lease)  # two leases in, while the tool still runs
    go_other.touch()
    refused = await answer(other)
    assert refused["ok"] is False and refused["code"] == "run_not_suspended", refused
    assert await status_of(s3, run_id) == "running", "the holder was still running when the other one tried"
    assert (await answer(holder))["ok"]
    assert len(marks_of(marks, "agent-pay")) == 1
    assert await status_of(s3, run_id) == "finished"


async def test_a_workflow_resumed_through_two_servers_at_once_runs_once(shared, models_dir):
    env, marks, _ = shared
    env = {**env, "VOICESERVER_MODELS_DIR": str(models_dir), "CLAIMS_APP_HOLD_S": "0.5"}
    (a, port_a), (b, port_b) = await asyncio.gather(
        start_serve_process(["--app", "claims_app:app"], env=env), start_serve_process(["--app", "claims_app:app"],
                                                                                       env=env))
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            started = (await http.post(f"http://127.0.0.1:{port_a}/v1/workflows/pay/runs",
                                       json={"input_data": {"amount": 7}})).json()
            assert started["status"] == "suspended", started
            run_id = started["run_id"]
            await asyncio.sleep(1.2)  # the other server sees the suspended run within read_consistency_s
            responses = await asyncio.gather(*(
                http.post(f"http://127.0.0.1:{port}/v1/workflows/pay/runs/{run_id}/resume",
                          json={"resume_data": {"approved": True}}) for port in (port_a, port_b)))
            await asyncio.sleep(1.2)  # both servers see the final snapshot within read_consistency_s
            finals = [(await http.get(f"http://127.0.0.1:{port}/v1/workflows/pay/runs/{run_id}")).json()
                      for port in (port_a, port_b)]
    finally:
        await asyncio.gather(stop_process(a), stop_process(b))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 409).json()["error"]
    # Refused at the claim ("just resumed elsewhere") or, when the winner's claim was already visible, at the check.
    assert refused["code"] == "invalid_run_state", refused
    assert next(r for r in responses if r.status_code == 200).json()["status"] == "success"
    assert len(marks_of(marks, "workflow-pay")) == 1
    assert [f["status"] for f in finals] == ["success", "success"]
