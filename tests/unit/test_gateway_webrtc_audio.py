"""The WebRTC gateway's audio on values: the reply track's playback buffer and the microphone converter."""

import math

import numpy as np
import pytest

from voiceserver.audio import rms_dbfs
from voiceserver.gateway.webrtc_audio import MicConverter, PlaybackBuffer

RATE = 48000
FRAME = 960 * 2  # bytes of one 20 ms frame


def pcm(ms: float, value: int = 1000) -> bytes:
    return np.full(int(RATE * ms / 1000), value, dtype="<i2").tobytes()


def test_silence_when_nothing_is_queued():
    buffer = PlaybackBuffer()
    frame = buffer.next_frame()
    assert frame.pcm == bytes(FRAME) and frame.turn_id is None and frame.audio_ms == 0


def test_frames_are_20_ms_and_count_what_left_per_turn():
    buffer = PlaybackBuffer()
    buffer.push("t1", pcm(100))
    assert buffer.buffered_ms == pytest.approx(100)
    frames = [buffer.next_frame() for _ in range(5)]
    assert all(len(f.pcm) == FRAME and f.turn_id == "t1" and f.audio_ms == pytest.approx(20) for f in frames)
    assert [f.played_ms for f in frames] == pytest.approx([20, 40, 60, 80, 100])
    assert buffer.next_frame().turn_id is None, "the turn is still speaking but has no audio yet: silence"


def test_a_turn_that_ran_dry_keeps_its_partial_frame_until_more_comes_or_it_ends():
    buffer = PlaybackBuffer()
    buffer.push("t1", pcm(30))
    assert buffer.next_frame().played_ms == pytest.approx(20)
    assert buffer.next_frame().turn_id is None, "10 ms waits for the next phrase"
    buffer.push("t1", pcm(10, value=2000))
    joined = buffer.next_frame()
    assert joined.turn_id == "t1" and joined.played_ms == pytest.approx(40)
    samples = np.frombuffer(joined.pcm, dtype="<i2")
    assert (samples[:480] == 1000).all() and (samples[480:] == 2000).all(), "one continuous stream, in order"
    buffer.push("t1", pcm(5))
    buffer.end_turn("t1")
    tail = buffer.next_frame()
    assert tail.audio_ms == pytest.approx(5) and tail.played_ms == pytest.approx(45)
    assert np.frombuffer(tail.pcm, dtype="<i2")[240:].max() == 0, "the last frame is padded with silence"
    assert buffer.buffered_ms == 0


def test_a_new_turn_never_shares_a_frame_with_the_previous_one():
    buffer = PlaybackBuffer()
    buffer.push("t1", pcm(30))
    buffer.push("t2", pcm(20, value=-1000))
    first, second, third = buffer.next_frame(), buffer.next_frame(), buffer.next_frame()
    assert (first.turn_id, second.turn_id, third.turn_id) == ("t1", "t1", "t2")
    assert second.audio_ms == pytest.approx(10) and third.played_ms == pytest.approx(20)


def test_clear_drops_everything_not_yet_sent():
    buffer = PlaybackBuffer(capacity_ms=200)
    buffer.push("t1", pcm(150))
    buffer.next_frame()
    buffer.push("t1", pcm(100))
    assert not buffer.has_room(), "230 ms queued over a 200 ms capacity: the producer waits"
    assert buffer.clear() == pytest.approx(230)
    assert buffer.has_room() and buffer.next_frame().turn_id is None
    buffer.push("t2", pcm(20))
    assert buffer.next_frame().played_ms == pytest.approx(20), "a new turn counts from zero"


def test_odd_bytes_are_refused():
    with pytest.raises(ValueError, match="even number"):
        PlaybackBuffer().push("t1", b"\x00\x00\x00")


def tone(rate: int, ms: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.3 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2")


def test_stereo_48k_becomes_mono_16k_in_a_stream():
    converter = MicConverter(16000)
    mono = tone(RATE, 400)
    stereo = np.stack([mono, mono], axis=1).reshape(1, -1)  # packed s16, as Opus decodes
    out = b"".join(converter.convert(stereo[:, i:i + 1920], channels=2, sample_rate=RATE, planar=False)
                   for i in range(0, stereo.shape[1], 1920))
    assert abs(len(out) // 2 - 6400) < 200, "400 ms at 16 kHz (the resampler holds back a few ms)"
    assert abs(rms_dbfs(out[800:]) - rms_dbfs(mono.tobytes())) < 0.5, "the level survives downmix and resampling"


def test_downmix_averages_the_channels_and_planar_float_works():
    converter = MicConverter(48000)  # same rate: only the downmix
    left, right = np.full(960, 3000, dtype="<i2"), np.full(960, 1000, dtype="<i2")
    packed = np.stack([left, right], axis=1).reshape(1, -1)
    assert set(np.frombuffer(converter.convert(packed, channels=2, sample_rate=48000, planar=False), "<i2")) == {2000}
    planar = np.stack([left, right]).astype(np.float32) / 32768
    out = np.frombuffer(MicConverter(48000).convert(planar, channels=2, sample_rate=48000, planar=True), "<i2")
    assert abs(int(out.mean()) - 2000) <= 1


def test_mono_8k_is_resampled_up():
    out = MicConverter(16000).convert(tone(8000, 200).reshape(1, -1), channels=1, sample_rate=8000, planar=False)
    assert abs(len(out) // 2 - 3200) < 100


def test_pause_holds_the_audio_and_resume_goes_on_from_there():
    buffer = PlaybackBuffer()
    buffer.push("t1", pcm(60))
    assert buffer.next_frame().played_ms == pytest.approx(20)
    buffer.pause()
    held = [buffer.next_frame() for _ in range(3)]
    assert all(f.turn_id is None and f.pcm == bytes(FRAME) for f in held), "silence while paused, nothing counted"
    assert buffer.buffered_ms == pytest.approx(40) and buffer.playing_turn == "t1"
    buffer.resume()
    assert [buffer.next_frame().played_ms for _ in range(2)] == pytest.approx([40, 60])
    assert buffer.playing_turn is None


def test_clear_ends_a_pause():
    buffer = PlaybackBuffer()
    buffer.push("t1", pcm(60))
    buffer.pause()
    buffer.clear()
    assert not buffer.paused
    buffer.push("t2", pcm(20))
    assert buffer.next_frame().turn_id == "t2", "the next reply plays after a barge-in"
