"""G.711 A-law (OpenAI Realtime ``audio/pcma``): bit-exact against the standard library's reference codec, and as an
AudioFormat the stream converter handles like mu-law."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voiceserver.audio import StreamConverter, validate_format
from voiceserver.audio.alaw import alaw_decode, alaw_encode
from voiceserver.audio.format import AudioFormat

with warnings.catch_warnings():  # audioop is deprecated (gone in 3.13) but is the reference G.711 codec here
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def test_encode_every_sample_like_the_reference():
    samples = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert alaw_encode(samples) == audioop.lin2alaw(samples, 2)


def test_decode_every_code_like_the_reference():
    codes = bytes(range(256))
    assert alaw_decode(codes) == audioop.alaw2lin(codes, 2)


def test_round_trip_error_is_within_the_segment_step():
    t = np.arange(8000) / 8000
    pcm = (0.5 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2")
    back = np.frombuffer(alaw_decode(alaw_encode(pcm.tobytes())), dtype="<i2").astype(np.int32)
    # A-law's step in the loudest segment is 1024 (half a step of error at most).
    assert np.max(np.abs(back - pcm.astype(np.int32))) <= 512


def test_empty_and_odd_input():
    assert alaw_encode(b"") == b"" and alaw_decode(b"") == b""
    with pytest.raises(ValueError, match="even number of bytes"):
        alaw_encode(b"\x00")


def test_alaw_is_an_audio_format_at_8000_hz_only():
    assert validate_format("alaw", 8000) == AudioFormat("alaw", 8000)
    with pytest.raises(ValueError, match="allowed: 8000"):
        validate_format("alaw", 16000)


def test_stream_converter_between_alaw_mulaw_and_pcm16():
    t = np.arange(2400) / 24000
    pcm24 = (0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    to_alaw = StreamConverter(AudioFormat("pcm16", 24000), AudioFormat("alaw", 8000))
    alaw = to_alaw.convert(pcm24) + to_alaw.flush()
    assert abs(len(alaw) - 800) <= 2  # 100 ms at 8 kHz, one byte a sample
    to_mulaw = StreamConverter(AudioFormat("alaw", 8000), AudioFormat("mulaw", 8000))
    mulaw = to_mulaw.convert(alaw) + to_mulaw.flush()
    assert len(mulaw) == len(alaw)
    assert mulaw == audioop.lin2ulaw(audioop.alaw2lin(alaw, 2), 2)
    back = StreamConverter(AudioFormat("alaw", 8000), AudioFormat("pcm16", 8000))
    pcm8 = np.frombuffer(back.convert(alaw) + back.flush(), dtype="<i2")
    assert 0.2 * 32767 < np.max(np.abs(pcm8)) < 0.5 * 32767
