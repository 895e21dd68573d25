"""G.711 A-law codec, table-driven with numpy (the European telephone encoding; OpenAI Realtime's ``audio/pcma``).

Decoding looks each byte up in a 256-entry table; encoding looks each 16-bit sample up in a 65536-entry table built
once at import from the reference G.711 algorithm (13-bit magnitude, segments of doubling size, even bits inverted
with 0x55). A-law is one byte per sample, so any byte string is valid input to the decoder.
"""

from __future__ import annotations

import numpy as np

_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa = (codes & 0x0F) << 4
    segment = (codes & 0x70) >> 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype("<i2")


def _build_encode_table() -> np.ndarray:
    samples = np.arange(-32768, 32768, dtype=np.int32)
    value = samples >> 3  # 13-bit
    positive = value >= 0
    mask = np.where(positive, 0xD5, 0x55)
    magnitude = np.where(positive, value, -value - 1)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)  # first segment whose end is >= the magnitude
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    table = np.empty(65536, dtype=np.uint8)
    table[samples.astype(np.int16).view(np.uint16)] = (code ^ mask).astype(np.uint8)
    return table


ALAW_DECODE_TABLE = _build_decode_table()
ALAW_ENCODE_TABLE = _build_encode_table()


def alaw_decode(b: bytes) -> bytes:
    """Decode G.711 A-law bytes to pcm16 little-endian (two output bytes per input byte)."""
    if not b:
        return b""
    return ALAW_DECODE_TABLE[np.frombuffer(b, dtype=np.uint8)].tobytes()


def alaw_encode(pcm16: bytes) -> bytes:
    """Encode pcm16 little-endian to G.711 A-law (one byte per sample). Raises ValueError on an odd byte count."""
    if len(pcm16) % 2:
        raise ValueError(f"pcm16 data must have an even number of bytes, got {len(pcm16)}")
    if not pcm16:
        return b""
    return ALAW_ENCODE_TABLE[np.frombuffer(pcm16, dtype="<u2")].tobytes()
