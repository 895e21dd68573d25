"""Provider failures through a real server: the OpenAI-compatible chat, speech-to-text and text-to-speech are the
loopback OpenAI server behind the fault proxy (resets mid-stream, 5xx, blackholes). The fallback chain is used when
one is configured; when nothing is left the caller hears the apology, the session carries on, the turn is recorded
in memory with its error code and in the turn log, and the metrics count it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from voiceserver.client import VoiceClient
from voiceserver.server.composition import VoiceServer, build_server, create_app
from voiceserver.settings import AgentConfig, LlmConfig, MemoryConfig, Settings, SttConfig, TtsConfig, TurnConfig
from voiceserver.testing.fake_openai import FakeOpenAI
from voiceserver.testing.fake_openai.audio import audio_routes
from voiceserver.testing.fake_openai.chat import chat_routes
from voiceserver.testing.faults import Fault, FaultProxy
from voiceserver.testing.servers import serve_app

KEY = "sk-test-provider-faults"
APOLOGY = TurnConfig().apology
LONG_REPLY = ("The weather today is sunny with a light breeze from the west, and it stays dry until the evening "
              "when a few clouds come in.")


def reply_for(body: dict) -> str:
    """The loopback chat model: a long reply to the weather, an echo otherwise."""
    last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return LONG_REPLY if "weather" in last else f"You said: {last}"


def tone(ms: int, rate: int = 16000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


class TurnLog(logging.Handler):
    """The session's per-turn log lines (their fields)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.turns: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "turn":
            self.turns.append(dict(getattr(record, "fields", {}) or {}))


@dataclass
class Rig:
    server: VoiceServer
    http: httpx.AsyncClient
    proxy: FaultProxy
    fake: FakeOpenAI
    ws_url: str
    log: TurnLog

    async def messages(self, resource: str, thread: str) -> list[dict]:
        response = await self.http.get(f"/v1/memory/threads/{thread}/messages", params={"resource": resource})
        assert response.status_code == 200, response.text
        return response.json()["messages"]

    async def metric(self, name: str, **labels: str) -> float:
        """The value of one Prometheus sample (0 when it was never counted)."""
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        for line in (await self.http.get("/metrics")).text.splitlines():
            if line.startswith(name + "{") and set(line[len(name) + 1:line.rindex("}")].split(",")) == wanted:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, models_dir: Path, *, model: str | list[str] = "openai/gpt-4o-mini",
              stt: str | list[str] = "openai", tts: str | list[str] = "openai",
              llm_timeout_s: float = 60.0) -> AsyncIterator[Rig]:
    """A server from settings whose OpenAI providers go through the fault proxy; ``openai-compatible/<m>`` models
    reach the loopback server directly (a healthy fallback)."""
    routes = [*chat_routes([reply_for], chunk_delay_s=0.005), *audio_routes(transcripts=["what is the weather"],
                                                                           ms_per_char=20)]
    log = TurnLog()
    session_logger = logging.getLogger("voiceserver.session")
    async with FakeOpenAI(routes, api_key=KEY) as fake, FaultProxy(fake.server.http_url) as proxy:
        settings = Settings(
            openai_api_key=KEY, openai_base_url=proxy.url + "/v1", lancedb_uri=str(tmp_path / "memory"),
            models_dir=models_dir,
            llm=LlmConfig(openai_compatible_base_url=fake.base_url, openai_compatible_api_key=KEY,
                          timeout_s=llm_timeout_s),
            agent=AgentConfig(model=model, memory=MemoryConfig(working_memory=False)),
            stt=SttConfig(provider=stt, retries=0, timeout_s=10), tts=TtsConfig(provider=tts, retries=0, timeout_s=10))
        server = build_server(settings)
        level = session_logger.level
        session_logger.setLevel(logging.INFO)
        session_logger.addHandler(log)
        try:
            async with serve_app(create_app(server)) as running, \
                    httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
                for _ in range(600):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"not ready: {(await http.get('/readyz')).json()}")
                yield Rig(server, http, proxy, fake, running.ws_url + "/v1/voice", log)
        finally:
            session_logger.removeHandler(log)
            session_logger.setLevel(level)


