"""StreamConverter, convert_chunk and to_pcm16_16k: encodings, rates, odd-byte carry, framing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceserver.audio import (
    Framer,
    StreamConverter,
    convert_chunk,
    float32_to_pcm16,
    mulaw_decode,
    mulaw_encode,
    resample_pcm16,
    to_pcm16_16k,
)
from voiceserver.audio.format import PCM16_16K, AudioChunk, AudioFormat


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return float32_to_pcm16((0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def feed_in_pieces(converter: StreamConverter, data: bytes, piece: int) -> bytes:
    out = [converter.convert(data[i : i + piece]) for i in range(0, len(data), piece)]
    return b"".join(out) + converter.flush()


def test_pcm16_passthrough_keeps_odd_byte_for_next_call():
    converter = StreamConverter(PCM16_16K, PCM16_16K)
    data = tone(16000, 0.1)
    assert converter.convert(data[:641]) == data[:640]
    assert converter.pending_bytes == 1
    assert converter.convert(data[641:1283]) == data[640:1282]
    assert converter.convert(data[1283:]) == data[1282:]
    assert converter.pending_bytes == 0


@pytest.mark.parametrize("piece", [1, 3, 641, 999])
def test_odd_sized_pieces_never_shift_the_stream(piece):
    data = tone(48000, 0.3)
    whole = StreamConverter(AudioFormat("pcm16", 48000), PCM16_16K)
    expected = whole.convert(data) + whole.flush()
    pieces = feed_in_pieces(StreamConverter(AudioFormat("pcm16", 48000), PCM16_16K), data, piece)
    assert len(pieces) == len(expected)
    diff = np.abs(np.frombuffer(pieces, "<i2").astype(int) - np.frombuffer(expected, "<i2"))
    assert diff.max() <= 1


def test_mulaw_8k_to_pcm16_16k_matches_decode_then_resample():
    mulaw = mulaw_encode(tone(8000, 0.5))
    converter = StreamConverter(AudioFormat("mulaw", 8000), PCM16_16K)
    out = feed_in_pieces(converter, mulaw, 160)
    assert out == resample_pcm16(mulaw_decode(mulaw), 8000, 16000)
    assert len(out) == 2 * 2 * len(mulaw)  # twice the samples, two bytes each


def test_pcm16_22050_to_mulaw_8k():
    pcm = tone(22050, 1.0)
    out = feed_in_pieces(StreamConverter(AudioFormat("pcm16", 22050), AudioFormat("mulaw", 8000)), pcm, 2205)
    assert abs(len(out) - 8000) <= 2
    assert out == mulaw_encode(resample_pcm16(pcm, 22050, 8000))


def test_mulaw_passthrough_and_mulaw_to_pcm16_same_rate():
    mulaw = bytes(range(256))
    same = StreamConverter(AudioFormat("mulaw", 8000), AudioFormat("mulaw", 8000))
    assert same.convert(mulaw) == mulaw and same.flush() == b""
    decode = StreamConverter(AudioFormat("mulaw", 8000), AudioFormat("pcm16", 8000))
    assert decode.convert(mulaw) == mulaw_decode(mulaw)


def test_unsupported_formats_are_rejected():
    with pytest.raises(ValueError, match="allowed: pcm16, mulaw"):
        StreamConverter(AudioFormat("opus", 48000), PCM16_16K)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mono"):
        StreamConverter(AudioFormat("pcm16", 16000, channels=2), PCM16_16K)


def test_to_pcm16_16k_passthrough_and_conversion():
    pcm = tone(16000, 0.2)
    assert to_pcm16_16k(AudioChunk(pcm)) is pcm
    mulaw = mulaw_encode(tone(8000, 0.2))
    assert len(to_pcm16_16k(AudioChunk(mulaw, 8000, "mulaw"))) == 4 * len(mulaw)
    out48 = to_pcm16_16k(AudioChunk(tone(48000, 0.2), 48000))
    assert abs(len(out48) // 2 - 3200) <= 2


def test_convert_chunk_sets_format():
    chunk = AudioChunk(tone(22050, 0.5), 22050)
    out = convert_chunk(chunk, AudioFormat("mulaw", 8000))
    assert (out.encoding, out.sample_rate) == ("mulaw", 8000)
    assert out.duration_ms == pytest.approx(500, abs=1)
    assert convert_chunk(out, out.format) is out


# --- Framer ---------------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(frame_bytes=st.integers(min_value=1, max_value=700), pieces=st.lists(st.binary(max_size=1500), max_size=20))
def test_framer_emits_exact_frames_in_order(frame_bytes, pieces):
    framer = Framer(frame_bytes)
    frames = [frame for piece in pieces for frame in framer.push(piece)]
    stream = b"".join(pieces)
    assert all(len(frame) == frame_bytes for frame in frames)
    assert b"".join(frames) + framer.flush() == stream
    assert len(frames) == len(stream) // frame_bytes
    assert framer.pending == 0


def test_framer_remainder_and_padding():
    framer = Framer(4)
    assert framer.push(b"abcdef") == [b"abcd"]
    assert framer.pending == 2
    assert framer.flush(pad=b"\x00") == b"ef\x00\x00"
    assert framer.push(memoryview(b"12345678")) == [b"1234", b"5678"]
    framer.push(b"x")
    framer.reset()
    assert framer.pending == 0
    with pytest.raises(ValueError, match="positive int"):
        Framer(0)
