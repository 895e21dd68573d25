"""End to end with the real models on a real server: a Piper-spoken question, streamed in real time, is transcribed,
answered by the local model and spoken back by Piper; and the same through `voiceserver talk`."""

import asyncio
import subprocess
import sys

import httpx
import pytest
import pytest_asyncio

from voiceserver.audio import read_wav, rms_dbfs, write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.client import VoiceClient
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import MemoryConfig, Settings
from voiceserver.testing.servers import serve_app
from voiceserver.testing.speech import speak

# One real server (models loaded once) serves every test of this module.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def question_audio(models_dir) -> bytes:
    return speak(models_dir, QUESTION, lead_silence_ms=500)


def real_settings(models_dir, tmp_path) -> Settings:
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / "memory"))
    settings.agent.memory = MemoryConfig(type="none")
    return settings


async def wait_ready(http_url: str) -> None:
    async with httpx.AsyncClient(base_url=http_url) as http:
        for _ in range(600):
            response = await http.get("/readyz")
            if response.status_code == 200:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"not ready: {response.json()}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(models_dir, tmp_path_factory):
    server = build_server(real_settings(models_dir, tmp_path_factory.mktemp("e2e")))
    async with serve_app(create_app(server)) as running:
        await wait_ready(running.http_url)
        yield running


async def test_spoken_question_gets_spoken_answer(running, question_audio):
    async with VoiceClient.connect(running.ws_url + "/v1/voice") as client:
        turn = await client.ask_audio(question_audio, realtime=True, timeout=120)
    assert not turn.errors, turn.errors
    words = turn.transcript.lower()
    assert "capital" in words and "france" in words, turn.transcript
    assert turn.reply_text.strip(), "the local model answered"
    assert len(turn.audio) > 16000, "at least half a second of reply audio"
    assert rms_dbfs(turn.audio) > -40, "the reply audio is not silent"
    assert turn.metrics["voice_to_voice_ms"] > 0 and turn.metrics["stt_ms"] is not None


async def test_talk_command_with_a_wav_file(running, tmp_path, question_audio):
    question = tmp_path / "question.wav"
    write_wav(question, AudioChunk(question_audio, 16000))
    reply = tmp_path / "reply.wav"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceserver", "talk", "--url", running.ws_url + "/v1/voice",
        "--file", str(question), "--out", str(reply), "--realtime",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "you said:" in text and "france" in text.lower() and "reply:" in text
    audio = read_wav(reply)
    assert audio.sample_rate == 16000 and audio.duration_ms > 500 and rms_dbfs(audio.audio) > -40


async def test_talk_command_with_text(running, tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceserver", "talk", "--url", running.ws_url + "/v1/voice",
        "--text", "Say hello.", "--out", str(tmp_path / "r.wav"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()
    assert "reply:" in out.decode() and (tmp_path / "r.wav").stat().st_size > 44


async def test_talk_command_reports_unreachable_server(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceserver", "talk", "--url", "ws://127.0.0.1:9/v1/voice", "--text", "hi",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert err.decode().startswith("voiceserver talk:") and "Traceback" not in err.decode()
