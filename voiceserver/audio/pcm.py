"""PCM sample conversions and levels: pcm16 little-endian bytes <-> float32 arrays, RMS in dBFS.

Every function here is pure and works on mono audio. pcm16 means signed 16-bit little-endian samples; float32 arrays
hold samples in [-1.0, 1.0).
"""

from __future__ import annotations

import math

import numpy as np

PCM16_MAX = 32768.0
# Level reported for an empty or all-zero signal, so callers can compare against a threshold without special cases.
SILENCE_DBFS = -120.0
_LE_INT16 = np.dtype("<i2")


def pcm16_samples(b: bytes) -> np.ndarray:
    """View pcm16 bytes as an int16 array (read-only, no copy). Raises ValueError on an odd byte count."""
    if len(b) % 2:
        raise ValueError(f"pcm16 data must have an even number of bytes, got {len(b)}")
    return np.frombuffer(b, dtype=_LE_INT16)


def pcm16_to_float32(b: bytes) -> np.ndarray:
    """Decode pcm16 bytes to float32 samples in [-1.0, 1.0)."""
    return pcm16_samples(b).astype(np.float32) * np.float32(1.0 / PCM16_MAX)


def float32_to_pcm16(a: np.ndarray) -> bytes:
    """Encode float samples (nominal range [-1.0, 1.0]) to pcm16 bytes, rounding and clipping out-of-range values."""
    scaled = np.rint(np.asarray(a, dtype=np.float32) * np.float32(PCM16_MAX))
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype(_LE_INT16).tobytes()


def rms_dbfs(pcm16: bytes) -> float:
    """RMS level of pcm16 audio in dBFS (0 dBFS = a full-scale square wave). Empty or digital silence gives -120."""
    samples = pcm16_samples(pcm16[: len(pcm16) - len(pcm16) % 2])
    if samples.size == 0:
        return SILENCE_DBFS
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (PCM16_MAX * PCM16_MAX)))
