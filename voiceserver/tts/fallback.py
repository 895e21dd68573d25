"""A fallback chain of text-to-speech engines is itself one engine (an adapter, not a flag).

    tts = FallbackTTS([PiperTTS(...), OpenAITTS(...)])

A phrase is spoken by the first engine that produces audio for it. An engine that fails before its first chunk of a
phrase is replaced by the next one for that phrase, and is skipped for ``cooldown_s`` afterwards (one engine serves
every session: a provider that just failed would make each caller wait for its timeout again); once audio of a phrase
went out, an error is raised instead (switching voices mid-phrase is worse). Chunks keep their engine's own format,
so a chain may mix sample rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from ..audio.format import AudioChunk
from ..engines import map_exception
from ..logs import get_logger
from ..metrics import Metrics
from .base import TextToSpeech, TtsCapabilities

log = get_logger("TTS")


class FallbackTTS(TextToSpeech):
    """Speak with the first engine that produces audio, in order; ``first_audio_timeout_s`` bounds each try."""

    provider = "fallback"

    def __init__(self, engines: Sequence[TextToSpeech], *, first_audio_timeout_s: float | None = None,
                 cooldown_s: float = 30.0, metrics: Metrics | None = None):
        if not engines:
            raise ValueError("a fallback chain needs at least one text-to-speech engine")
        super().__init__(metrics=metrics or engines[0].metrics)
        self.engines = list(engines)
        self.first_audio_timeout_s = first_audio_timeout_s
        voices: list[str] = []
        for engine in self.engines:
            voices += [v for v in engine.capabilities.voices if v not in voices]
        first = self.engines[0].capabilities
        self.capabilities = TtsCapabilities(streaming=first.streaming, sample_rate=first.sample_rate,
                                            voices=tuple(voices))
        self.provider = "+".join(e.provider for e in self.engines)
        self.cooldown_s = cooldown_s
        self._down_until = [0.0] * len(self.engines)

    def _order(self) -> list[int]:
        """Engines to try: those not cooling down after a failure, in order (all of them if every one is)."""
        now = time.monotonic()
        ready = [i for i, until in enumerate(self._down_until) if until <= now]
        return ready or list(range(len(self.engines)))

    async def synthesize(self, text: str, voice: str | None = None, speed: float | None = None
                         ) -> AsyncIterator[AudioChunk]:
        order = self._order()
        for position, index in enumerate(order):
            engine = self.engines[index]
            produced = False
            try:
                stream = engine.synthesize(text, voice_for(engine, voice), speed)
                async with contextlib.aclosing(stream):
                    while True:
                        try:
                            if produced or self.first_audio_timeout_s is None:
                                chunk = await anext(stream)
                            else:
                                async with asyncio.timeout(self.first_audio_timeout_s):
                                    chunk = await anext(stream)
                        except StopAsyncIteration:
                            if produced:
                                self._down_until[index] = 0.0
                            return
                        produced = True
                        yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                error = map_exception(exc, engine.provider, "tts")
                if produced or position + 1 >= len(order):
                    raise error from exc
                self._down_until[index] = time.monotonic() + self.cooldown_s
                nxt = self.engines[order[position + 1]].provider
                log.warning(f"tts provider {engine.provider} failed ({error.code}); falling back to {nxt}",
                            fields={"operation": "tts", "from": engine.provider, "to": nxt, "code": error.code})
                self.metrics.provider_fallbacks.labels("tts").inc()

    async def get_speakers(self) -> list[dict]:
        speakers: list[dict] = []
        for engine in self.engines:
            speakers += [{**entry, "provider": engine.provider} for entry in await engine.get_speakers()]
        return speakers

    async def load(self) -> None:
        await asyncio.gather(*(e.load() for e in self.engines))

    async def warmup(self) -> None:
        await self.engines[0].warmup()

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()


def voice_for(engine: TextToSpeech, speaker: str | None) -> str | None:
    """The speaker for this engine: as asked if it has that voice (or lists none), else its default voice."""
    if speaker is None:
        return None
    voices = engine.capabilities.voices
    return speaker if not voices or speaker in voices else None
