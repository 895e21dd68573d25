"""Storage down for 30 s mid-conversation, then a SIGKILL, then a restart: a real server process (memory on moto S3
behind the fault proxy) answers every turn during the outage, /readyz says storage is degraded and what is pending,
and nothing acknowledged (response.done) is lost: the journal is adopted and replayed by the restarted process."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest

from voiceserver.client import VoiceClient
from voiceserver.memory import LanceDBStore, Memory
from voiceserver.testing.faults import FaultProxy
from voiceserver.testing.processes import moto_s3, start_serve_process, stop_process

SUPPORT = Path(__file__).resolve().parents[1] / "support"
OUTAGE_S = 30.0
pytestmark = pytest.mark.slow


async def serve(env: dict, models_dir: Path):
    env = {**env, "PYTHONPATH": str(SUPPORT), "VOICESERVER_MODELS_DIR": str(models_dir),
           "VOICESERVER_LOG_LEVEL": "warn", "MEMORY_APP_DELAY_S": "0.2"}
    return await start_serve_process(["--app", "memory_app:app"], env=env)


async def storage_of(http: httpx.AsyncClient) -> dict:
    body = (await http.get("/readyz")).json()
    return {"degraded": body.get("degraded"), **next(iter(body["storage"].values()))}


async def wait_storage(http: httpx.AsyncClient, state: str, timeout_s: float = 60.0) -> dict:
    async with asyncio.timeout(timeout_s):
        while (health := await storage_of(http))["state"] != state:
            await asyncio.sleep(0.2)
    return health


async def test_outage_then_sigkill_then_restart_loses_nothing_acknowledged(tmp_path, models_dir):
    with moto_s3("voice-kill") as s3:
        async with FaultProxy(s3["aws_endpoint"]) as proxy:
            options = {**s3, "aws_endpoint": proxy.url, "timeout": "3s", "connect_timeout": "1s",
                       "client_max_retries": "1", "client_retry_timeout": "4"}
            env = {"LANCEDB_URI": "s3://voice-kill/memory", "VOICESERVER_LANCEDB_STORAGE_OPTIONS": json.dumps(options),
                   "VOICESERVER_STORAGE__JOURNAL_DIR": str(tmp_path / "journal"),
                   "VOICESERVER_STORAGE__OP_TIMEOUT_S": "0.5", "VOICESERVER_STORAGE__PROBE_INTERVAL_S": "0.2"}
            proc, port = await serve(env, models_dir)
            acknowledged: list[str] = []
            url = f"ws://127.0.0.1:{port}/v1/voice"
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http, \
                        VoiceClient.connect(url, resource="caller-k", thread="call-1") as client:
                    for text in ("hello there", "how are you"):
                        turn = await client.ask_text(text)
                        assert not turn.errors
                        acknowledged.append(text)
                    assert (await storage_of(http))["state"] == "ok"

                    outage = proxy.blackhole()
                    loop = asyncio.get_running_loop()
                    ends = loop.time() + OUTAGE_S
                    named = await client.ask_text("my name is Grace")
                    assert not named.errors and named.reply_text == "Nice to meet you.", named.errors
                    acknowledged.append("my name is Grace")
                    during = await storage_of(http)
                    assert during["state"] == "degraded" and during["pending_writes"] > 0, during
                    assert during["degraded"] == ["s3://voice-kill/memory"]
                    i = 0
                    while loop.time() < ends - 6:  # turns through the outage (each reply is spoken in real time)
                        text = f"note number {i}"
                        turn = await client.ask_text(text)
                        assert not turn.errors and turn.reply_text, turn.errors
                        acknowledged.append(text)
                        i += 1
                        await asyncio.sleep(1)
                    # A new call during the outage knows the caller: working memory came from the journal.
                    async with VoiceClient.connect(url, resource="caller-k", thread="call-2") as second:
                        hello = await second.ask_text("hello again")
                    assert hello.reply_text == "Welcome back, Grace! You said: hello again", hello
                    pending = (await storage_of(http))["pending_writes"]
                    await asyncio.sleep(max(0.0, ends - loop.time()))  # down for the whole 30 s
                    await client.send_text("the last words")
                    await client.wait_for("response.started")
                    proc.send_signal(signal.SIGKILL)  # mid-reply, still in the outage: no shutdown code runs
                await asyncio.to_thread(proc.wait, 30)
                assert proxy.counts["blackhole"] > 0 and len(acknowledged) >= 6
                assert pending >= 2 * (len(acknowledged) - 2), "each acknowledged exchange waits in the journal"

                # Restarted while storage is still down: it adopts the dead process's journal and is degraded.
                proc, port = await serve(env, models_dir)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                    restarted = await storage_of(http)
                    assert restarted["state"] == "degraded" and restarted["pending_writes"] >= pending, restarted
                    proxy.remove(outage)
                    await wait_storage(http, "ok")
                    body = (await http.get("/v1/memory/threads/call-1/messages",
                                           params={"resource": "caller-k", "per_page": 200})).json()
                    working = (await http.get("/v1/memory/working", params={"resource": "caller-k"})).json()
            finally:
                if proc.poll() is None:
                    await stop_process(proc)
            users = [m["content"] for m in body["messages"] if m["role"] == "user"]
            for text in acknowledged:
                assert users.count(text) == 1, (text, users)
            assert users[:len(acknowledged)] == acknowledged, "flushed in order"
            assert "Name: Grace" in working["working_memory"]
            # On S3 itself (not through the server): a reader with no journal and no cache sees it all.
            direct = Memory(LanceDBStore("s3://voice-kill/memory", storage_options=s3), embedder=None)
            stored = [m.content for m in (await direct.recall("call-1", "caller-k")).messages if m.role == "user"]
            await direct.close()
            assert stored[:len(acknowledged)] == acknowledged
            assert not list((tmp_path / "journal").rglob("journal-*.wal")), "flushed, and closed empty"
