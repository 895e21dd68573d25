"""Text-to-speech base class.

A provider writes ``_synthesize(text, voice, speed)``, an async generator of :class:`AudioChunk` in the provider's
native format (pcm16 at ``capabilities.sample_rate``). The public :meth:`TextToSpeech.synthesize` owns the timeout
to first audio and for the whole phrase, retries before the first chunk, metrics and error mapping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..engines import ProviderError, map_exception
from ..events import AudioChunk
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
        attempt = 0
        while True:
            started = time.perf_counter()
            produced = False
            agen = self._synthesize(text, voice or self.voice, speed or self.speed).__aiter__()
            try:
                deadline = started + self.timeout_s
                while True:
                    try:
                        async with asyncio.timeout(max(deadline - time.perf_counter(), 0.001)):
                            chunk = await agen.__anext__()
                    except StopAsyncIteration:
                        break
                    if not produced:
                        self.metrics.stage_seconds.labels("tts_first_audio").observe(time.perf_counter() - started)
                        produced = True
                    yield chunk
                self.metrics.provider_calls.labels(self.provider, "tts", "ok").inc()
                return
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                error = map_exception(exc, self.provider, "tts")
                self.metrics.provider_calls.labels(self.provider, "tts", error.code).inc()
                if produced or not error.retryable or attempt >= self.retries:
                    raise error from exc
                attempt += 1
                log.warning(f"{self.provider}: {error}; retrying ({attempt}/{self.retries})")
                await asyncio.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
            finally:
                await agen.aclose()

    async def get_speakers(self) -> list[dict]:
        """The voices this provider offers: [{"voice_id": ..., "name": ...}]."""
        return [{"voice_id": v, "name": v} for v in self.capabilities.voices]

    async def load(self) -> None:
        """Load weights or open clients before the first call (optional)."""

    async def close(self) -> None:
        """Release resources (optional)."""


__all__ = ["ProviderError", "TextToSpeech", "TtsCapabilities"]
