"""CompositeVoice with scripted providers: listen, speak in every file type, fallback, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from voiceserver.audio import decode_audio, rms_dbfs, wav_bytes, wav_header
from voiceserver.audio.format import AudioChunk
from voiceserver.engines import NotConfiguredError, ProviderError
from voiceserver.metrics import Metrics
from voiceserver.stt.base import SpeechToText, TranscriptResult
from voiceserver.testing.fake_openai.audio import tone_pcm16
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.tts.base import TextToSpeech, TtsCapabilities
from voiceserver.voice import CompositeVoice

TEXT = "Hello there, my friend. The weather today is sunny and warm."


class BrokenSTT(SpeechToText):
    provider = "broken-stt"

    def __init__(self, exc: Exception, **kwargs):
        super().__init__(retries=0, **kwargs)
        self.exc = exc
        self.calls = 0

    async def _transcribe(self, audio: bytes, language: str | None) -> TranscriptResult:
        self.calls += 1
        raise self.exc


class BrokenTTS(TextToSpeech):
    """Fails after ``good_chunks`` chunks of a tone."""

    provider = "broken-tts"

    def __init__(self, exc: Exception, good_chunks: int = 0, sample_rate: int = 16000, **kwargs):
        super().__init__(retries=0, **kwargs)
        self.capabilities = TtsCapabilities(sample_rate=sample_rate, voices=("broken",))
        self.exc = exc
        self.good_chunks = good_chunks
        self.calls = 0

    async def _synthesize(self, text: str, voice: str | None, speed: float) -> AsyncIterator[AudioChunk]:
        self.calls += 1
        for _ in range(self.good_chunks):
            yield AudioChunk(tone_pcm16(0.1, self.sample_rate), self.sample_rate)
        raise self.exc


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def voice_log():
    # The fallback chains are the FallbackSTT / FallbackTTS adapters: they log under their stage's component.
    records = Records()
    loggers = [logging.getLogger(name) for name in ("voiceserver.voice", "voiceserver.stt", "voiceserver.tts")]
    for logger in loggers:
        logger.addHandler(records)
    yield records
    for logger in loggers:
        logger.removeHandler(records)


def speech(seconds: float = 1.0, rate: int = 16000) -> AudioChunk:
    return AudioChunk(tone_pcm16(seconds, rate), rate)


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in stream]


# --- listen ---------------------------------------------------------------------------------------------------------


async def test_listen_accepts_a_chunk_wav_bytes_and_a_path(tmp_path):
    stt = ScriptedSTT(["one", "two", "three"])
    voice = CompositeVoice(input=stt)
    path = tmp_path / "question.wav"
    path.write_bytes(wav_bytes(speech(0.5, 48000)))
    assert await voice.listen(speech(0.5)) == "one"
    assert await voice.listen(wav_bytes(speech(0.5, 8000))) == "two"
    assert await voice.listen(path) == "three"
    # Every input reached the provider as 16 kHz pcm16 of the same length.
    assert stt.calls == [16000, 16000, 16000]


async def test_listen_accepts_compressed_audio():
    from voiceserver.audio import encode_audio

    stt = ScriptedSTT(["from mp3"])
    voice = CompositeVoice(input=stt)
    assert await voice.listen(encode_audio(tone_pcm16(0.5, 24000), 24000, "mp3")) == "from mp3"
    assert stt.calls and stt.calls[0] > 14000


@pytest.mark.parametrize("bad", [b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk", "/no/such/file.wav", 42])
async def test_listen_rejects_unreadable_audio_with_a_code(bad):
    stt = ScriptedSTT(["never"])
    voice = CompositeVoice(input=stt)
    with pytest.raises(ProviderError) as info:
        await voice.listen(bad)
    assert info.value.code == "invalid_audio"
    assert stt.calls == []


async def test_listen_falls_back_and_logs_and_counts(voice_log):
    metrics = Metrics.null()
    broken = BrokenSTT(ProviderError("stt_unavailable", "down", retryable=True))
    voice = CompositeVoice(input=[broken, ScriptedSTT(["fallback text"])], metrics=metrics)
    assert await voice.listen(speech()) == "fallback text"
    assert broken.calls == 1
    assert metrics.provider_fallbacks.labels("stt")._value.get() == 1
    assert any("broken-stt failed (stt_unavailable); falling back to scripted-stt" in m for m in voice_log.messages)


async def test_listen_falls_back_on_timeout():
    slow = ScriptedSTT(["too late"], delay_s=30, timeout_s=0.05, retries=0)
    voice = CompositeVoice(input=[slow, ScriptedSTT(["in time"])])
    assert await voice.listen(speech()) == "in time"


async def test_listen_raises_the_last_error_when_every_provider_fails():
    voice = CompositeVoice(input=[BrokenSTT(RuntimeError("boom")), BrokenSTT(RuntimeError("bang"))])
    with pytest.raises(ProviderError) as info:
        await voice.listen(speech())
    assert info.value.code == "stt_failed"
    assert "bang" in info.value.message


# --- speak ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filetype", ["pcm", "wav", "mp3", "m4a"])
async def test_speak_every_filetype_decodes_back_and_is_not_silent(filetype):
    tts = ToneTTS(sample_rate=22050, ms_per_char=20)
    voice = CompositeVoice(output=tts)
    pieces = await collect(voice.speak(TEXT, filetype=filetype))
    data = b"".join(pieces)
    if filetype == "pcm":
        assert voice.output_sample_rate == 22050
        data = wav_header(22050, len(data)) + data
    decoded = decode_audio(data)
    assert rms_dbfs(decoded.audio) > -20
    expected_ms = len(TEXT) * 20  # ToneTTS speaks 20 ms per character; phrases drop only the joining spaces
    assert decoded.duration_ms == pytest.approx(expected_ms, rel=0.1)
    if filetype in ("pcm", "wav", "mp3"):
        assert len(pieces) > 1  # streamed as produced
    assert tts.phrases == ["Hello there, my friend.", "The weather today is sunny and warm."]


async def test_speak_passes_speaker_and_speed():
    tts = ToneTTS(sample_rate=16000, ms_per_char=10)
    voice = CompositeVoice(output=tts)
    normal = b"".join(await collect(voice.speak("Some words here.", filetype="pcm")))
    fast = b"".join(await collect(voice.speak("Some words here.", speaker="tone", speed=2.0, filetype="pcm")))
    assert len(fast) == pytest.approx(len(normal) / 2, rel=0.05)


async def test_speak_strips_markdown_before_the_provider():
    tts = ToneTTS()
    await collect(CompositeVoice(output=tts).speak("**Bold** move.\n- a `list` item"))
    assert tts.phrases == ["Bold move.", "a list item"]


async def test_speak_falls_back_before_audio_and_resamples_to_the_primary_rate(voice_log):
    metrics = Metrics.null()
    broken = BrokenTTS(ProviderError("tts_unavailable", "down", retryable=True), sample_rate=16000)
    backup = ToneTTS(sample_rate=24000, ms_per_char=20)
    voice = CompositeVoice(output=[broken, backup], metrics=metrics)
    assert voice.output_sample_rate == 16000
    pcm = b"".join(await collect(voice.speak(TEXT, filetype="pcm")))
    # The backup's 24 kHz audio arrives at the primary's 16 kHz.
    assert len(pcm) / 2 / 16000 * 1000 == pytest.approx(len(TEXT) * 20, rel=0.05)
    assert rms_dbfs(pcm) > -20
    # The switch happens once; the second phrase goes straight to the backup.
    assert broken.calls == 1 and len(backup.phrases) == 2
    assert metrics.provider_fallbacks.labels("tts")._value.get() == 1
    assert any("broken-tts failed (tts_unavailable); falling back to tone-tts" in m for m in voice_log.messages)


async def test_speak_does_not_fall_back_after_audio_was_produced():
    broken = BrokenTTS(RuntimeError("mid-phrase"), good_chunks=2)
    backup = ToneTTS()
    voice = CompositeVoice(output=[broken, backup])
    got: list[bytes] = []
    with pytest.raises(ProviderError) as info:
        async for piece in voice.speak("Just one phrase here.", filetype="pcm"):
            got.append(piece)
    assert info.value.code == "tts_failed"
    assert got and backup.phrases == []


async def test_speak_falls_back_when_first_audio_is_too_slow():
    slow = ToneTTS(first_delay_s=30)
    voice = CompositeVoice(output=[slow, ToneTTS()], first_audio_timeout_s=0.05)
    data = b"".join(await collect(voice.speak("Quick reply.", filetype="pcm")))
    assert rms_dbfs(data) > -20
    assert slow.cancelled == 1


async def test_speak_validates_arguments_at_once():
    voice = CompositeVoice(output=ToneTTS())
    with pytest.raises(ValueError, match="filetype"):
        voice.speak("hi", filetype="ogg")
    with pytest.raises(ValueError, match="speed"):
        voice.speak("hi", speed=10)
    with pytest.raises(ProviderError) as info:
        voice.speak("hi", speaker="nobody")
    assert info.value.code == "tts_invalid_voice"


async def test_speak_of_nothing_speakable_is_an_empty_stream():
    voice = CompositeVoice(output=ToneTTS())
    assert await collect(voice.speak("  ** ", filetype="pcm")) == []
    wav = b"".join(await collect(voice.speak("", filetype="wav")))
    assert wav[:4] == b"RIFF"


async def test_stopping_the_consumer_stops_synthesis():
    class Endless(TextToSpeech):
        provider = "endless"
        capabilities = TtsCapabilities(sample_rate=16000)

        def __init__(self):
            super().__init__()
            self.produced = 0
            self.closed = False

        async def _synthesize(self, text, voice, speed):
            try:
                while True:
                    self.produced += 1
                    yield AudioChunk(tone_pcm16(0.02), 16000)
            finally:
                self.closed = True

    tts = Endless()
    stream = CompositeVoice(output=tts).speak("Never ending story.", filetype="pcm")
    first = await anext(stream)
    await stream.aclose()
    produced = tts.produced
    await asyncio.sleep(0.05)
    assert first and tts.closed
    assert tts.produced == produced <= 3


# --- speakers, configuration, realtime ------------------------------------------------------------------------------


async def test_get_speakers_lists_every_output_provider():
    voice = CompositeVoice(output=[ToneTTS(), BrokenTTS(RuntimeError())])
    speakers = await voice.get_speakers()
    assert speakers == [{"voice_id": "tone", "name": "tone", "provider": "tone-tts"},
                        {"voice_id": "broken", "name": "broken", "provider": "broken-tts"}]


async def test_missing_providers_raise_clear_errors():
    voice = CompositeVoice()
    with pytest.raises(NotConfiguredError, match="No speech-to-text provider configured"):
        await voice.listen(speech())
    with pytest.raises(NotConfiguredError, match="No text-to-speech provider configured"):
        voice.speak("hello")
    with pytest.raises(NotConfiguredError, match="No text-to-speech provider configured"):
        await voice.get_speakers()
    assert voice.output_sample_rate is None
    only_ears = CompositeVoice(input=ScriptedSTT(["hi"]))
    with pytest.raises(NotConfiguredError) as info:
        only_ears.speak("hello")
    assert info.value.code == "not_configured"


async def test_providers_of_the_wrong_kind_are_rejected():
    with pytest.raises(TypeError):
        CompositeVoice(input=ToneTTS())
    with pytest.raises(TypeError):
        CompositeVoice(output=[ScriptedSTT(["x"])])


async def test_realtime_provider_is_stored_and_delegated_to():
    class Realtime:
        output_sample_rate = 24000

        async def listen(self, audio):
            return "heard by realtime"

        async def _speak(self, text):
            yield b"realtime:" + text.encode()

        def speak(self, text, speaker=None, speed=None, filetype="wav"):
            return self._speak(text)

        async def get_speakers(self):
            return [{"voice_id": "rt", "name": "rt"}]

    realtime = Realtime()
    voice = CompositeVoice(realtime=realtime)
    assert voice.realtime is realtime
    assert await voice.listen(speech()) == "heard by realtime"
    assert await collect(voice.speak("hi")) == [b"realtime:hi"]
    assert await voice.get_speakers() == [{"voice_id": "rt", "name": "rt"}]
    assert voice.output_sample_rate == 24000
    # Explicit providers win over the realtime object.
    both = CompositeVoice(input=ScriptedSTT(["from input"]), realtime=realtime)
    assert await both.listen(speech()) == "from input"


async def test_load_and_close_reach_every_provider():
    calls: list[str] = []

    class Tracked(ToneTTS):
        async def load(self):
            calls.append("load")

        async def close(self):
            calls.append("close")

    voice = CompositeVoice(input=ScriptedSTT(["x"]), output=[Tracked(), Tracked()])
    await voice.load()
    await voice.close()
    assert calls == ["load", "load", "close", "close"]
    await asyncio.sleep(0)
