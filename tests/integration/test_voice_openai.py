"""OpenAI speech-to-text and text-to-speech against the loopback server speaking OpenAI's documented wire format."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from voiceserver.audio import decode_audio, read_wav, rms_dbfs
from voiceserver.audio.format import AudioChunk
from voiceserver.engines import ProviderError
from voiceserver.metrics import Metrics
from voiceserver.stt.openai import OpenAISTT
from voiceserver.testing.fake_openai import FakeOpenAI
from voiceserver.testing.fake_openai.audio import audio_routes, tone_pcm16
from voiceserver.tts.openai import OPENAI_VOICES, OpenAITTS
from voiceserver.voice import CompositeVoice

KEY = "sk-test-0123456789"


@pytest.fixture
async def track():
    """Register providers; their HTTP clients are closed at the end of the test, inside its event loop."""
    providers = []

    def add(provider):
        providers.append(provider)
        return provider

    yield add
    for provider in providers:
        await provider.close()


def speech_chunk(seconds: float = 1.0, rate: int = 16000) -> AudioChunk:
    return AudioChunk(tone_pcm16(seconds, rate), rate)


async def test_transcription_request_shape_and_json_response():
    async with FakeOpenAI(audio_routes(transcripts=["What is the weather?"]), api_key=KEY) as fake:
        stt = OpenAISTT("gpt-4o-transcribe", api_key=KEY, base_url=fake.base_url, language="en",
                        prompt="weather, London")
        # 48 kHz input: the provider sends 16 kHz mono WAV whatever it is given.
        result = await stt.transcribe(speech_chunk(1.0, 48000))
        await stt.close()
    assert result.text == "What is the weather?"
    assert len(fake.requests) == 1
    path, fields = fake.requests[0]
    assert path == "/v1/audio/transcriptions"
    assert fields["model"] == "gpt-4o-transcribe"
    assert fields["language"] == "en"
    assert fields["prompt"] == "weather, London"
    assert fields["response_format"] == "json"
    upload = fields["file"]
    assert upload["filename"] == "audio.wav" and upload["content_type"] == "audio/wav"
    sent = read_wav(upload["data"])
    assert sent.sample_rate == 16000
    assert abs(sent.duration_ms - 1000) < 5
    assert rms_dbfs(sent.audio) > -20


async def test_transcription_default_model_and_no_optional_fields(track):
    async with FakeOpenAI(audio_routes()) as fake:
        stt = track(OpenAISTT(api_key="anything", base_url=fake.base_url))
        assert await stt.transcribe(speech_chunk()) == await stt.transcribe(speech_chunk())
        silent = await stt.transcribe(AudioChunk(bytes(32000), 16000))
    _, fields = fake.requests[0]
    assert fields["model"] == "whisper-1"
    assert "language" not in fields and "prompt" not in fields
    assert silent.text == ""


async def test_transcription_retries_a_500_then_succeeds(track):
    metrics = Metrics.null()
    async with FakeOpenAI(audio_routes(transcripts=["second try"], fail_first=1), api_key=KEY) as fake:
        stt = track(OpenAISTT(api_key=KEY, base_url=fake.base_url, retries=1, metrics=metrics))
        result = await stt.transcribe(speech_chunk())
    assert result.text == "second try"
    assert len(fake.requests) == 2  # one failure, one retry
    assert metrics.provider_calls.labels("openai-stt", "stt", "stt_unavailable")._value.get() == 1
    assert metrics.provider_calls.labels("openai-stt", "stt", "ok")._value.get() == 1


async def test_transcription_gives_up_after_the_retries(track):
    async with FakeOpenAI(audio_routes(fail_first=5)) as fake:
        stt = track(OpenAISTT(api_key=KEY, base_url=fake.base_url, retries=2))
        with pytest.raises(ProviderError) as info:
            await stt.transcribe(speech_chunk())
    assert info.value.code == "stt_unavailable" and info.value.retryable
    assert len(fake.requests) == 3


async def test_transcription_with_a_wrong_key_is_an_auth_error_without_retry(track):
    async with FakeOpenAI(audio_routes(), api_key=KEY) as fake:
        stt = track(OpenAISTT(api_key="sk-wrong-key-999", base_url=fake.base_url, retries=3))
        with pytest.raises(ProviderError) as info:
            await stt.transcribe(speech_chunk())
    assert info.value.code == "provider_auth"
    assert len(fake.requests) == 1


async def test_fake_server_documents_its_error_body():
    import httpx

    async with FakeOpenAI(audio_routes(), api_key=KEY) as fake, httpx.AsyncClient() as client:
        denied = await client.post(fake.base_url + "/audio/speech", json={"model": "tts-1"},
                                   headers={"Authorization": "Bearer nope"})
        missing = await client.post(fake.base_url + "/audio/speech", json={"model": "tts-1", "input": "hi"},
                                    headers={"Authorization": f"Bearer {KEY}"})
        text = await client.post(fake.base_url + "/audio/transcriptions",
                                 files={"file": ("a.wav", b"RIFF....", "audio/wav")},
                                 data={"model": "whisper-1", "response_format": "text"},
                                 headers={"Authorization": f"Bearer {KEY}"})
    assert denied.status_code == 401
    assert set(denied.json()["error"]) == {"message", "type", "param", "code"}
    assert denied.json()["error"]["code"] == "invalid_api_key"
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "voice"
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")


async def test_speech_streams_pcm_with_request_shape():
    async with FakeOpenAI(audio_routes(ms_per_char=50, chunk_bytes=1001), api_key=KEY) as fake:
        tts = OpenAITTS("gpt-4o-mini-tts", "coral", api_key=KEY, base_url=fake.base_url, speed=1.0,
                        instructions="Speak warmly.")
        chunks = [c async for c in tts.synthesize("Hello there, how are you today?")]
        await tts.close()
    path, body = fake.requests[0]
    assert path == "/v1/audio/speech"
    assert body == {"model": "gpt-4o-mini-tts", "voice": "coral", "input": "Hello there, how are you today?",
                    "response_format": "pcm", "speed": 1.0, "instructions": "Speak warmly."}
    assert len(chunks) > 1  # streamed, not one blob
    assert all(c.sample_rate == 24000 and len(c.audio) % 2 == 0 for c in chunks)
    audio = b"".join(c.audio for c in chunks)
    # Odd-sized network chunks did not shift the samples: the bytes equal the server's tone exactly.
    assert audio == tone_pcm16(len("Hello there, how are you today?") * 0.05)
    assert rms_dbfs(audio) > -20


async def test_speech_voice_and_speed_per_call(track):
    async with FakeOpenAI(audio_routes(ms_per_char=40)) as fake:
        tts = track(OpenAITTS(api_key=KEY, base_url=fake.base_url))
        normal = b"".join([c.audio async for c in tts.synthesize("Some words to say.")])
        fast = b"".join([c.audio async for c in tts.synthesize("Some words to say.", voice="nova", speed=2.0)])
    assert fake.requests[0][1]["model"] == "tts-1" and fake.requests[0][1]["voice"] == "alloy"
    assert fake.requests[1][1]["voice"] == "nova" and fake.requests[1][1]["speed"] == 2.0
    assert len(fast) == pytest.approx(len(normal) / 2, abs=4)
    assert "instructions" not in fake.requests[0][1]


async def test_speech_retries_a_500_before_audio(track):
    async with FakeOpenAI(audio_routes(fail_first=1)) as fake:
        tts = track(OpenAITTS(api_key=KEY, base_url=fake.base_url, retries=1))
        chunks = [c async for c in tts.synthesize("Retry me.")]
    assert chunks and len(fake.requests) == 2


async def test_speech_auth_error_and_bad_speed(track):
    async with FakeOpenAI(audio_routes(), api_key=KEY) as fake:
        tts = track(OpenAITTS(api_key="sk-wrong-key-999", base_url=fake.base_url, retries=2))
        with pytest.raises(ProviderError) as info:
            [c async for c in tts.synthesize("Hello.")]
        assert info.value.code == "provider_auth"
        assert len(fake.requests) == 1
        good = track(OpenAITTS(api_key=KEY, base_url=fake.base_url))
        with pytest.raises(ProviderError) as info:
            [c async for c in good.synthesize("Hello.", speed=9.0)]
        assert info.value.code == "tts_invalid_speed"


async def test_openai_voices_are_the_documented_ones(track):
    tts = track(OpenAITTS(api_key=KEY, base_url="http://127.0.0.1:9/v1"))
    speakers = await tts.get_speakers()
    assert [s["voice_id"] for s in speakers] == list(OPENAI_VOICES)
    assert {"alloy", "nova", "shimmer", "coral"} <= set(OPENAI_VOICES)
    with pytest.raises(ValueError):
        OpenAITTS()  # no key and no client


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_composite_voice_over_openai_with_fallback_from_a_dead_server():
    records = _Records()
    # The fallback chains are the FallbackSTT / FallbackTTS adapters: they log under the stage's component.
    loggers = [logging.getLogger(name) for name in ("voiceserver.voice", "voiceserver.stt", "voiceserver.tts")]
    for logger in loggers:
        logger.addHandler(records)
    metrics = Metrics.null()
    async with FakeOpenAI(audio_routes(transcripts=["from the fallback"]), api_key=KEY) as fake:
        dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
        voice = CompositeVoice(
            input=[OpenAISTT(api_key=KEY, base_url=dead, retries=0, timeout_s=5),
                   OpenAISTT(api_key=KEY, base_url=fake.base_url)],
            output=[OpenAITTS(api_key=KEY, base_url=dead, retries=0, timeout_s=5),
                    OpenAITTS(api_key=KEY, base_url=fake.base_url)],
            metrics=metrics,
        )
        try:
            text = await voice.listen(speech_chunk())
            wav = b"".join([d async for d in voice.speak("Hello from the fallback server.", filetype="wav")])
        finally:
            for logger in loggers:
                logger.removeHandler(records)
        await voice.close()
    assert text == "from the fallback"
    decoded = decode_audio(wav)
    assert decoded.sample_rate == 24000 and rms_dbfs(decoded.audio) > -20
    assert metrics.provider_fallbacks.labels("stt")._value.get() == 1
    assert metrics.provider_fallbacks.labels("tts")._value.get() == 1
    messages = records.messages
    assert any("stt provider openai-stt failed (stt_unavailable)" in m for m in messages)
    assert any("tts provider openai-tts failed (tts_unavailable)" in m for m in messages)
    assert np.frombuffer(decoded.audio, dtype="<i2").size > 0
    json.dumps(fake.requests[-1][1])  # recorded speech bodies are plain JSON
