"""A fallback chain of speech-to-text engines is itself one engine (an adapter, not a flag).

    stt = FallbackSTT([FasterWhisperSTT(...), OpenAISTT(...)])

Each engine keeps its own call policy (timeout, retries); when one raises, the next is tried, the switch is logged
and counted (``voiceserver_provider_fallbacks_total{operation="stt"}``), and the last error is raised when every
engine failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..audio.format import AudioChunk
from ..engines import ProviderError, map_exception
from ..logs import get_logger
from ..metrics import Metrics
from .base import SpeechToText, TranscriptResult

log = get_logger("STT")


class FallbackSTT(SpeechToText):
    """Transcribe with the first engine that succeeds, in order."""

    provider = "fallback"

    def __init__(self, engines: Sequence[SpeechToText], *, metrics: Metrics | None = None):
        if not engines:
            raise ValueError("a fallback chain needs at least one speech-to-text engine")
        super().__init__(metrics=metrics or engines[0].metrics)
        self.engines = list(engines)
        self.capabilities = self.engines[0].capabilities
        self.provider = "+".join(e.provider for e in self.engines)

    async def transcribe(self, audio: AudioChunk, language: str | None = None) -> TranscriptResult:
        last: ProviderError | None = None
        for index, engine in enumerate(self.engines):
            try:
                return await engine.transcribe(audio, language)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped, then the next engine is tried
                last = map_exception(exc, engine.provider, "stt")
                if index + 1 < len(self.engines):
                    nxt = self.engines[index + 1].provider
                    log.warning(f"stt provider {engine.provider} failed ({last.code}); falling back to {nxt}",
                                fields={"operation": "stt", "from": engine.provider, "to": nxt, "code": last.code})
                    self.metrics.provider_fallbacks.labels("stt").inc()
        assert last is not None
        raise last

    def busy(self) -> bool:
        return self.engines[0].busy()

    async def load(self) -> None:
        await asyncio.gather(*(e.load() for e in self.engines))

    async def warmup(self) -> None:
        await self.engines[0].warmup()

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()
