"""Memory in the voice server: a caller is remembered across calls, turns are saved before response.done, barge-in
keeps only what was heard, the REST API, SIGKILL durability, and two server processes sharing memory on S3."""

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx
import pytest

from voiceserver.client import AudioFrame, VoiceClient
from voiceserver.settings import Settings, TurnConfig
from voiceserver.testing.fake_voice import ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.processes import moto_s3, start_serve_process

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))
import memory_app  # noqa: E402


@pytest.fixture
def app(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("LANCEDB_URI", str(tmp_path / "memory"))
    monkeypatch.setenv("VOICESERVER_MODELS_DIR", str(models_dir))
    return memory_app.build()


async def test_caller_is_remembered_in_a_new_call(app):
    agent = app.get_agent("Assistant")
    async with voice_server(agent=agent, memory=app.memory) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        async with VoiceClient.connect(vs.ws_url, resource="caller-ada") as first:
            intro = await first.ask_text("Hi, my name is Ada.")
            first_thread = first.session["thread"]
            # The turn was written before response.done was sent: read it back at once.
            saved = (await http.get(f"/v1/memory/threads/{first_thread}/messages",
                                    params={"resource": "caller-ada"})).json()
        assert intro.reply_text == "Nice to meet you."
        texts = [(m["role"], m["content"]) for m in saved["messages"] if m["type"] == "text"]
        assert texts[0] == ("user", "Hi, my name is Ada.") and texts[-1] == ("assistant", "Nice to meet you.")
        async with VoiceClient.connect(vs.ws_url, resource="caller-ada") as second:
            assert second.session["thread"] != first_thread, "a new call gets a new thread"
            hello = await second.ask_text("Hello again.")
        assert hello.reply_text == "Welcome back, Ada! You said: Hello again."
        async with VoiceClient.connect(vs.ws_url, resource="caller-bob") as other:
            stranger = await other.ask_text("Hello.")
        assert stranger.reply_text.startswith("Hello, who is this?"), "one caller never sees another's memory"

        threads = (await http.get("/v1/memory/threads", params={"resource": "caller-ada"})).json()
        assert threads["total"] == 2
        working = (await http.get("/v1/memory/working", params={"resource": "caller-ada"})).json()
        assert "Name: Ada" in working["working_memory"]
        bad = await http.get("/v1/memory/threads", params={"resource": "x' OR '1'='1"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_id"
        mismatch = await http.get(f"/v1/memory/threads/{first_thread}/messages", params={"resource": "caller-bob"})
        assert mismatch.status_code == 403
        deleted = await http.delete(f"/v1/memory/threads/{first_thread}")
        assert deleted.status_code == 200
        assert (await http.get(f"/v1/memory/threads/{first_thread}/messages")).status_code == 404


async def test_barge_in_keeps_only_heard_text_in_memory(app, monkeypatch):
    agent = app.get_agent("Assistant")
    agent.model = memory_app.ScriptedChatModel([memory_app.Reply(
        text="Alpha beta gamma delta. Epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma.",
        chunk_delay_s=0.01)])
    agent._resolved_model = None
    settings = Settings(turn=TurnConfig(output_lead_ms=100))
    async with voice_server(agent=agent, memory=app.memory, tts=ToneTTS(ms_per_char=40), settings=settings) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        async with VoiceClient.connect(vs.ws_url, resource="caller-c") as client:
            await client.send_text("tell me the alphabet")
            frames = 0
            while frames < 12:
                if isinstance(await client.next_event(10), AudioFrame):
                    frames += 1
            await client.cancel()
            cancelled = await client.wait_for("response.cancelled")
            thread = client.session["thread"]
        messages = (await http.get(f"/v1/memory/threads/{thread}/messages")).json()["messages"]
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert cancelled["heard_text"].startswith("Alpha beta gamma delta.")
    assert [m["content"] for m in assistant] == [cancelled["heard_text"]]
    assert assistant[0]["metadata"].get("interrupted") is True


async def start(env: dict, models_dir: Path):
    env = {**env, "PYTHONPATH": str(SUPPORT), "VOICESERVER_MODELS_DIR": str(models_dir),
           "VOICESERVER_LOG_LEVEL": "warn"}
    return await start_serve_process(["--app", "memory_app:app"], env=env)


async def test_sigkill_mid_conversation_keeps_every_acknowledged_turn(tmp_path, models_dir):
    env = {"LANCEDB_URI": str(tmp_path / "memory"), "MEMORY_APP_DELAY_S": "0.2"}
    proc, port = await start(env, models_dir)
    acknowledged = []
    try:
        async with VoiceClient.connect(f"ws://127.0.0.1:{port}/v1/voice", resource="caller-k",
                                       thread="call-1") as client:
            for i in range(4):
                turn = await client.ask_text(f"note number {i}")
                assert not turn.errors
                acknowledged.append(f"note number {i}")
            await client.send_text("note number 4")
            await client.wait_for("response.started")
            proc.send_signal(signal.SIGKILL)  # mid-reply: no shutdown code runs
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, port = await start(env, models_dir)
    try:
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"http://127.0.0.1:{port}/v1/memory/threads/call-1/messages",
                                   params={"resource": "caller-k", "per_page": 100})).json()
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 60)
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    replies = [m for m in body["messages"] if m["role"] == "assistant"]
    for text in acknowledged:
        assert text in users, (text, users)
    assert len(replies) >= len(acknowledged)


@pytest.fixture
def s3():
    with moto_s3("voice") as options:
        yield options


async def test_two_server_processes_share_a_callers_memory_on_s3(s3, models_dir):
    env = {"LANCEDB_URI": "s3://voice/memory", "VOICESERVER_LANCEDB_STORAGE_OPTIONS": json.dumps(s3)}
    (a, port_a), (b, port_b) = await asyncio.gather(start(env, models_dir), start(env, models_dir))
    try:
        async with VoiceClient.connect(f"ws://127.0.0.1:{port_a}/v1/voice", resource="caller-s3") as client:
            assert (await client.ask_text("my name is Grace")).reply_text == "Nice to meet you."
        await asyncio.sleep(1.5)  # other processes see new versions within read_consistency_s (1 s)
        async with VoiceClient.connect(f"ws://127.0.0.1:{port_b}/v1/voice", resource="caller-s3") as client:
            hello = await client.ask_text("hello")
        assert hello.reply_text == "Welcome back, Grace! You said: hello"
    finally:
        for proc in (a, b):
            proc.terminate()
        for proc in (a, b):
            await asyncio.to_thread(proc.wait, 60)
