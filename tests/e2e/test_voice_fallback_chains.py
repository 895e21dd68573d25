"""Fallback chains from the settings, end to end: the first provider is an OpenAI endpoint that is down, the next is
the embedded engine, and the caller still hears the reply (real Piper, real faster-whisper, a real server)."""

from __future__ import annotations

import pytest

from voiceserver.agent import Agent
from voiceserver.audio import rms_dbfs
from voiceserver.client import VoiceClient
from voiceserver.server.voice_engines import SpeechEngines
from voiceserver.settings import Settings
from voiceserver.stt.fallback import FallbackSTT
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.harness import voice_server
from voiceserver.testing.speech import speak
from voiceserver.tts.fallback import FallbackTTS

pytestmark = pytest.mark.e2e
DEAD = "http://127.0.0.1:9/v1"  # nothing listens on the discard port


def chain_settings(models_dir, tmp_path) -> Settings:
    return Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / "memory"), openai_api_key="sk-test",
                    openai_base_url=DEAD, stt={"provider": ["openai", "local"], "retries": 0, "timeout_s": 5},
                    tts={"provider": ["openai", "local"], "retries": 0, "timeout_s": 5})


def test_provider_lists_build_fallback_chains_in_order(models_dir, tmp_path):
    settings = chain_settings(models_dir, tmp_path)
    speech = SpeechEngines(settings, metrics=None)
    stt, tts = speech.stt(), speech.tts()
    assert isinstance(stt, FallbackSTT) and [e.provider for e in stt.engines] == ["openai-stt", "faster-whisper"]
    assert isinstance(tts, FallbackTTS) and [e.provider for e in tts.engines] == ["openai-tts", "piper"]
    single = SpeechEngines(Settings(models_dir=models_dir), metrics=None)
    assert single.stt().provider == "faster-whisper" and single.tts().provider == "piper"


async def test_a_dead_first_provider_is_served_by_the_next_and_the_caller_hears_the_reply(models_dir, tmp_path):
    model = ScriptedChatModel(["The capital of France is Paris."])
    agent = Agent(name="Assistant", instructions="Be brief.", model=model)
    settings = chain_settings(models_dir, tmp_path)
    question = speak(models_dir, "What is the capital of France?", lead_silence_ms=300)
    async with voice_server(agent=agent, settings=settings, engines_from_settings=True) as vs:
        await vs.server.load_engines()
        async with VoiceClient.connect(vs.ws_url) as client:
            turn = await client.ask_audio(question, realtime=False, timeout=90)
        fallbacks = vs.server.metrics.provider_fallbacks
    assert "capital" in (turn.transcript or "").lower() and "france" in turn.transcript.lower()
    assert turn.reply_text == "The capital of France is Paris."
    assert len(turn.audio) > 16000 and rms_dbfs(turn.audio) > -35
    assert not turn.errors
    assert fallbacks.labels("stt")._value.get() >= 1 and fallbacks.labels("tts")._value.get() >= 1
