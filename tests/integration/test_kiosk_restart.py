"""The kiosk keeps its conversation when the server restarts: real `voiceserver serve` processes on one port, the
first stopped after the first reply; the client reconnects with backoff, with the same resource and thread, and
the second question is answered by the new process from the same memory."""

import asyncio
from pathlib import Path

import httpx
import pytest

from voiceserver.audio import write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.kiosk import Backoff, Conversation, WavFileSink, WavFileSource
from voiceserver.testing.processes import free_port, start_serve_process, stop_process
from voiceserver.testing.speech import speak

SUPPORT = Path(__file__).resolve().parents[1] / "support"


@pytest.mark.slow
async def test_the_conversation_resumes_in_the_same_thread_after_a_restart(tmp_path, models_dir):
    script = (speak(models_dir, "Hello, my name is Alice.") + b"\x00\x00" * 16 * 8000
              + speak(models_dir, "Do you know my name?") + b"\x00\x00" * 16 * 1000)
    write_wav(tmp_path / "mic.wav", AudioChunk(script, 16000))
    env = {"LANCEDB_URI": str(tmp_path / "memory"), "VOICESERVER_MODELS_DIR": str(models_dir),
           "PYTHONPATH": str(SUPPORT)}
    port = free_port()
    serve = ["--app", "memory_app:app", "--log-level", "warn"]
    first, _ = await start_serve_process(serve, env=env, port=port)
    second = None
    try:
        conversation = Conversation(f"ws://127.0.0.1:{port}/v1/voice", source=WavFileSource(tmp_path / "mic.wav"),
                                    sink=WavFileSink(tmp_path / "speaker.wav"), resource="kiosk-desk",
                                    backoff=Backoff(initial_s=0.2, max_s=1.0))
        running = asyncio.create_task(conversation.run())
        async with asyncio.timeout(60):
            while not any(e.kind == "assistant" for e in conversation.events):
                await asyncio.sleep(0.1)
        thread = conversation.thread
        assert await stop_process(first) == 0
        async with asyncio.timeout(30):
            while conversation.status.state != "reconnecting":
                await asyncio.sleep(0.05)
        second, _ = await start_serve_process(serve, env=env, port=port)
        await asyncio.wait_for(running, 120)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            saved = (await http.get(f"/v1/memory/threads/{thread}/messages",
                                    params={"resource": "kiosk-desk"})).json()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                await stop_process(proc)
    replies = [e.text for e in conversation.events if e.kind == "assistant"]
    assert replies[0] == "Nice to meet you."
    assert replies[1].startswith("Welcome back, Alice!"), replies
    assert conversation.status.connects == 2 and conversation.thread == thread, "the same thread, resumed"
    connected = [e.text for e in conversation.events if e.kind == "connected"]
    assert len(connected) == 2 and all(thread in text for text in connected)
    texts = [m["content"] for m in saved["messages"] if m["type"] == "text" and m["role"] == "user"]
    assert len(texts) == 2 and "alice" in texts[0].lower(), texts
