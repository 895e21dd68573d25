"""The segmenter over webrtcvad on real speech: sentences synthesised by the Piper voice in models/, resampled to
16 kHz with our Resampler, with silence around them, fed in 20 ms frames."""

from __future__ import annotations

import numpy as np
import pytest

from voiceserver.audio import Resampler, StreamConverter, convert_chunk
from voiceserver.audio.format import PCM16_16K, AudioChunk, AudioFormat
from voiceserver.vad import Segmenter, SegmenterConfig, SpeechEnd, SpeechPause, SpeechResume, SpeechStart

FRAME = 640
MS = 32  # bytes per millisecond at 16 kHz pcm16
SILENCE_1S = bytes(1000 * MS)


@pytest.fixture(scope="module")
def piper_voice(models_dir):
    from piper.voice import PiperVoice

    return PiperVoice.load(str(models_dir / "piper" / "en_US-joe-medium.onnx"))


@pytest.fixture(scope="module")
def speak(piper_voice):
    cache: dict[str, bytes] = {}

    def synthesize(text: str) -> bytes:
        """Piper audio at 22050 Hz resampled to 16 kHz with the streaming Resampler."""
        if text not in cache:
            chunks = list(piper_voice.synthesize(text))
            assert chunks and chunks[0].sample_rate == 22050
            resampler = Resampler(22050, 16000)
            cache[text] = b"".join(resampler.process(c.audio_int16_bytes) for c in chunks) + resampler.flush()
        return cache[text]

    return synthesize


def energy_bounds_ms(pcm: bytes, threshold_dbfs: float = -45.0) -> tuple[int, int]:
    """First and last 10 ms block above the threshold: where the sound really is."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    blocks = samples[: samples.size // 160 * 160].reshape(-1, 160)
    level = 20 * np.log10(np.sqrt(np.mean(blocks**2, axis=1)) / 32768 + 1e-12)
    loud = np.nonzero(level > threshold_dbfs)[0]
    return int(loud[0]) * 10, int(loud[-1] + 1) * 10


def feed_frames(segmenter: Segmenter, stream: bytes, frame: int = FRAME) -> list:
    events = []
    for i in range(0, len(stream), frame):
        events.extend(segmenter.feed(stream[i : i + frame]))
    return events


@pytest.mark.parametrize("aggressiveness", [1, 2, 3])
def test_one_spoken_sentence_is_one_utterance(speak, aggressiveness):
    speech = speak("What is the weather like in Paris tomorrow afternoon?")
    stream = SILENCE_1S + speech + SILENCE_1S
    speech_from, speech_to = (1000 + t for t in energy_bounds_ms(speech))
    config = SegmenterConfig(aggressiveness=aggressiveness)
    events = feed_frames(Segmenter(config), stream)

    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == 1 and len(ends) == 1, events
    start, end = starts[0], ends[0]
    # The utterance begins with the pre-roll before the first sound, and is confirmed soon after it.
    assert speech_from - config.prefix_ms - 100 <= start.start_ms <= speech_from
    assert start.confirmed_ms <= speech_from + config.min_speech_ms + 400
    # The voice ends with the last sound (webrtcvad adds a short hangover); the endpoint follows silence_ms later.
    assert speech_to - 150 <= end.last_voiced_ms <= speech_to + 300
    assert end.end_ms == end.last_voiced_ms + config.silence_ms
    assert end.reason == "silence"
    # The audio is exactly the stream between start and end: nothing cut, nothing shifted.
    assert len(end.audio) == (end.end_ms - end.start_ms) * MS
    assert end.audio == stream[end.start_ms * MS : end.end_ms * MS]


def test_two_sentences_far_apart_are_two_utterances(speak):
    first = speak("Turn on the kitchen lights.")
    second = speak("And set an alarm for seven.")
    stream = SILENCE_1S + first + SILENCE_1S + second + SILENCE_1S
    events = feed_frames(Segmenter(SegmenterConfig()), stream)
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert [type(e).__name__ for e in events if not isinstance(e, (SpeechPause, SpeechResume))] == [
        "SpeechStart", "SpeechEnd", "SpeechStart", "SpeechEnd"]
    second_from = 1000 + len(first) // MS + 1000 + energy_bounds_ms(second)[0]
    assert ends[0].end_ms < second_from <= ends[1].last_voiced_ms
    assert ends[1].start_ms >= ends[0].end_ms


def trimmed(pcm: bytes, floor: int = 200) -> bytes:
    """The speech without Piper's leading and trailing near-silence (its length varies from one synthesis to the
    next, and it adds to a gap placed after it)."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > floor)
    return samples[loud[0]: loud[-1] + 1].tobytes() if loud.size else pcm


def test_a_short_pause_between_phrases_pauses_and_resumes(speak):
    first = trimmed(speak("Let me think."))
    second = trimmed(speak("Book a table for two."))
    # Longer than pause_ms (200), shorter than the endpoint after a trailing phrase (silence_ms 500); the gap is
    # exact because the phrases are trimmed (Piper's own trailing silence made it 500 ms or more now and then).
    gap = bytes(350 * MS)
    stream = SILENCE_1S + first + gap + second + SILENCE_1S
    events = feed_frames(Segmenter(SegmenterConfig()), stream)
    names = [type(e).__name__ for e in events]
    assert names.count("SpeechStart") == 1 and names.count("SpeechEnd") == 1
    assert "SpeechPause" in names and "SpeechResume" in names
    pause = next(e for e in events if isinstance(e, SpeechPause))
    resume = next(e for e in events if isinstance(e, SpeechResume))
    end = events[-1]
    first_end = 1000 + len(first) // MS
    assert first_end <= pause.at_ms <= first_end + 350 + 200
    assert pause.at_ms < resume.at_ms < end.end_ms
    assert end.audio.startswith(pause.audio)


def test_telephone_audio_mulaw_8k_is_segmented_after_conversion(speak):
    # A caller on a phone line: 8 kHz mu-law, converted back to 16 kHz pcm16 in 20 ms frames as the session does.
    speech = speak("I would like to speak to somebody about my bill, please.")
    stream = SILENCE_1S + speech + SILENCE_1S
    phone = convert_chunk(AudioChunk(stream), AudioFormat("mulaw", 8000)).audio
    converter = StreamConverter(AudioFormat("mulaw", 8000), PCM16_16K)
    segmenter = Segmenter(SegmenterConfig())
    events = []
    for i in range(0, len(phone), 160):  # 20 ms of 8 kHz mu-law
        events.extend(segmenter.feed(converter.convert(phone[i : i + 160])))
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(ends) == 1
    speech_from, speech_to = (1000 + t for t in energy_bounds_ms(speech))
    assert ends[0].start_ms <= speech_from and speech_to - 150 <= ends[0].last_voiced_ms <= speech_to + 300
