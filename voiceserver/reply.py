"""Speaking one reply: text deltas -> phrases -> text-to-speech -> paced audio frames in the caller's format.

A :class:`Reply` owns a bounded phrase queue and a speaker task. ``delta`` takes model text as it streams (the phrase
chunker cuts the first phrase early so audio starts soon); ``say`` adds whole sentences that do not come from the
model (an approval question, a workflow's prompt). Audio is sent in fixed frames, paced at most ``output_lead_ms``
ahead of real time, and every phrase's span is recorded in the turn's PlaybackTracker so a barge-in knows what was
heard. Cancelling the turn task cancels the speaker with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from .audio import StreamConverter
from .events import AudioChunk, AudioFormat, ResponseAudio, ResponseAudioStarted, ResponseTextDelta
from .metrics import Metrics
from .outbox import Outbox
from .playback import PlaybackTracker
from .settings import TurnConfig
from .tts.base import TextToSpeech
from .tts.phrases import PhraseChunker

PHRASE_QUEUE = 16


@dataclass
class Turn:
    """One user turn and its reply."""

    id: str
    audio: bytes = b""
    text: str | None = None
    decision: Any = None  # a client's tool.approve / tool.decline resolving a pending approval
    last_voiced_at: float | None = None  # wall clock of the last voiced frame's arrival
    ended_at: float = 0.0  # when the endpoint was decided
    task: asyncio.Task | None = None
    stream: Any = None
    responding: bool = False
    playback: PlaybackTracker = field(default_factory=PlaybackTracker)
    reply_text: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    done: bool = False

    @property
    def reply(self) -> str:
        return "".join(self.reply_text).strip()


class Reply:
    """The spoken side of one turn."""

    def __init__(self, turn: Turn, *, outbox: Outbox, tts: TextToSpeech, output_format: AudioFormat,
                 config: TurnConfig, metrics: Metrics):
        self.turn = turn
        self.outbox = outbox
        self.tts = tts
        self.output_format = output_format
        self.config = config
        self.metrics = metrics
        self.chunker = PhraseChunker(first_max_chars=config.first_phrase_max_chars)
        self.phrases: asyncio.Queue[str | None] = asyncio.Queue(maxsize=PHRASE_QUEUE)
        self._announced = False
        self._task = asyncio.create_task(self._speak(), name=f"speak-{turn.id}")

    async def delta(self, text: str) -> None:
        """Model text as it streams."""
        if not text:
            return
        self.turn.reply_text.append(text)
        await self.outbox.put(ResponseTextDelta(self.turn.id, text))
        for phrase in self.chunker.feed(text):
            await self.phrases.put(phrase)

    async def say(self, text: str) -> None:
        """Whole sentences from the server itself (not the model): spoken after what came before."""
        text = text.strip()
        if not text:
            return
        await self.delta((" " if self.turn.reply_text else "") + text)
        for phrase in self.chunker.flush():
            await self.phrases.put(phrase)

    async def finish(self) -> None:
        """Speak what is left and wait until the last frame is queued."""
        for phrase in self.chunker.flush():
            await self.phrases.put(phrase)
        await self.phrases.put(None)
        await self._task

    async def close(self) -> None:
        """Stop speaking now (barge-in, error)."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def _speak(self) -> None:
        turn = self.turn
        frame_bytes = self.output_format.bytes_for_ms(self.config.output_frame_ms)
        index = 0
        while (phrase := await self.phrases.get()) is not None:
            phrase_ready = time.perf_counter()
            turn.playback.begin_phrase(phrase)
            converter: StreamConverter | None = None
            pending = b""
            # aclosing: on barge-in the synthesis generator (and a Piper worker thread behind it) stops now,
            # not whenever the garbage collector gets to it.
            async with contextlib.aclosing(self.tts.synthesize(phrase)) as chunks:
                async for chunk in chunks:
                    if "tts_first_audio_ms" not in turn.metrics:
                        turn.metrics["tts_first_audio_ms"] = (time.perf_counter() - phrase_ready) * 1000
                    if converter is None:
                        converter = StreamConverter(chunk.format, self.output_format)
                    pending += converter.convert(chunk.audio)
                    while len(pending) >= frame_bytes:
                        frame, pending = pending[:frame_bytes], pending[frame_bytes:]
                        await self._send(frame, index)
            if converter is not None:
                pending += converter.flush()
            if pending:
                await self._send(pending, index)
            turn.playback.end_phrase()
            index += 1

    async def _send(self, frame: bytes, index: int) -> None:
        turn, fmt = self.turn, self.output_format
        ahead = turn.playback.ahead_ms(time.perf_counter()) - self.config.output_lead_ms
        if ahead > 0:
            await asyncio.sleep(ahead / 1000)  # pace to real time so "sent" stays close to "heard"
        if not self._announced:
            self._announced = True
            await self.outbox.put(ResponseAudioStarted(turn.id, fmt))
            now = time.perf_counter()
            if turn.last_voiced_at is not None:
                turn.metrics["voice_to_voice_ms"] = (now - turn.last_voiced_at) * 1000
                self.metrics.voice_to_voice_seconds.observe(now - turn.last_voiced_at)
            turn.metrics["first_audio_ms"] = (now - turn.ended_at) * 1000
        await self.outbox.put(ResponseAudio(turn.id, AudioChunk(frame, fmt.sample_rate, fmt.encoding), index))
        turn.playback.add_audio(fmt.ms_for_bytes(len(frame)), time.perf_counter())
