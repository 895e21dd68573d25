"""The session's ear: caller audio in the client's format -> 16 kHz pcm16 -> VAD segment events, synchronously.

:class:`Listener` owns the stream converter, the segmenter and the arrival clock (which wall-clock moment each
stream position arrived at, so voice-to-voice starts at the caller's last voiced frame). :class:`Speculation` is a
transcription started at a short pause and kept if the caller stays silent. The mapping from the client's session
config to the VAD's own config lives here, so the VAD stage knows nothing of sessions.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from ..audio import StreamConverter
from ..audio.format import PCM16_16K, AudioChunk
from ..metrics import Metrics
from ..settings import LimitsConfig, TurnConfig
from ..stt.base import SpeechToText
from ..vad.segmenter import (
    Segmenter,
    SegmenterConfig,
    SpeechEnd,
    SpeechOnset,
    SpeechOnsetLost,
    SpeechPause,
    SpeechResume,
    SpeechStart,
)
from .events import SessionConfig

LAG_SAMPLE = 8  # time one audio frame in eight for voiceserver_vad_lag_seconds


def segmenter_config(config: SessionConfig, limits: LimitsConfig, turn: TurnConfig) -> SegmenterConfig:
    """The VAD settings for a session: the client's ``vad`` choices plus the server's limits."""
    return SegmenterConfig(aggressiveness=config.vad_aggressiveness, silence_ms=config.vad_silence_ms,
                           prefix_ms=config.vad_prefix_ms, min_speech_ms=config.vad_min_speech_ms,
                           max_utterance_ms=int(limits.max_utterance_s * 1000),
                           pause_ms=turn.pause_ms if turn.speculative_stt else 0,
                           onset_hint_ms=turn.onset_hint_ms if turn.false_interruption else 0)


class Listener:
    """Converts and segments one caller's audio; never awaits (a few microseconds per 20 ms frame)."""

    def __init__(self, config: SessionConfig, limits: LimitsConfig, turn: TurnConfig, *,
                 clock: Callable[[], float], metrics: Metrics):
        self.converter = StreamConverter(config.input_format, PCM16_16K)
        self.limits = limits
        self.turn = turn
        self.segmenter = Segmenter(segmenter_config(config, limits, turn))
        self.clock = clock
        self.metrics = metrics
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=256)  # (stream ms at chunk end, clock)
        self._frames = 0
        # A segmenter replaced by retune() or reset() starts at stream position 0; this keeps the stream clock going.
        self._offset_ms = 0
        self._retuned: SegmenterConfig | None = None

    @property
    def position_ms(self) -> int:
        """Stream time of all audio segmented so far."""
        return self._offset_ms + self.segmenter.position_ms

    def feed(self, audio: bytes, arrived_at: float | None) -> tuple[list[Any], float]:
        """Segment events for this audio, and its arrival time on the session clock."""
        now = arrived_at if arrived_at is not None else self.clock()
        pcm = self.converter.convert(audio)
        if not pcm:
            return [], now
        segmenter = self.segmenter
        events = segmenter.feed(pcm)
        if events and self._offset_ms:
            self._shifted(events)
        self._arrivals.append((self._offset_ms + segmenter.position_ms, now))
        if self._retuned is not None and not self.segmenter.in_speech:
            self._replace_segmenter()
        # One frame in LAG_SAMPLE is timed: a histogram observation costs about as much as the VAD itself, and a
        # 1-in-8 sample of 25,000 frames a second still gives a tight p99.
        self._frames += 1
        if not self._frames % LAG_SAMPLE or events:
            self.metrics.vad_lag_seconds.observe(max(self.clock() - now, 0.0))
        return events, now

    @property
    def last_voiced_ms(self) -> int:
        """Stream time just after the last frame that counted as speech in the current utterance."""
        return self._offset_ms + self.segmenter.last_voiced_ms

    def set_endpoint(self, silence_ms: int) -> list[Any]:
        """The segmenter's adaptive endpoint, in stream time (see Segmenter.set_endpoint)."""
        return self._shifted(self.segmenter.set_endpoint(silence_ms))

    def commit(self) -> list[Any]:
        events = self._shifted(self.segmenter.commit())
        if self._retuned is not None:
            self._replace_segmenter()
        return events

    def retune(self, config: SessionConfig) -> None:
        """New VAD settings: now when no utterance is in progress, else once it has ended."""
        self._retuned = segmenter_config(config, self.limits, self.turn)
        if not self.segmenter.in_speech:
            self._replace_segmenter()

    def reset(self) -> None:
        """Forget the audio not ended as an utterance yet; stream times go on from where they are."""
        self._replace_segmenter()

    def _replace_segmenter(self) -> None:
        self._offset_ms += self.segmenter.position_ms
        self.segmenter = Segmenter(self._retuned or self.segmenter.config)
        self._retuned = None

    def _shifted(self, events: list[Any]) -> list[Any]:
        offset = self._offset_ms
        if offset and events:
            for ev in events:
                if isinstance(ev, SpeechStart):
                    ev.start_ms += offset
                    ev.confirmed_ms += offset
                elif isinstance(ev, SpeechPause | SpeechResume | SpeechOnset | SpeechOnsetLost):
                    ev.at_ms += offset
                elif isinstance(ev, SpeechEnd):
                    ev.start_ms += offset
                    ev.end_ms += offset
                    ev.last_voiced_ms += offset
        return events

    def arrival_of(self, stream_ms: float) -> float | None:
        """When the audio at stream position ``stream_ms`` arrived (the first chunk that reached it)."""
        for end_ms, at in self._arrivals:
            if end_ms >= stream_ms:
                return at
        return self._arrivals[-1][1] if self._arrivals else None


class Speculation:
    """At most one transcription started early, valid until the caller speaks again. ``on_result(text)`` is called
    when a guess that is still valid finishes (the session adapts the endpoint to it)."""

    def __init__(self, clock: Callable[[], float], on_result: Callable[[str], None] | None = None):
        self.clock = clock
        self.on_result = on_result
        self._task: asyncio.Task | None = None

    def start(self, stt: SpeechToText, audio: bytes) -> None:
        """Transcribe ``audio`` now, unless the engine is busy (a guess never delays a real transcription)."""
        self.cancel()
        if stt.busy():
            return
        started = self.clock()

        async def guess() -> Any:
            result = await stt.transcribe(AudioChunk(audio, 16000))
            result.details["speculation_ms"] = (self.clock() - started) * 1000
            return result

        task = asyncio.create_task(guess(), name="speculative-stt")
        task.add_done_callback(self._finished)
        self._task = task

    def _finished(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            return  # a failed guess is simply not used
        if task is self._task and self.on_result is not None:
            self.on_result(task.result().text)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = None

    def take(self) -> asyncio.Task | None:
        """The running guess (the utterance ended as it was heard at the pause), or None."""
        task, self._task = self._task, None
        return task
