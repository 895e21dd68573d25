"""pcm16 <-> float32, levels, and the G.711 mu-law codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceserver.audio import (
    float32_to_pcm16,
    mulaw_decode,
    mulaw_encode,
    pcm16_samples,
    pcm16_to_float32,
    rms_dbfs,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2")


def test_pcm16_float32_round_trip_is_exact():
    pcm = ALL_SAMPLES.tobytes()
    floats = pcm16_to_float32(pcm)
    assert floats.dtype == np.float32
    assert floats.min() == -1.0 and floats.max() < 1.0
    assert float32_to_pcm16(floats) == pcm


def test_float32_to_pcm16_clips_and_rounds():
    out = np.frombuffer(float32_to_pcm16(np.array([2.0, -2.0, 0.5, 1.0, -1.0, 0.4 / 32768])), dtype="<i2")
    assert out.tolist() == [32767, -32768, 16384, 32767, -32768, 0]


def test_pcm16_rejects_odd_byte_count():
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_float32(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_samples(b"\x01")


def test_rms_dbfs_levels():
    assert rms_dbfs(b"") == -120.0
    assert rms_dbfs(bytes(640)) == -120.0
    full_square = np.tile(np.array([32767, -32768], dtype="<i2"), 100).tobytes()
    assert rms_dbfs(full_square) == pytest.approx(0.0, abs=0.01)
    t = np.arange(16000) / 16000
    sine = float32_to_pcm16(0.5 * np.sin(2 * np.pi * 440 * t))
    # A sine's RMS is amplitude / sqrt(2): 0.5 -> -9.03 dBFS.
    assert rms_dbfs(sine) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    # A trailing odd byte is ignored rather than raising: level checks take any received bytes.
    assert rms_dbfs(sine + b"\x01") == pytest.approx(rms_dbfs(sine))


def test_mulaw_reference_values():
    # G.711 mu-law: 0xFF and 0x7F are the two zeros, 0x80 / 0x00 the extremes (+-32124).
    decoded = np.frombuffer(mulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xF0, 0x70])), dtype="<i2")
    assert decoded.tolist() == [0, 0, 32124, -32124, 120, -120]
    encoded = mulaw_encode(np.array([0, 32767, -32768, 120, -120, 1, -1], dtype="<i2").tobytes())
    assert list(encoded) == [0xFF, 0x80, 0x00, 0xF0, 0x70, 0xFF, 0x7F]


def test_mulaw_every_code_round_trips():
    codes = bytes(range(256))
    back = mulaw_encode(mulaw_decode(codes))
    # Every code survives except negative zero (0x7F), which decodes to 0 and encodes as positive zero (0xFF).
    assert [c for c, b in zip(codes, back, strict=True) if c != b] == [0x7F]
    assert back[0x7F] == 0xFF


def test_mulaw_round_trip_error_is_within_half_a_step():
    decoded = np.frombuffer(mulaw_decode(mulaw_encode(ALL_SAMPLES.tobytes())), dtype="<i2").astype(np.int32)
    original = ALL_SAMPLES.astype(np.int32)
    error = np.abs(decoded - original)
    # mu-law's step doubles per segment, so the error (half a step) grows with the magnitude: at most about
    # 1/16 of it at a segment's low end, 4 near zero. Values past the largest code (32124) saturate there.
    bound = np.abs(original) // 15 + 4
    in_range = np.abs(original) <= 32124
    assert np.all(error[in_range] <= bound[in_range])
    assert np.all(np.abs(decoded[~in_range]) == 32124)
    # The sign is always kept (a zero may come back for the tiniest values).
    assert np.all(np.sign(decoded) * np.sign(original) >= 0)


def test_mulaw_encode_is_monotonic_in_decoded_value():
    decoded = np.frombuffer(mulaw_decode(mulaw_encode(ALL_SAMPLES.tobytes())), dtype="<i2")
    assert np.all(np.diff(decoded.astype(np.int32)) >= 0)


@given(st.binary(max_size=512))
def test_mulaw_decode_then_encode_is_stable(data: bytes):
    once = mulaw_encode(mulaw_decode(data))
    assert mulaw_encode(mulaw_decode(once)) == once
    assert len(mulaw_decode(data)) == 2 * len(data)


def test_mulaw_encode_rejects_odd_bytes_and_handles_empty():
    assert mulaw_encode(b"") == b"" and mulaw_decode(b"") == b""
    with pytest.raises(ValueError, match="even number of bytes"):
        mulaw_encode(b"\x00")
