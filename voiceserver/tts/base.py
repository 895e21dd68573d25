"""Text-to-speech base class.

A provider writes ``_synthesize(text, voice, speed)``, an async generator of :class:`AudioChunk` in the provider's
native format (pcm16 at ``capabilities.sample_rate``). The public :meth:`TextToSpeech.synthesize` owns the timeout
to first audio and for the whole phrase, retries before the first chunk, metrics and error mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..audio.format import AudioChunk
from ..engines import LiveActivity, ProviderError, live_scope, stream_with_policy
from ..logs import get_logger
from ..metrics import Metrics

log = get_logger("TTS")


@dataclass(frozen=True, slots=True)
class TtsCapabilities:
    streaming: bool = True
    sample_rate: int = 22050
    voices: tuple[str, ...] = ()


class TextToSpeech:
    """Base of every text-to-speech provider."""

    provider: str = "base"
    capabilities = TtsCapabilities()
    live_activity: LiveActivity | None = None  # the server's, set by the composition root

    def __init__(self, *, voice: str | None = None, speed: float = 1.0, timeout_s: float = 30.0, retries: int = 1,
                 metrics: Metrics | None = None):
        self.voice = voice
        self.speed = speed
        self.timeout_s = timeout_s
        self.retries = retries
        self.metrics = metrics or Metrics.null()

    @property
    def sample_rate(self) -> int:
        return self.capabilities.sample_rate

    def _synthesize(self, text: str, voice: str | None, speed: float) -> AsyncIterator[AudioChunk]:
        raise NotImplementedError

    async def synthesize(self, text: str, voice: str | None = None, speed: float | None = None
                         ) -> AsyncIterator[AudioChunk]:
        """Stream the audio of ``text``. Raises ProviderError with a code on failure."""
        text = text.strip()
        if not text:
            return
        with live_scope(self.live_activity):  # background LLM work waits while a reply is being synthesised
            async for chunk in stream_with_policy(
                lambda: self._synthesize(text, voice or self.voice, speed or self.speed), provider=self.provider,
                operation="tts", call_label="tts", timeout_s=self.timeout_s, retries=self.retries,
                metrics=self.metrics, first_item_stage="tts_first_audio", log=log,
            ):
                yield chunk

    async def get_speakers(self) -> list[dict]:
        """The voices this provider offers: [{"voice_id": ..., "name": ...}]."""
        return [{"voice_id": v, "name": v} for v in self.capabilities.voices]

    async def load(self) -> None:
        """Load weights or open clients before the first call (optional)."""

    async def warmup(self) -> None:
        """Run one tiny call after loading, so the first caller does not pay for lazy initialisation (optional)."""

    async def close(self) -> None:
        """Release resources (optional)."""


__all__ = ["ProviderError", "TextToSpeech", "TtsCapabilities"]
