"""G.711 mu-law codec, table-driven with numpy.

Decoding looks each byte up in a 256-entry table; encoding looks each 16-bit sample up in a 65536-entry table built
once at import from the reference G.711 algorithm (bias 0x84, clip 32635, inverted bits). Mu-law is one byte per
sample, so any byte string is valid input to the decoder.
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84
_CLIP = 32635


def _build_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _build_encode_table() -> np.ndarray:
    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS
    # exponent = position of the highest set bit among bits 7..14 of the biased magnitude.
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    codes = ~(sign | (exponent << 4) | mantissa) & 0xFF
    # Index by the int16 sample reinterpreted as uint16 so lookup is a single take() on the raw samples.
    table = np.empty(65536, dtype=np.uint8)
    table[samples.astype(np.int16).view(np.uint16)] = codes.astype(np.uint8)
    return table


MULAW_DECODE_TABLE = _build_decode_table()
MULAW_ENCODE_TABLE = _build_encode_table()


def mulaw_decode(b: bytes) -> bytes:
    """Decode G.711 mu-law bytes to pcm16 little-endian (two output bytes per input byte)."""
    if not b:
        return b""
    return MULAW_DECODE_TABLE[np.frombuffer(b, dtype=np.uint8)].tobytes()


def mulaw_encode(pcm16: bytes) -> bytes:
    """Encode pcm16 little-endian to G.711 mu-law (one byte per sample). Raises ValueError on an odd byte count."""
    if len(pcm16) % 2:
        raise ValueError(f"pcm16 data must have an even number of bytes, got {len(pcm16)}")
    if not pcm16:
        return b""
    return MULAW_ENCODE_TABLE[np.frombuffer(pcm16, dtype="<u2")].tobytes()
