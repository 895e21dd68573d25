"""faster-whisper with the real Whisper base model, fed speech synthesised by the real Piper voice."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio

from voiceserver.audio import rms_dbfs
from voiceserver.audio.format import AudioChunk
from voiceserver.engines import ProviderError
from voiceserver.metrics import Metrics
from voiceserver.stt.faster_whisper import FasterWhisperSTT
from voiceserver.testing.loop import LoopTicker
from voiceserver.tts.piper import PiperTTS
from voiceserver.voice import CompositeVoice

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

QUESTION = "What is the weather like in London today?"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def piper(models_dir):
    # No sampling noise: the same text always gives the same audio, so transcripts are reproducible.
    tts = PiperTTS(models_dir / "piper" / "en_US-joe-medium.onnx", noise_scale=0.0, noise_w_scale=0.0)
    await tts.load()
    return tts


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def whisper(models_dir):
    stt = FasterWhisperSTT(models_dir / "whisper-base", threads=2, workers=1, language="en", metrics=Metrics.null())
    await stt.warmup()
    return stt


async def synthesize(tts: PiperTTS, text: str) -> AudioChunk:
    chunks = [c async for c in tts.synthesize(text)]
    return AudioChunk(b"".join(c.audio for c in chunks), chunks[0].sample_rate)


def words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


async def test_transcribes_a_piper_sentence(whisper, piper):
    audio = await synthesize(piper, QUESTION)
    assert audio.sample_rate == 22050  # the provider resamples to 16 kHz itself
    result = await whisper.transcribe(audio)
    assert {"what", "weather", "london", "today"} <= words(result.text), result.text
    assert result.language == "en"
    assert result.duration_ms == pytest.approx(audio.duration_ms, rel=0.01)


async def test_speech_padded_with_silence(whisper, piper):
    speech = await synthesize(piper, "Please turn on the kitchen lights.")
    pad = bytes(int(speech.sample_rate * 0.5) * 2)
    result = await whisper.transcribe(AudioChunk(pad + speech.audio + pad, speech.sample_rate))
    assert {"turn", "kitchen", "lights"} <= words(result.text), result.text


@pytest.mark.parametrize("audio", [
    AudioChunk(b"", 16000),
    AudioChunk(np.full(800, 3000, dtype="<i2").tobytes(), 16000),  # 50 ms: too short to hold a word
    AudioChunk(bytes(32000), 16000),  # 1 s of digital silence
    AudioChunk(b"\xff" * 8000, 8000, "mulaw"),  # 1 s of mu-law silence (0xFF is zero)
], ids=["empty", "50ms", "silence", "mulaw"])
async def test_empty_or_very_short_audio_gives_empty_text(whisper, audio):
    result = await whisper.transcribe(audio)
    assert result.text == ""


async def test_quiet_noise_is_not_hallucinated_into_words(whisper):
    noise = np.random.default_rng(7).normal(0, 300, 32000).astype("<i2").tobytes()
    assert rms_dbfs(noise) > -50  # real signal, so the model does run
    assert (await whisper.transcribe(AudioChunk(noise, 16000))).text == ""


async def test_transcription_runs_off_the_event_loop(whisper, piper):
    """The whole decode (including the lazy segment generator) runs in a worker thread: the loop keeps ticking."""
    audio = await synthesize(piper, QUESTION)
    async with LoopTicker() as ticker:
        ticks_at_start = ticker.ticks
        result = await whisper.transcribe(audio)
        ticks_during = ticker.ticks - ticks_at_start
    assert "weather" in result.text.lower()
    # Had the decode run on the loop, the ticker could not have run at all while it lasted.
    assert ticks_during >= 10


async def test_parallel_calls_share_the_engine_within_its_bound(whisper, piper):
    audio = await synthesize(piper, "Set a timer for ten minutes.")
    seen_waiting = 0

    async def watch():
        nonlocal seen_waiting
        while True:
            seen_waiting = max(seen_waiting, whisper.gate.waiting)
            assert whisper.gate.busy <= whisper.gate.concurrency
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(whisper.transcribe(audio) for _ in range(3)))
    finally:
        watcher.cancel()
    assert all("timer" in r.text.lower() for r in results)
    assert seen_waiting >= 1  # workers=1: the others queued for the slot
    assert whisper.gate.busy == 0 and whisper.gate.waiting == 0


async def test_missing_model_is_a_clear_error(tmp_path):
    stt = FasterWhisperSTT(tmp_path / "nothing-here")
    with pytest.raises(ProviderError) as info:
        await stt.transcribe(AudioChunk(np.full(16000, 1000, dtype="<i2").tobytes(), 16000))
    assert info.value.code == "model_missing"
    assert "voiceserver models fetch" in info.value.message


@pytest.mark.parametrize("filetype", ["wav", "mp3", "m4a"])
async def test_composite_voice_round_trip(whisper, piper, filetype):
    """speak() with Piper in a container, listen() to those bytes with Whisper."""
    voice = CompositeVoice(input=whisper, output=piper)
    data = b"".join([piece async for piece in voice.speak(QUESTION, filetype=filetype)])
    heard = await voice.listen(data)
    assert {"weather", "london", "today"} <= words(heard), heard