async def test_a_chat_stream_reset_midway_gives_the_apology_and_a_recorded_turn(tmp_path, models_dir):
    async with rig(tmp_path, models_dir) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-reset", thread="call-reset") as client:
        # Cut the next chat completion after its head and a few SSE chunks: some words arrive, then a reset.
        r.proxy.inject(Fault.reset(after_bytes=1400, path="/v1/chat/completions", times=1))
        cut = await client.ask_text("what is the weather like?")
        again = await client.ask_text("are you still there?")
        messages = await r.messages("caller-reset", "call-reset")
        errors = await r.metric("voiceserver_errors_total", code="llm_unavailable")
    assert r.proxy.counts["reset"] == 1
    assert [e["code"] for e in cut.errors] == ["llm_unavailable"], cut.errors
    assert cut.reply_text.endswith(APOLOGY)
    spoken_before = cut.reply_text[:-len(APOLOGY)].strip()
    assert spoken_before and LONG_REPLY.startswith(spoken_before), "words before the cut were spoken, then the apology"
    assert cut.audio, "the apology is spoken"
    # The session carried on.
    assert not again.errors and again.reply_text == "You said: are you still there?"
    # Memory holds the failed exchange once, marked with its code, then the next one.
    texts = [(m["role"], m["content"], m["metadata"].get("error_code")) for m in messages if m["type"] == "text"]
    assert texts == [("user", "what is the weather like?", "llm_unavailable"),
                     ("assistant", cut.reply_text, "llm_unavailable"),
                     ("user", "are you still there?", None), ("assistant", again.reply_text, None)]
    assert errors == 1.0
    assert [t["outcome"] for t in r.log.turns] == ["llm_unavailable", "ok"]


async def test_a_chat_error_before_the_first_token_moves_to_the_fallback_model(tmp_path, models_dir):
    async with rig(tmp_path, models_dir, model=["openai/gpt-4o-mini", "openai-compatible/backup"]) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-fb") as client:
        r.proxy.inject(Fault.error(503, path="/v1/chat/completions"))
        turn = await client.ask_text("hello there")
        fallbacks = await r.metric("voiceserver_provider_fallbacks_total", operation="llm")
        unavailable = await r.metric("voiceserver_provider_calls_total", provider="openai", operation="chat",
                                     outcome="llm_unavailable")
    assert not turn.errors and turn.reply_text == "You said: hello there"
    assert r.proxy.counts["error"] == 2, "the primary was tried and retried once (llm retries) before the switch"
    assert fallbacks == 1.0 and unavailable == 2.0
    assert [t["outcome"] for t in r.log.turns] == ["ok"]


async def test_a_blackholed_chat_model_times_out_and_the_session_goes_on(tmp_path, models_dir):
    async with rig(tmp_path, models_dir, llm_timeout_s=1.0) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-bh", thread="call-bh") as client:
        outage = r.proxy.blackhole(path="/v1/chat/completions")
        stuck = await client.ask_text("hello?")
        r.proxy.remove(outage)
        back = await client.ask_text("hello again")
        messages = await r.messages("caller-bh", "call-bh")
        timeouts = await r.metric("voiceserver_errors_total", code="llm_timeout")
    assert [e["code"] for e in stuck.errors] == ["llm_timeout"]
    assert stuck.reply_text == APOLOGY
    assert back.reply_text == "You said: hello again"
    failed = [m for m in messages if m["metadata"].get("error_code") == "llm_timeout"]
    assert [(m["role"], m["content"]) for m in failed] == [("user", "hello?"), ("assistant", APOLOGY)]
    assert timeouts == 1.0


