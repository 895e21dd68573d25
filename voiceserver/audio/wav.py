"""WAV (RIFF/WAVE) reading and writing in memory, plus the explicit file helpers.

Reading accepts PCM integer samples of 8 (unsigned), 16, 24 or 32 bits, IEEE float of 32 or 64 bits, G.711 mu-law,
and WAVE_FORMAT_EXTENSIBLE wrapping any of those, at any sample rate and channel count; channels are averaged to
mono and the result is pcm16. A data chunk whose declared size runs past the end (a streamed WAV written with an
unknown length, 0xFFFFFFFF) is read up to the end of the bytes. Writing always produces 16-bit PCM mono.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .format import AudioChunk
from .mulaw import MULAW_DECODE_TABLE
from .pcm import float32_to_pcm16

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_MULAW = 0x0007
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Sizes written into the header of a WAV whose length is not known yet (streaming); readers take "to the end".
UNKNOWN_SIZE = 0xFFFFFFFF
MAX_CHANNELS = 32


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """The 44-byte header of a 16-bit PCM mono WAV; ``data_bytes=None`` writes the streaming (unknown) length."""
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if data_bytes is None:
        riff_size = data_size = UNKNOWN_SIZE
    else:
        if data_bytes < 0 or data_bytes + 36 > UNKNOWN_SIZE:
            raise ValueError(f"data_bytes {data_bytes} does not fit a WAV header")
        data_size, riff_size = data_bytes, data_bytes + 36
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, WAVE_FORMAT_PCM, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size))


def wav_bytes(chunk: AudioChunk) -> bytes:
    """A complete 16-bit PCM mono WAV file of ``chunk`` (mu-law audio is decoded first)."""
    audio = chunk.audio
    if chunk.encoding == "mulaw":
        audio = MULAW_DECODE_TABLE[np.frombuffer(audio, dtype=np.uint8)].tobytes()
    elif chunk.encoding != "pcm16":
        raise ValueError(f"cannot write {chunk.encoding!r} audio to WAV; allowed: pcm16, mulaw")
    if chunk.channels != 1:
        raise ValueError(f"wav_bytes writes mono audio, got {chunk.channels} channels")
    audio = audio[: len(audio) - len(audio) % 2]
    return wav_header(chunk.sample_rate, len(audio)) + audio


def write_wav(path: str | os.PathLike[str], chunk: AudioChunk) -> None:
    """Write ``chunk`` to ``path`` as a 16-bit PCM mono WAV file."""
    Path(path).write_bytes(wav_bytes(chunk))


def read_wav(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> AudioChunk:
    """Read a WAV file (a path) or WAV bytes into a mono pcm16 chunk at the file's own sample rate.

    Raises ValueError naming the problem when the data is not a WAV file or uses an unsupported sample format.
    """
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file: missing RIFF/WAVE header")
    fmt: tuple[int, int, int, int] | None = None  # (format tag, channels, rate, bits)
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body_start = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[body_start : body_start + size])
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("not a valid WAV file: data chunk before fmt chunk")
            body = data[body_start : min(body_start + size, len(data))]
            return _decode_samples(body, *fmt)
        pos = body_start + size + (size & 1)  # chunks are padded to an even size
    raise ValueError("not a valid WAV file: no data chunk" if fmt else "not a valid WAV file: no fmt chunk")


def _parse_fmt(body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise ValueError("not a valid WAV file: fmt chunk too short")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise ValueError("not a valid WAV file: WAVE_FORMAT_EXTENSIBLE fmt chunk too short")
        tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the SubFormat GUID are the format tag
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"unsupported WAV channel count {channels}")
    if rate <= 0:
        raise ValueError(f"invalid WAV sample rate {rate}")
    supported = {WAVE_FORMAT_PCM: (8, 16, 24, 32), WAVE_FORMAT_IEEE_FLOAT: (32, 64), WAVE_FORMAT_MULAW: (8,)}
    if tag not in supported or bits not in supported[tag]:
        raise ValueError(f"unsupported WAV sample format (format tag {tag:#06x}, {bits} bits); allowed: "
                         "PCM 8/16/24/32-bit, float 32/64-bit, mu-law")
    return tag, channels, rate, bits


def _decode_samples(body: bytes, tag: int, channels: int, rate: int, bits: int) -> AudioChunk:
    width = bits // 8
    frame_width = width * channels
    body = body[: len(body) - len(body) % frame_width]
    if tag == WAVE_FORMAT_MULAW:
        samples = MULAW_DECODE_TABLE[np.frombuffer(body, dtype=np.uint8)].astype(np.float32) / 32768.0
    elif tag == WAVE_FORMAT_IEEE_FLOAT:
        samples = np.frombuffer(body, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:
        samples = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        if channels == 1:  # the common case needs no conversion at all
            return AudioChunk(audio=body, sample_rate=rate)
        samples = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        raw = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        samples = values.astype(np.float32) / float(1 << 23)
    else:
        samples = (np.frombuffer(body, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return AudioChunk(audio=float32_to_pcm16(samples), sample_rate=rate)
