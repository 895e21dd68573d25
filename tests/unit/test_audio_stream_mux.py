"""Streaming speech encoders (audio/stream_mux.py): every /v1/audio/speech format comes out piece by piece as it is
fed, and what comes out decodes to the audio that went in."""

from __future__ import annotations

import numpy as np
import pytest

from voiceserver.audio import decode_audio
from voiceserver.audio.stream_mux import SPEECH_FORMATS, MuxedEncoder, speech_encoder


def tone(seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("fmt", SPEECH_FORMATS)
def test_each_format_streams_and_decodes(fmt):
    pcm = tone(2.0)
    encoder = speech_encoder(fmt, 24000)
    pieces = [encoder.encode(pcm[i:i + 4801]) for i in range(0, len(pcm), 4801)]  # odd sizes: a sample split
    pieces.append(encoder.finish())
    data = b"".join(pieces)
    assert sum(1 for p in pieces[:-1] if p) >= 2, "nothing came out before the end"
    if fmt == "pcm":
        assert data == pcm
        return
    decoded = decode_audio(data)
    assert abs(decoded.duration_ms - 2000) < 80
    samples = np.frombuffer(decoded.audio, dtype="<i2").astype(np.float64)
    assert 0.15 < np.sqrt(np.mean(samples ** 2)) / 32767 < 0.3  # the tone's level (0.3 peak: 0.21 rms)


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="allowed"):
        speech_encoder("ogg", 24000)
    encoder = MuxedEncoder("flac", 24000)
    encoder.finish()
    with pytest.raises(ValueError, match="finished"):
        encoder.encode(b"\x00\x00")
