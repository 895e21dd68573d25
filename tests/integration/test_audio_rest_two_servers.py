"""The speech models on their own machine (docs/deploy.md): server A serves its faster-whisper and Piper over the
OpenAI audio API; server B runs with ``VOICE_PROVIDER=openai`` and ``OPENAI_BASE_URL`` pointing at A, so a spoken
turn on B is transcribed and spoken by A, through B's own OpenAI providers. Two real ``voiceserver serve``
processes, the real models."""

from __future__ import annotations

import re

import httpx
import pytest

from voiceserver.audio import rms_dbfs
from voiceserver.client import VoiceClient
from voiceserver.testing.processes import start_serve_process, stop_process
from voiceserver.testing.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
QUESTION = "What is the capital of France?"


def provider_calls(metrics_text: str, provider: str, operation: str) -> float:
    pattern = (rf'^voiceserver_provider_calls_total\{{operation="{operation}",outcome="ok",'
               rf'provider="{re.escape(provider)}"\}} ([0-9.e+]+)$')
    found = re.search(pattern, metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_spoken_turn_on_b_is_transcribed_and_spoken_by_a(tmp_path, models_dir):
    common = {"VOICESERVER_AGENT__MEMORY__TYPE": "none", "VOICESERVER_MODELS_DIR": str(models_dir),
              "VOICESERVER_LOG_LEVEL": "warn"}
    # A serves speech only: nothing is loaded before the first request (its chat model is never used).
    a, a_port = await start_serve_process(env={**common, "LANCEDB_URI": str(tmp_path / "a"),
                                               "VOICESERVER_PRELOAD": "false"})
    b = None
    try:
        b, b_port = await start_serve_process(env={
            **common, "LANCEDB_URI": str(tmp_path / "b"), "VOICE_PROVIDER": "openai",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{a_port}/v1", "OPENAI_API_KEY": "sk-between-our-servers"},
            timeout_s=180)
        async with httpx.AsyncClient() as http:
            engines = (await http.get(f"http://127.0.0.1:{b_port}/readyz")).json()["engines"]
        assert engines["stt"] == "ready" and engines["tts"] == "ready"
        audio = speak(models_dir, QUESTION, lead_silence_ms=400)
        async with VoiceClient.connect(f"ws://127.0.0.1:{b_port}/v1/voice") as client:
            turn = await client.ask_audio(audio, realtime=False, timeout=180)
        assert not turn.errors, turn.errors
        heard = turn.transcript.lower()
        assert "capital" in heard and "france" in heard, turn.transcript
        assert turn.reply_text.strip() and len(turn.audio) > 16000 and rms_dbfs(turn.audio) > -40
        async with httpx.AsyncClient() as http:
            a_metrics = (await http.get(f"http://127.0.0.1:{a_port}/metrics")).text
            b_metrics = (await http.get(f"http://127.0.0.1:{b_port}/metrics")).text
        # A did the work with its embedded engines; B called A through its OpenAI providers.
        assert provider_calls(a_metrics, "faster-whisper", "stt") >= 1
        assert provider_calls(a_metrics, "piper", "tts") >= 1
        assert provider_calls(b_metrics, "openai-stt", "stt") >= 1
        assert provider_calls(b_metrics, "openai-tts", "tts") >= 1
        assert provider_calls(b_metrics, "faster-whisper", "stt") == 0 and provider_calls(b_metrics, "piper",
                                                                                          "tts") == 0
    finally:
        if b is not None:
            await stop_process(b)
        await stop_process(a)
