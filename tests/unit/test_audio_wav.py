"""WAV reading (many sample formats, stereo mixdown, streamed length) and writing."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from voiceserver.audio import mulaw_encode, read_wav, wav_bytes, wav_header, write_wav
from voiceserver.audio.format import AudioChunk

RAMP = (np.arange(-16000, 16000, 7, dtype=np.int32)).astype("<i2")


def stdlib_wav(frames: bytes, rate: int, channels: int, width: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return buffer.getvalue()


def riff(format_tag: int, channels: int, rate: int, bits: int, data: bytes, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * align, align, bits, 22, bits, 0)
        fmt += struct.pack("<H", format_tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_write_then_read_round_trip(tmp_path):
    chunk = AudioChunk(RAMP.tobytes(), 22050)
    path = tmp_path / "ramp.wav"
    write_wav(path, chunk)
    assert read_wav(path) == chunk
    assert read_wav(str(path)) == chunk
    # The file is a standard WAV the stdlib reads back identically.
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        assert w.readframes(w.getnframes()) == RAMP.tobytes()


def test_read_16bit_mono_from_stdlib_writer():
    data = stdlib_wav(RAMP.tobytes(), 8000, 1, 2)
    assert read_wav(data) == AudioChunk(RAMP.tobytes(), 8000)


def test_stereo_is_mixed_down_to_mono():
    left = RAMP.astype(np.int32)
    right = -left // 2
    interleaved = np.stack([left, right], axis=1).astype("<i2").tobytes()
    chunk = read_wav(stdlib_wav(interleaved, 48000, 2, 2))
    mono = np.frombuffer(chunk.audio, dtype="<i2").astype(np.int32)
    assert chunk.sample_rate == 48000 and mono.size == left.size
    assert np.max(np.abs(mono - (left + right) / 2)) <= 1


def test_8_24_32_bit_and_float_and_mulaw_formats():
    expected = RAMP.astype(np.int32)
    u8 = (expected // 256 + 128).astype(np.uint8).tobytes()
    got8 = np.frombuffer(read_wav(stdlib_wav(u8, 16000, 1, 1)).audio, "<i2").astype(np.int32)
    assert np.max(np.abs(got8 - expected)) <= 256
    s24 = b"".join(struct.pack("<i", int(v) << 8)[:3] for v in expected)
    assert read_wav(stdlib_wav(s24, 16000, 1, 3)).audio == RAMP.tobytes()
    s32 = (expected.astype("<i4") << 16).tobytes()
    assert read_wav(stdlib_wav(s32, 16000, 1, 4)).audio == RAMP.tobytes()
    floats = (expected / 32768.0).astype("<f4").tobytes()
    assert read_wav(riff(3, 1, 16000, 32, floats)).audio == RAMP.tobytes()
    assert read_wav(riff(3, 1, 16000, 32, floats, extensible=True)).audio == RAMP.tobytes()
    mulaw = read_wav(riff(7, 1, 8000, 8, mulaw_encode(RAMP.tobytes())))
    assert mulaw.sample_rate == 8000
    assert np.max(np.abs(np.frombuffer(mulaw.audio, "<i2").astype(np.int32) - expected)) < 600


def test_streamed_wav_with_unknown_length_reads_to_the_end():
    data = wav_header(16000) + RAMP.tobytes()
    assert struct.unpack_from("<I", data, 40)[0] == 0xFFFFFFFF
    assert read_wav(data) == AudioChunk(RAMP.tobytes(), 16000)


def test_extra_chunks_before_data_are_skipped():
    plain = stdlib_wav(RAMP.tobytes(), 16000, 1, 2)
    # Insert an odd-sized LIST chunk (padded to even) between fmt and data.
    with_list = plain[:36] + b"LIST" + struct.pack("<I", 3) + b"abc\x00" + plain[36:]
    assert read_wav(with_list).audio == RAMP.tobytes()


def test_wav_bytes_decodes_mulaw_chunks():
    chunk = AudioChunk(mulaw_encode(RAMP.tobytes()), 8000, "mulaw")
    back = read_wav(wav_bytes(chunk))
    assert back.encoding == "pcm16" and back.sample_rate == 8000 and len(back.audio) == 2 * len(chunk.audio)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WAV file"),
        (b"ID3\x03" + bytes(100), "not a WAV file"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (riff(1, 1, 16000, 16, b"")[:36], "no data chunk"),
        (riff(2, 1, 16000, 4, b"\x00" * 10), "unsupported WAV sample format"),
        (riff(1, 0, 16000, 16, b"\x00" * 10), "channel count"),
    ],
)
def test_bad_input_raises_clear_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        read_wav(data)
