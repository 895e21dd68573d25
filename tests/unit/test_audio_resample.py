"""The streaming resampler: accuracy, anti-aliasing, alignment, and chunked == one-shot output."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceserver.audio import Resampler, float32_to_pcm16, resample_pcm16, rms_dbfs

RATE_PAIRS = [(22050, 16000), (48000, 16000), (24000, 16000), (8000, 16000), (16000, 8000), (16000, 48000),
              (22050, 8000), (22050, 24000), (22050, 48000)]


def tone(rate: int, freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return float32_to_pcm16((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def middle_dbfs(pcm: bytes) -> float:
    """Level of the middle half, away from the start/end transients."""
    n = len(pcm) // 2
    return rms_dbfs(pcm[n // 2 // 2 * 2 : (n - n // 4) * 2])


def chunked(resampler: Resampler, pcm: bytes, sizes: list[int]) -> bytes:
    out, pos = [], 0
    for size in sizes:
        out.append(resampler.process(pcm[pos : pos + 2 * size]))
        pos += 2 * size
    out.append(resampler.process(pcm[pos:]))
    out.append(resampler.flush())
    return b"".join(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_sine_is_reproduced_accurately(in_rate, out_rate):
    out = samples(resample_pcm16(tone(in_rate, 440.0), in_rate, out_rate))
    assert abs(out.size - out_rate) <= 2  # one second in, one second out
    t = np.arange(out.size) / out_rate
    ideal = 0.5 * np.sin(2 * np.pi * 440.0 * t) * 32768
    middle = slice(out.size // 10, out.size - out.size // 10)
    # Aligned in time (no delay) and accurate to a few LSB: a delay of even one output sample would give
    # errors of ~400 LSB at this frequency.
    assert np.max(np.abs(out[middle] - ideal[middle])) < 8


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48000, 16000), (22050, 16000), (22050, 8000), (24000, 16000)])
def test_downsampling_rejects_what_would_alias(in_rate, out_rate):
    nyquist = out_rate / 2
    passband = resample_pcm16(tone(in_rate, 0.8 * nyquist), in_rate, out_rate)
    assert middle_dbfs(passband) == pytest.approx(middle_dbfs(tone(in_rate, 0.8 * nyquist)), abs=0.5)
    for ratio in (1.1, 1.3):
        if ratio * nyquist < in_rate / 2:
            aliased = resample_pcm16(tone(in_rate, ratio * nyquist), in_rate, out_rate)
            # Without a low-pass this would come back at full level (-9 dBFS) folded below Nyquist.
            assert middle_dbfs(aliased) < -70


def test_impulse_stays_in_place():
    for in_rate, out_rate in [(48000, 16000), (22050, 16000), (8000, 16000)]:
        impulse = np.zeros(in_rate // 10, dtype="<i2")
        impulse[in_rate // 20] = 20000  # at 50 ms
        out = samples(resample_pcm16(impulse.tobytes(), in_rate, out_rate))
        assert abs(int(np.argmax(out)) - out_rate // 20) <= 1


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(RATE_PAIRS),
    sizes=st.lists(st.integers(min_value=0, max_value=700), max_size=25),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_chunked_output_equals_one_shot(pair, sizes, seed):
    in_rate, out_rate = pair
    rng = np.random.default_rng(seed)
    n = max(sum(sizes) + int(rng.integers(0, 500)), 1)
    # Speech-band noise plus a tone: anything discontinuous at a boundary would show up as a difference.
    signal = 0.3 * rng.standard_normal(n) + 0.3 * np.sin(np.arange(n) * 0.05)
    pcm = float32_to_pcm16(np.clip(signal, -1, 1).astype(np.float32))
    one_shot = samples(resample_pcm16(pcm, in_rate, out_rate))
    streamed = samples(chunked(Resampler(in_rate, out_rate), pcm, sizes))
    assert streamed.size == one_shot.size
    assert np.max(np.abs(streamed - one_shot), initial=0) <= 1


def test_flush_resets_for_a_new_stream():
    pcm = tone(22050, 300.0, 0.3)
    resampler = Resampler(22050, 16000)
    first = resampler.process(pcm) + resampler.flush()
    second = resampler.process(pcm) + resampler.flush()
    assert first == second
    assert Resampler(22050, 16000).flush() == b""


def test_equal_rates_pass_through():
    resampler = Resampler(16000, 16000)
    pcm = tone(16000, 440.0, 0.1)
    assert resampler.passthrough
    assert resampler.process(pcm) == pcm
    assert resampler.flush() == b""


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="in_rate"):
        Resampler(0, 16000)
    with pytest.raises(ValueError, match="out_rate"):
        Resampler(16000, 10_000_000)
    with pytest.raises(ValueError, match="even number of bytes"):
        Resampler(48000, 16000).process(b"\x00\x00\x00")
    assert Resampler(48000, 16000).process(b"") == b""
