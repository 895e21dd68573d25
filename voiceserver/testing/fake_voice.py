"""Scripted speech-to-text and text-to-speech with set delays, for timeline tests of sessions and gateways.

- :class:`ScriptedSTT` returns the next scripted transcript after ``delay_s`` (or derives it from the audio).
- :class:`ToneTTS` "speaks" a phrase as a sine tone whose length is proportional to the text, in chunks, after
  ``first_delay_s``; it records every phrase it was asked to speak and how many were stopped before the end.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import numpy as np

from ..audio.format import AudioChunk
from ..stt.base import SpeechToText, SttCapabilities, TranscriptResult
from ..tts.base import TextToSpeech, TtsCapabilities


class ScriptedSTT(SpeechToText):
    """Returns scripted transcripts in order (the last one repeats)."""

    provider = "scripted-stt"
    capabilities = SttCapabilities(streaming=False)

    def __init__(self, texts: list[str] | Callable[[bytes], str], *, delay_s: float = 0.0,
                 keep_calls: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.texts = texts
        self.delay_s = delay_s
        self.calls: list[int] = []  # bytes of audio per call (the last ``keep_calls`` when set)
        self.keep_calls = keep_calls
        self.count = 0

    async def _transcribe(self, audio: bytes, language: str | None) -> TranscriptResult:
        self.calls.append(len(audio))
        self.count += 1
        if self.keep_calls is not None and len(self.calls) > self.keep_calls:
            del self.calls[: -self.keep_calls]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if callable(self.texts):
            text = self.texts(audio)
        else:
            index = min(self.count - 1, len(self.texts) - 1)
            text = self.texts[index] if self.texts else ""
        return TranscriptResult(text=text, language=language, duration_ms=len(audio) / 32)


class ToneTTS(TextToSpeech):
    """Synthesises ``ms_per_char`` of a 440 Hz tone per character, in ``chunk_ms`` pieces."""

    provider = "tone-tts"

    def __init__(self, *, sample_rate: int = 16000, ms_per_char: float = 20.0, chunk_ms: int = 100,
                 first_delay_s: float = 0.0, chunk_delay_s: float = 0.0, keep_phrases: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.capabilities = TtsCapabilities(streaming=True, sample_rate=sample_rate, voices=("tone",))
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.first_delay_s = first_delay_s
        self.chunk_delay_s = chunk_delay_s
        self.phrases: list[str] = []  # every phrase spoken, or the last ``keep_phrases``
        self.keep_phrases = keep_phrases
        self.cancelled = 0

    async def _synthesize(self, text: str, voice: str | None, speed: float) -> AsyncIterator[AudioChunk]:
        self.phrases.append(text)
        if self.keep_phrases is not None and len(self.phrases) > self.keep_phrases:
            del self.phrases[: -self.keep_phrases]
        rate = self.capabilities.sample_rate
        total = int(rate * len(text) * self.ms_per_char / 1000 / max(speed, 0.1))
        step = int(rate * self.chunk_ms / 1000)
        completed = False
        try:
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            for start in range(0, total, step):
                if start and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                n = min(step, total - start)
                t = (np.arange(start, start + n) / rate).astype(np.float32)
                samples = (0.3 * np.sin(2 * math.pi * 440.0 * t) * 32767).astype("<i2")
                yield AudioChunk(samples.tobytes(), rate)
            completed = True
        finally:
            if not completed:  # cancelled, or the consumer stopped reading (barge-in)
                self.cancelled += 1