async def test_speech_to_text_failing_with_nothing_left_is_an_apology_and_a_recorded_turn(tmp_path, models_dir):
    async with rig(tmp_path, models_dir) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-stt", thread="call-stt") as client:
        failing = r.proxy.inject(Fault.error(500, path="/v1/audio/transcriptions"))
        deaf = await client.ask_audio(tone(800), realtime=False)
        r.proxy.remove(failing)
        heard = await client.ask_audio(tone(800), realtime=False)
        messages = await r.messages("caller-stt", "call-stt")
        errors = await r.metric("voiceserver_errors_total", code="stt_unavailable")
    assert [e["code"] for e in deaf.errors] == ["stt_unavailable"]
    assert deaf.reply_text == APOLOGY and deaf.audio
    assert heard.transcript == "what is the weather" and heard.reply_text.startswith("The weather today is sunny")
    apology = [m for m in messages if m["metadata"].get("error_code") == "stt_unavailable"]
    assert [(m["role"], m["content"]) for m in apology] == [("assistant", APOLOGY)], "nothing was heard to keep"
    assert errors == 1.0
    assert r.log.turns[0]["outcome"] == "stt_unavailable"


@pytest.mark.slow
async def test_speech_to_text_falls_back_to_local_whisper(tmp_path, models_dir):
    from voiceserver.testing.speech import speak

    async with rig(tmp_path, models_dir, stt=["openai", "local"]) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-whisper") as client:
        r.proxy.blackhole(path="/v1/audio/transcriptions")
        r.server.stt.engines[0].timeout_s = 1.0  # the OpenAI transcription gives up after 1 s
        turn = await client.ask_audio(speak(models_dir, "What is the weather like today?"), realtime=False)
        fallbacks = await r.metric("voiceserver_provider_fallbacks_total", operation="stt")
    assert not turn.errors
    assert "weather" in turn.transcript.lower()
    assert turn.reply_text.startswith("The weather today is sunny")
    assert fallbacks == 1.0


async def test_text_to_speech_cut_midway_is_reported_recorded_and_the_session_goes_on(tmp_path, models_dir):
    async with rig(tmp_path, models_dir) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-tts", thread="call-tts") as client:
        # The first phrase's speech stream is cut after some audio: the voice failed, so there is no apology.
        r.proxy.inject(Fault.reset(after_bytes=3000, path="/v1/audio/speech", times=1))
        broken = await client.ask_text("what is the weather?")
        fine = await client.ask_text("thanks")
        messages = await r.messages("caller-tts", "call-tts")
        errors = await r.metric("voiceserver_errors_total", code="tts_unavailable")
    assert [e["code"] for e in broken.errors] == ["tts_unavailable"], broken.errors
    assert APOLOGY not in broken.reply_text
    assert not fine.errors and fine.reply_text == "You said: thanks" and fine.audio
    # The answer itself was complete: the agent kept it (what was sent), once; the code is in the turn log.
    texts = [(m["role"], m["content"]) for m in messages if m["type"] == "text"]
    assert texts == [("user", "what is the weather?"), ("assistant", broken.reply_text), ("user", "thanks"),
                     ("assistant", fine.reply_text)]
    assert errors == 1.0
    assert [t["outcome"] for t in r.log.turns] == ["tts_unavailable", "ok"]


@pytest.mark.slow
async def test_text_to_speech_falls_back_to_local_piper(tmp_path, models_dir):
    async with rig(tmp_path, models_dir, tts=["openai", "local"]) as r, \
            VoiceClient.connect(r.ws_url, resource="caller-piper") as client:
        r.proxy.inject(Fault.error(503, path="/v1/audio/speech"))
        turn = await client.ask_text("hello")
        fallbacks = await r.metric("voiceserver_provider_fallbacks_total", operation="tts")
    assert not turn.errors and turn.reply_text == "You said: hello"
    assert len(turn.audio) > 16000, "Piper spoke the reply"
    assert fallbacks >= 1.0
