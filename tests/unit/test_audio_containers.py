"""Encoding to pcm/wav/mp3/m4a (one-shot and streaming) and decoding back with PyAV."""

from __future__ import annotations

import numpy as np
import pytest

from voiceserver.audio import (
    FILETYPES,
    ContainerEncoder,
    decode_audio,
    encode_audio,
    float32_to_pcm16,
    read_wav,
    rms_dbfs,
)
from voiceserver.audio.containers import CONTENT_TYPES


def voice_like(rate: int, seconds: float = 1.0) -> bytes:
    """Harmonics of 150 Hz with a syllable-rate envelope: codec-friendly, clearly not silent."""
    t = np.arange(int(rate * seconds)) / rate
    signal = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return float32_to_pcm16((0.2 * signal).astype(np.float32))


def stream_encode(filetype: str, rate: int, pcm: bytes, piece: int) -> tuple[list[bytes], bytes]:
    encoder = ContainerEncoder(filetype, rate)
    parts = [encoder.encode(pcm[i : i + piece]) for i in range(0, len(pcm), piece)]
    parts.append(encoder.finish())
    return parts, b"".join(parts)


def correlation_at_best_lag(a: bytes, b: bytes, max_lag: int) -> float:
    """Peak normalised cross-correlation of b against a over lags 0..max_lag (codecs add a start delay)."""
    x = np.frombuffer(a, "<i2").astype(np.float64)
    y = np.frombuffer(b, "<i2").astype(np.float64)
    n = x.size + y.size
    corr = np.fft.irfft(np.conj(np.fft.rfft(x, n)) * np.fft.rfft(y, n), n)[: max_lag + 1]
    return float(corr.max() / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))


@pytest.mark.parametrize("filetype", ["wav", "mp3", "m4a"])
@pytest.mark.parametrize("rate", [16000, 22050, 24000])
def test_encoded_audio_decodes_back_close_to_the_input(filetype, rate):
    pcm = voice_like(rate)
    blob = encode_audio(pcm, rate, filetype)
    decoded = decode_audio(blob)
    assert decoded.sample_rate == rate
    assert rms_dbfs(decoded.audio) > -30
    assert rms_dbfs(decoded.audio) == pytest.approx(rms_dbfs(pcm), abs=1.5)
    # Duration: exact for wav; lossy codecs pad by up to a couple of frames (encoder delay and last frame).
    assert 1000 <= decoded.duration_ms <= 1000 + (0 if filetype == "wav" else 150)
    # Same waveform, not just the same level: a lossy codec keeps a speech-band signal highly correlated.
    assert correlation_at_best_lag(pcm, decoded.audio, max_lag=2 * 1152) > 0.9


@pytest.mark.parametrize("filetype", FILETYPES)
def test_streaming_encoder_matches_one_shot_and_decodes(filetype):
    rate = 24000
    pcm = voice_like(rate, 1.5)
    parts, streamed = stream_encode(filetype, rate, pcm, 961)  # odd-sized pieces: odd bytes are carried
    if filetype == "pcm":
        assert streamed == pcm
        return
    decoded = decode_audio(streamed)
    assert decoded.sample_rate == rate and rms_dbfs(decoded.audio) > -30
    assert decoded.duration_ms >= 1500
    if filetype == "wav":
        # Streamed WAV: header with unknown length first, then the samples; readers take it to the end.
        assert parts[0][:4] == b"RIFF" and parts[0][4:8] == b"\xff\xff\xff\xff"
        assert read_wav(streamed).audio == pcm
    elif filetype == "mp3":
        # Frames are released while encoding, long before finish().
        assert sum(len(p) for p in parts[:-1]) > 0.8 * len(streamed)
        assert streamed == encode_audio(pcm, rate, "mp3")
    else:
        # m4a cannot stream: everything arrives at finish().
        assert all(p == b"" for p in parts[:-1])
        assert streamed[4:8] == b"ftyp"


def test_unsupported_codec_rate_is_resampled_to_a_supported_one():
    encoder = ContainerEncoder("mp3", 44000)
    assert encoder.output_rate == 44100
    decoded = decode_audio(encode_audio(voice_like(44000, 0.5), 44000, "mp3"))
    assert decoded.sample_rate == 44100 and rms_dbfs(decoded.audio) > -30


def test_unknown_filetype_and_bad_input():
    with pytest.raises(ValueError, match="allowed: pcm, wav, mp3, m4a"):
        encode_audio(b"", 16000, "ogg")
    with pytest.raises(ValueError, match="allowed: pcm, wav, mp3, m4a"):
        ContainerEncoder("flac", 16000)
    with pytest.raises(ValueError, match="could not decode audio"):
        decode_audio(b"definitely not audio" * 20)
    encoder = ContainerEncoder("mp3", 16000)
    encoder.finish()
    with pytest.raises(ValueError, match="finished"):
        encoder.encode(b"\x00\x00")


def test_content_types_cover_every_filetype():
    assert set(CONTENT_TYPES) == set(FILETYPES)
    assert ContainerEncoder("mp3", 16000).content_type == "audio/mpeg"


def test_empty_input_gives_a_valid_empty_file():
    assert decode_audio(encode_audio(b"", 16000, "wav")).audio == b""
    assert encode_audio(b"", 16000, "pcm") == b""
