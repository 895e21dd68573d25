"""The kiosk client against a real server, with a WAV file as the microphone and a WAV file as the speaker: a
two-turn conversation heard by Whisper and spoken by Piper, and a barge-in that stops playback at once and keeps
in memory what the kiosk really played."""

import asyncio
import math
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from voiceserver.audio import read_wav, rms_dbfs, write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.kiosk import Conversation, WavFileSink, WavFileSource
from voiceserver.settings import Settings
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.speech import speak

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))
import memory_app  # noqa: E402


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (16 * ms)


def tone(ms: int) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


@pytest.fixture
def app(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("LANCEDB_URI", str(tmp_path / "memory"))
    monkeypatch.setenv("VOICESERVER_MODELS_DIR", str(models_dir))
    return memory_app.build()


@pytest.mark.slow
async def test_a_two_turn_conversation_from_a_file_to_a_file(app, models_dir, tmp_path):
    script = (speak(models_dir, "Hello, my name is Alice.") + silence(6000)
              + speak(models_dir, "Do you know my name?") + silence(1000))
    write_wav(tmp_path / "mic.wav", AudioChunk(script, 16000))
    settings = Settings(models_dir=models_dir)
    async with voice_server(agent=app.get_agent("Assistant"), memory=app.memory, settings=settings,
                            engines_from_settings=True) as vs:
        sink = WavFileSink(tmp_path / "speaker.wav")
        conversation = Conversation(vs.ws_url, source=WavFileSource(tmp_path / "mic.wav"), sink=sink,
                                    resource="kiosk-lobby")
        await asyncio.wait_for(conversation.run(), 90)
    said = [e.text for e in conversation.events if e.kind == "you"]
    replies = [e.text for e in conversation.events if e.kind == "assistant"]
    assert len(said) == 2 and "alice" in said[0].lower() and "name" in said[1].lower(), said
    assert replies[0] == "Nice to meet you."
    assert replies[1].startswith("Welcome back, Alice!"), replies
    status = conversation.status
    assert status.turns == 2 and status.connects == 1 and status.state == "ended"
    assert status.last_voice_to_voice_ms and status.last_voice_to_voice_ms > 0
    assert conversation.thread and conversation.thread.startswith("thread")
    played = read_wav(tmp_path / "speaker.wav")
    assert sink.reply_ms > 1500, "both replies were played"
    assert played.duration_ms >= sink.reply_ms and rms_dbfs(played.audio) > -50


async def test_barge_in_stops_playback_and_memory_keeps_what_was_played(app, tmp_path):
    agent = app.get_agent("Assistant")
    reply = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa. Lambda mu nu xi omicron pi rho sigma."
    agent.model = ScriptedChatModel([Reply(text=reply, chunk_delay_s=0.01)])
    agent._resolved_model = None
    tts = ToneTTS(ms_per_char=40)
    script = tone(700) + silence(2500) + tone(700) + silence(2500)
    write_wav(tmp_path / "mic.wav", AudioChunk(script, 16000))
    stt = ScriptedSTT(["tell me the alphabet", ""])
    async with voice_server(agent=agent, memory=app.memory, tts=tts, stt=stt) as vs:
        sink = WavFileSink(tmp_path / "speaker.wav")
        conversation = Conversation(vs.ws_url, source=WavFileSource(tmp_path / "mic.wav"), sink=sink,
                                    resource="kiosk-hall", played_report_ms=100)
        await asyncio.wait_for(conversation.run(), 60)
        async with httpx.AsyncClient(base_url=vs.http_url) as http:
            answer = await http.get(f"/v1/memory/threads/{conversation.thread}/messages",
                                    params={"resource": "kiosk-hall"})
    heard = [m for m in answer.json()["messages"] if m["role"] == "assistant"][0]
    assert heard["metadata"].get("interrupted") is True
    full_ms = sum(len(p) * 40 for p in tts.phrases)
    assert 500 < sink.reply_ms < full_ms - 1000, "playback stopped at the barge-in"
    assert reply.startswith(heard["content"]) and heard["content"] != reply
    # What memory keeps is what the kiosk played (reported every 100 ms): words in proportion, phrase by phrase.
    expected_words, elapsed = 0.0, sink.reply_ms
    for phrase in tts.phrases:
        share = min(1.0, max(0.0, elapsed / (len(phrase) * 40)))
        expected_words += share * len(phrase.split())
        elapsed -= len(phrase) * 40
    assert abs(len(heard["content"].split()) - expected_words) <= 1.5, (heard["content"], sink.reply_ms)
