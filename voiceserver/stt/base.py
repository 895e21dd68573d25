"""Speech-to-text base class.

A provider writes ``_transcribe(audio, language)``, which receives 16 kHz mono pcm16 and returns a
:class:`TranscriptResult`. The public :meth:`SpeechToText.transcribe` converts the input to that format, and owns
the timeout, retries, metrics and error mapping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..audio import to_pcm16_16k
from ..audio.format import AudioChunk
from ..engines import LiveActivity, call_with_policy, live_scope
from ..metrics import Metrics


@dataclass(slots=True)
class TranscriptResult:
    text: str
    language: str | None = None
    duration_ms: float = 0.0
    # Engine-specific detail (segments, probabilities) for callers that want it.
    details: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SttCapabilities:
    streaming: bool = False
    sample_rate: int = 16000
    languages: tuple[str, ...] = ()  # empty: any language the model knows


class SpeechToText:
    """Base of every speech-to-text provider."""

    provider: str = "base"
    capabilities = SttCapabilities()
    live_activity: LiveActivity | None = None  # the server's, set by the composition root

    def __init__(self, *, timeout_s: float = 30.0, retries: int = 1, language: str | None = None,
                 metrics: Metrics | None = None):
        self.timeout_s = timeout_s
        self.retries = retries
        self.language = language
        self.metrics = metrics or Metrics.null()

    async def _transcribe(self, audio: bytes, language: str | None) -> TranscriptResult:
        raise NotImplementedError

    async def transcribe(self, audio: AudioChunk, language: str | None = None) -> TranscriptResult:
        """Transcribe one utterance. Raises ProviderError with a code on failure."""
        pcm = to_pcm16_16k(audio)
        started = time.perf_counter()
        with live_scope(self.live_activity):  # background LLM work waits while a caller is being transcribed
            result = await call_with_policy(
                lambda: self._transcribe(pcm, language or self.language),
                provider=self.provider, operation="stt", timeout_s=self.timeout_s, retries=self.retries,
                metrics=self.metrics,
            )
        self.metrics.stage_seconds.labels("stt").observe(time.perf_counter() - started)
        result.text = result.text.strip()
        return result

    def busy(self) -> bool:
        """True while the engine is transcribing or has calls waiting (a guess made early should then not queue
        in front of a real transcription). Engines without a bounded gate are never busy."""
        return False

    async def load(self) -> None:
        """Load weights or open clients before the first call (optional)."""

    async def warmup(self) -> None:
        """Run one tiny call after loading, so the first caller does not pay for lazy initialisation (optional)."""

    async def close(self) -> None:
        """Release resources (optional)."""
