"""The OpenAI-compatible audio REST API with the real models (faster-whisper, Piper) on a real server, the official
``openai`` SDK as the client: transcriptions in every response format from several containers, speech streamed in
every format and decoding to the words it was given, the model list, and OpenAI-shaped errors with their limits."""

from __future__ import annotations

import httpx
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from voiceserver.agent import Agent
from voiceserver.audio import decode_audio, encode_audio, rms_dbfs, to_pcm16_16k, wav_bytes
from voiceserver.audio.format import AudioChunk
from voiceserver.audio.stream_mux import speech_encoder
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import MemoryConfig, Settings
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.servers import serve_app
from voiceserver.testing.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
SENTENCE = "The quick brown fox jumps over the lazy dog."
SPOKEN = "Please book a table for two people tomorrow evening."


def words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


@pytest.fixture(scope="module")
def question(models_dir) -> bytes:
    return speak(models_dir, SENTENCE, lead_silence_ms=300)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(models_dir, tmp_path_factory):
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path_factory.mktemp("rest") / "memory"),
                        openai_endpoints={"max_upload_bytes": 400_000, "max_speech_chars": 300})
    settings.agent.memory = MemoryConfig(type="none")
    agent = Agent(name="Concierge", instructions="x", model=ScriptedChatModel(["unused"]))
    server = build_server(settings, agents={"Concierge": agent})  # real speech engines, no chat model to load
    async with serve_app(create_app(server)) as running:
        await server.load_engines()
        assert server.engine_status() == {"stt": "ready", "tts": "ready"}
        yield running


@pytest.fixture
def client(running) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-local", base_url=running.http_url + "/v1", max_retries=0)


async def test_transcriptions_from_several_containers_and_formats(client, question):
    chunk = AudioChunk(question, 16000)
    result = await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav_bytes(chunk)))
    assert words(SENTENCE) <= words(result.text), result.text
    assert result.usage.type == "duration" and 2.5 < result.usage.seconds < 4.5
    mp3 = encode_audio(question, 16000, "mp3")
    text = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("q.mp3", mp3),
                                                    response_format="text", language="en")
    assert isinstance(text, str) and {"quick", "fox", "lazy"} <= words(text)
    ogg = speech_encoder("opus", 16000)
    opus = ogg.encode(question) + ogg.finish()
    verbose = await client.audio.transcriptions.create(model="whisper-1", file=("q.ogg", opus),
                                                       response_format="verbose_json")
    assert {"quick", "fox"} <= words(verbose.text) and verbose.language == "en"
    assert len(verbose.segments) == 1 and 0 <= verbose.segments[0].start < verbose.segments[0].end <= \
        verbose.duration + 0.05
    m4a = encode_audio(question, 16000, "m4a")
    srt = await client.audio.transcriptions.create(model="whisper-1", file=("q.m4a", m4a), response_format="srt")
    lines = srt.strip().splitlines()
    assert lines[0] == "1" and "-->" in lines[1] and lines[1].startswith("00:00:0") and "fox" in lines[2].lower()


async def test_speech_streams_every_format_and_decodes_to_the_words(client, running):
    stt = AsyncOpenAI(api_key="sk-local", base_url=running.http_url + "/v1", max_retries=0)
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        pieces = []
        async with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input=SPOKEN, response_format=fmt) as response:
            assert response.headers["content-type"].startswith("audio/")
            async for piece in response.iter_bytes():
                pieces.append(piece)
        data = b"".join(pieces)
        assert len(pieces) >= 2, f"{fmt}: sent in one piece, not streamed"
        audio = AudioChunk(data, 24000) if fmt == "pcm" else decode_audio(data)
        assert 2000 < audio.duration_ms < 6000 and rms_dbfs(to_pcm16_16k(audio)) > -35, fmt
        if fmt in ("mp3", "pcm"):  # what was said comes back out of our own transcription
            heard = await stt.audio.transcriptions.create(
                model="whisper-1", file=("s.wav", wav_bytes(AudioChunk(to_pcm16_16k(audio), 16000))))
            assert {"book", "table", "tomorrow"} <= words(heard.text), heard.text


async def test_models_list_names_what_is_served(client):
    models = {m.id: m for m in (await client.models.list()).data}
    assert {"Concierge", "faster-whisper", "whisper-1", "piper", "tts-1"} <= set(models)
    assert models["Concierge"].owned_by == "voiceserver"
    assert (await client.models.retrieve("whisper-1")).id == "whisper-1"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"


async def test_errors_have_openai_shape_and_limits_are_settings(client, running, question):
    cases = []
    with pytest.raises(openai.BadRequestError) as bad:
        await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", b"not audio at all"))
    cases.append((bad.value.body, "invalid_value", "file"))
    with pytest.raises(openai.BadRequestError) as bad:
        await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav_bytes(
            AudioChunk(question[:32000], 16000))), response_format="yaml")
    cases.append((bad.value.body, "invalid_value", "response_format"))
    with pytest.raises(openai.BadRequestError) as bad:
        await client.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")
    cases.append((bad.value.body, "invalid_value", "voice"))
    with pytest.raises(openai.BadRequestError) as bad:
        await client.audio.speech.create(model="tts-1", voice="alloy", input="word " * 100)
    cases.append((bad.value.body, "string_above_max_length", "input"))
    with pytest.raises(openai.BadRequestError) as bad:
        await client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="ogg")
    cases.append((bad.value.body, "invalid_value", "response_format"))
    for body, code, param in cases:
        assert body["code"] == code and body["param"] == param and body["type"] == "invalid_request_error"
        assert body["message"]
    big = wav_bytes(AudioChunk(question * 5, 16000))  # over the 400 kB upload limit of this server
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", big))
    assert too_big.value.status_code == 413 and too_big.value.body["code"] == "file_too_large"
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        missing = await http.post("/v1/audio/transcriptions", files={"model": (None, "whisper-1")})
        not_json = await http.post("/v1/audio/speech", content=b"{oops")
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    # The server still serves after all of that.
    ok = await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav_bytes(
        AudioChunk(question, 16000))))
    assert "fox" in ok.text.lower()

