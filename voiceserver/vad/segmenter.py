"""Sans-I/O speech segmenter: feed pcm16 bytes, get SpeechStart / SpeechPause / SpeechResume / SpeechEnd events.

Nothing here awaits or touches a socket; the session calls :meth:`Segmenter.feed` with each piece of caller audio
(already 16 kHz mono pcm16) and acts on the returned events. All times are milliseconds of stream time since the
first byte fed, on frame boundaries.

The rules, in frames of ``frame_ms`` (each ``*_ms`` setting is rounded up to whole frames):

Onset (idle -> speech). A frame classifier (webrtcvad by default) marks each frame voiced or not. Speech is
confirmed at the frame where the last ``W = K + T`` frames hold at least ``K`` voiced frames, with
``K = min_speech_ms`` and ``T = onset_tolerance_ms``: at least ``min_speech_ms`` of voice, dense enough that the
gaps in it add up to at most ``onset_tolerance_ms``. That tolerates the short unvoiced stretches inside real speech
(stops, fricatives) while a click, a cough or a sparse run of typing noise never gets there. The onset is the first
voiced frame in that window; the utterance starts ``prefix_ms`` before it (pre-roll, so the first syllable is not
cut), but never before the stream start or the end of the previous utterance. :class:`SpeechStart` is emitted at
confirmation with both times.

Inside speech. The trailing silence is the time since the last frame that counted as speech. While it is shorter
than the hold time (``pause_ms``, or 200 ms when pauses are disabled) any voiced frame counts. Past the hold time,
isolated voiced frames (breath, noise) no longer count: speech resumes only when ``resume_ms`` of voiced frames fall
within a window twice that long. At ``pause_ms`` of trailing silence a :class:`SpeechPause` carries the audio so
far (for speculative transcription); when speech resumes after it a :class:`SpeechResume` follows. At
``silence_ms`` of trailing silence the utterance ends (:class:`SpeechEnd`, reason "silence"; its audio includes
the trailing silence and ``last_voiced_ms`` marks where the voice stopped). An utterance reaching
``max_utterance_ms`` (prefix included) is force-ended (reason "max_length"); :meth:`Segmenter.commit` ends one now
(reason "commit").

Bounds. Idle audio is kept in a ring of ``prefix + W`` frames; an utterance's audio is at most
``max_utterance_ms``; the input remainder is less than one frame. Per frame the work is one classifier call and a
few deque/bytearray operations.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from ..audio.framing import Framer
from .detectors import VoiceDetector
from .webrtc import WebRtcDetector, validate_vad_params

EndReason = Literal["silence", "max_length", "commit"]
# Hysteresis hold used when pause events are disabled (pause_ms = 0); see the module docstring.
DEFAULT_HOLD_MS = 200


@dataclass(slots=True)
class SpeechStart:
    """Speech confirmed at ``confirmed_ms``; the utterance (with pre-roll) starts at ``start_ms``."""

    start_ms: int
    confirmed_ms: int


@dataclass(slots=True)
class SpeechOnset:
    """The first voiced frames (``onset_hint_ms`` of them) while idle: maybe speech, not yet confirmed. A reply
    playing now can pause at once, long before the speech is confirmed."""

    at_ms: int


@dataclass(slots=True)
class SpeechOnsetLost:
    """The voiced frames after a SpeechOnset died out without becoming speech (a click, a cough)."""

    at_ms: int


@dataclass(slots=True)
class SpeechPause:
    """``pause_ms`` of silence inside an utterance; ``audio`` is the utterance so far (``start_ms`` to ``at_ms``)."""

    at_ms: int
    audio: bytes = field(repr=False)


@dataclass(slots=True)
class SpeechResume:
    """Speech again after a :class:`SpeechPause`, detected at ``at_ms``; the utterance goes on."""

    at_ms: int


@dataclass(slots=True)
class SpeechEnd:
    """The utterance from ``start_ms`` to ``end_ms`` (pre-roll and trailing silence included) is complete."""

    start_ms: int
    end_ms: int
    last_voiced_ms: int
    audio: bytes = field(repr=False)
    reason: EndReason = "silence"

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


SegmentEvent = SpeechOnset | SpeechOnsetLost | SpeechStart | SpeechPause | SpeechResume | SpeechEnd


@dataclass
class SegmenterConfig:
    """Segmenter settings; validated on creation (ValueError naming the field)."""

    sample_rate: int = 16000  # what the segmenter is fed (the session resamples to 16 kHz)
    frame_ms: int = 20  # 10, 20 or 30
    aggressiveness: int = 2  # 0-3
    silence_ms: int = 500  # endpoint after this much non-speech
    prefix_ms: int = 300  # pre-roll kept before the onset so the first syllable is not cut
    min_speech_ms: int = 200  # speech shorter than this is not a turn (clicks)
    max_utterance_ms: int = 30000  # force-end
    pause_ms: int = 200  # early "pause" hint for speculative transcription; 0 disables
    onset_tolerance_ms: int = 100  # total unvoiced time allowed inside the onset window
    resume_ms: int = 60  # voiced time that resumes speech after the hold time
    onset_hint_ms: int = 0  # voiced time that emits SpeechOnset before confirmation; 0 disables it

    def __post_init__(self) -> None:
        validate_vad_params(self.aggressiveness, self.sample_rate, self.frame_ms)
        for name in ("silence_ms", "prefix_ms", "min_speech_ms", "max_utterance_ms", "pause_ms",
                     "onset_tolerance_ms", "resume_ms", "onset_hint_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.silence_ms < self.frame_ms:
            raise ValueError(f"silence_ms must be at least one frame ({self.frame_ms} ms), got {self.silence_ms}")
        # An utterance must be able to exist past its confirmation (pre-roll + onset window).
        floor = self.prefix_ms + self.min_speech_ms + self.onset_tolerance_ms + self.frame_ms
        if self.max_utterance_ms < floor:
            raise ValueError(f"max_utterance_ms must be at least prefix_ms + min_speech_ms + onset_tolerance_ms "
                             f"+ frame_ms = {floor}, got {self.max_utterance_ms}")

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate * self.frame_ms // 1000 * 2


class Segmenter:
    """Stateful speech segmenter over fixed frames; see the module docstring for the rules. One per stream."""

    def __init__(self, config: SegmenterConfig | None = None, detector: VoiceDetector | None = None):
        self.config = config = config or SegmenterConfig()
        self._default_detector = detector is None
        self.detector: VoiceDetector = detector or WebRtcDetector(config.aggressiveness, config.sample_rate)
        f = config.frame_ms
        self.frame_ms = f
        self.frame_bytes = config.frame_bytes
        self._onset_frames = max(1, math.ceil(config.min_speech_ms / f))
        self._onset_window = self._onset_frames + math.ceil(config.onset_tolerance_ms / f)
        hint = math.ceil(config.onset_hint_ms / f)
        self._hint_frames = hint if 0 < hint < self._onset_frames else 0
        self._prefix_frames = math.ceil(config.prefix_ms / f)
        self._silence_frames = max(1, math.ceil(config.silence_ms / f))
        pause_frames = math.ceil(config.pause_ms / f)
        # Pause events only make sense before the endpoint.
        self._pause_frames = pause_frames if 0 < pause_frames < self._silence_frames else 0
        self._hold_frames = self._pause_frames or math.ceil(DEFAULT_HOLD_MS / f)
        self._resume_frames = max(1, math.ceil(config.resume_ms / f))
        self._resume_window = 2 * self._resume_frames
        self._max_frames = math.ceil(config.max_utterance_ms / f)
        self._framer = Framer(self.frame_bytes)
        self._ring: deque[bytes] = deque(maxlen=self._prefix_frames + self._onset_window)
        self._voiced: deque[int] = deque()  # indices of voiced frames in the onset (or resume) window
        self._reset_stream()

    # --- public API ------------------------------------------------------------------------------------------

    @property
    def position_ms(self) -> int:
        """Stream time of all complete frames processed so far."""
        return self._index * self.frame_ms

    @property
    def in_speech(self) -> bool:
        """True between a SpeechStart and its SpeechEnd."""
        return self._utterance is not None

    @property
    def pending_bytes(self) -> int:
        """Input bytes waiting for the rest of their frame (always less than one frame)."""
        return self._framer.pending

    def feed(self, pcm16: bytes) -> list[SegmentEvent]:
        """Process any amount of pcm16 (odd bytes and partial frames are carried to the next call)."""
        if type(pcm16) is not bytes:
            pcm16 = bytes(pcm16)  # never keep a reference to a caller's mutable buffer
        if not self._framer.pending and len(pcm16) == self.frame_bytes:
            return self._frame(pcm16)  # the common case: exactly one frame, no copies
        events: list[SegmentEvent] = []
        for frame in self._framer.push(pcm16):
            events.extend(self._frame(frame))
        return events

    @property
    def last_voiced_ms(self) -> int:
        """Stream time just after the last frame that counted as speech in the current utterance."""
        return self._last_voiced_end * self.frame_ms

    @property
    def trailing_silence_ms(self) -> int:
        """Silence since the last frame that counted as speech, in the current utterance (0 outside one)."""
        return (self._index - self._last_voiced_end) * self.frame_ms if self._utterance is not None else 0

    def set_endpoint(self, silence_ms: int) -> list[SegmentEvent]:
        """Change the silence that ends the current utterance (an adaptive endpoint: shorter after a complete
        sentence, longer after a trailing "and"). It holds until the utterance ends or speech resumes. When that
        much silence has already passed, the utterance ends now and its SpeechEnd is returned."""
        if self._utterance is None:
            return []
        self._endpoint_frames = max(1, math.ceil(silence_ms / self.frame_ms))
        if self._index - self._last_voiced_end >= self._endpoint_frames:
            return [self._end("silence")]
        return []

    def commit(self) -> list[SegmentEvent]:
        """End the utterance now (push-to-talk). Voiced audio not yet confirmed as speech is ended too, preceded
        by its SpeechStart so every SpeechEnd has one. Returns [] when there is nothing voiced to end."""
        if self._utterance is not None:
            return [self._end("commit")]
        if not self._voiced:
            return []
        onset, last_voiced = self._voiced[0], self._voiced[-1]
        start = self._idle_start(onset)
        self._begin(start)
        self._last_voiced_end = last_voiced + 1
        return [SpeechStart(start * self.frame_ms, self._index * self.frame_ms), self._end("commit")]

    def reset(self) -> None:
        """Forget everything and start a new stream at position 0."""
        if self._default_detector:
            self.detector = WebRtcDetector(self.config.aggressiveness, self.config.sample_rate)
        self._framer.reset()
        self._reset_stream()

    # --- internals -------------------------------------------------------------------------------------------

    def _reset_stream(self) -> None:
        self._index = 0  # frames processed
        self._ring.clear()
        self._voiced.clear()
        self._utterance: bytearray | None = None
        self._start = 0  # frame index where the current utterance starts
        self._last_voiced_end = 0  # frame index just after the last frame that counted as speech
        self._paused = False
        self._endpoint_frames = self._silence_frames  # the current utterance's endpoint (see set_endpoint)
        self._hinted = False  # a SpeechOnset was emitted and neither confirmed nor lost yet

    def _idle_start(self, onset: int) -> int:
        # The ring holds the most recent frames, all after the previous utterance's end.
        return max(onset - self._prefix_frames, self._index - len(self._ring))

    def _begin(self, start: int) -> None:
        skip = start - (self._index - len(self._ring))
        ring = self._ring
        self._utterance = bytearray(b"".join(ring[i] for i in range(skip, len(ring))))
        self._start = start
        self._paused = False
        self._endpoint_frames = self._silence_frames
        ring.clear()
        self._voiced.clear()

    def _end(self, reason: EndReason) -> SpeechEnd:
        f = self.frame_ms
        audio = bytes(self._utterance or b"")
        event = SpeechEnd(self._start * f, self._index * f, self._last_voiced_end * f, audio, reason)
        self._utterance = None
        self._paused = False
        self._voiced.clear()
        self._ring.clear()
        return event

    def _frame(self, frame: bytes) -> list[SegmentEvent]:
        voiced = self.detector.is_speech(frame)
        index = self._index
        self._index = now = index + 1
        if self._utterance is None:
            return self._idle_frame(frame, voiced, index, now)
        return self._speech_frame(frame, voiced, index, now)

    def _idle_frame(self, frame: bytes, voiced: bool, index: int, now: int) -> list[SegmentEvent]:
        self._ring.append(frame)
        window = self._voiced
        if voiced:
            window.append(index)
        elif not window:
            return []
        oldest = index - self._onset_window
        while window and window[0] <= oldest:
            window.popleft()
        if len(window) < self._onset_frames:
            if self._hint_frames:
                if not self._hinted and len(window) >= self._hint_frames:
                    self._hinted = True
                    return [SpeechOnset(now * self.frame_ms)]
                if self._hinted and not window:
                    self._hinted = False
                    return [SpeechOnsetLost(now * self.frame_ms)]
            return []
        onset = window[0]
        start = self._idle_start(onset)
        self._begin(start)
        self._hinted = False
        self._last_voiced_end = now
        return [SpeechStart(start * self.frame_ms, now * self.frame_ms)]

    def _speech_frame(self, frame: bytes, voiced: bool, index: int, now: int) -> list[SegmentEvent]:
        self._utterance.extend(frame)  # type: ignore[union-attr]
        events: list[SegmentEvent] = []
        if voiced:
            if index - self._last_voiced_end < self._hold_frames:
                self._last_voiced_end = now
                if self._voiced:
                    self._voiced.clear()
            else:
                window = self._voiced
                window.append(index)
                oldest = index - self._resume_window
                while window[0] <= oldest:
                    window.popleft()
                if len(window) >= self._resume_frames:
                    window.clear()
                    self._last_voiced_end = now
                    self._endpoint_frames = self._silence_frames  # an adaptive endpoint no longer applies
                    if self._paused:
                        self._paused = False
                        events.append(SpeechResume(now * self.frame_ms))
        silence = now - self._last_voiced_end
        if self._pause_frames and not self._paused and silence >= self._pause_frames:
            self._paused = True
            events.append(SpeechPause(now * self.frame_ms, bytes(self._utterance)))  # type: ignore[arg-type]
        if silence >= self._endpoint_frames:
            events.append(self._end("silence"))
        elif now - self._start >= self._max_frames:
            events.append(self._end("max_length"))
        return events
