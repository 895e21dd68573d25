"""The format travels with the audio: :class:`AudioFormat` (encoding, rate, channels) and :class:`AudioChunk`.

Every stage that takes or gives audio uses these (wyoming's ``AudioChunk(rate, width, channels, audio)`` is the model),
so no stage guesses a sample rate. Pure values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..ids import shown

Encoding = Literal["pcm16", "mulaw", "alaw"]
ENCODINGS: tuple[str, ...] = ("pcm16", "mulaw", "alaw")
PCM16_RATES: tuple[int, ...] = (8000, 16000, 24000, 48000)
MULAW_RATES: tuple[int, ...] = (8000,)
ALAW_RATES: tuple[int, ...] = (8000,)  # G.711 A-law, like mu-law, is telephone audio


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Encoding and sample rate of a mono stream."""

    encoding: Encoding = "pcm16"
    sample_rate: int = 16000
    channels: int = 1

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    def bytes_for_ms(self, ms: float) -> int:
        return int(self.sample_rate * ms / 1000) * self.bytes_per_sample * self.channels

    def ms_for_bytes(self, n: int) -> float:
        return n / (self.bytes_per_sample * self.channels) * 1000 / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate}


def validate_format(encoding: str, sample_rate: int) -> AudioFormat:
    """Return an AudioFormat or raise ValueError naming what is allowed."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {shown(encoding)}; allowed: {', '.join(ENCODINGS)}")
    rates = {"pcm16": PCM16_RATES, "mulaw": MULAW_RATES, "alaw": ALAW_RATES}[encoding]
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate not in rates:
        allowed = ", ".join(map(str, rates))
        raise ValueError(f"unsupported sample_rate {shown(sample_rate)} for {encoding}; allowed: {allowed}")
    return AudioFormat(encoding, sample_rate)  # type: ignore[arg-type]


PCM16_16K = AudioFormat("pcm16", 16000)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of mono audio and its format (wyoming's AudioChunk shape)."""

    audio: bytes
    sample_rate: int = 16000
    encoding: Encoding = "pcm16"
    channels: int = 1

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate, self.channels)

    @property
    def duration_ms(self) -> float:
        return self.format.ms_for_bytes(len(self.audio))
