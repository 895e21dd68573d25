"""Audio of the WebRTC gateway, sans-I/O: the outbound track's playback buffer and the microphone converter.

:class:`PlaybackBuffer` is the server-side playback buffer of the reply track. The send loop pushes the session's
reply audio (48 kHz pcm16, tagged with its turn); the track takes exactly one 20 ms frame every 20 ms, silence when
there is nothing to say. A pause (the caller may be interrupting) holds the audio where it is and sends silence;
a resume goes on from there; a barge-in clears the buffer at once, so the frames not yet sent are never heard. Each
frame says how much of its turn's audio has left the track: that is what the caller heard.

:class:`MicConverter` turns the decoded microphone frames aiortc gives (48 kHz Opus, s16, usually stereo) into the
session's mono 16 kHz pcm16, with the audio package's resampler.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..audio import Resampler


@dataclass(slots=True)
class TrackFrame:
    """One frame for the track: ``pcm`` is always a full frame; ``turn_id`` None means silence."""

    pcm: bytes
    turn_id: str | None = None
    audio_ms: float = 0.0  # reply audio in this frame (a turn's last frame is padded with silence)
    played_ms: float = 0.0  # the turn's reply audio sent so far, this frame included


@dataclass(slots=True)
class _Segment:
    turn_id: str
    data: bytearray
    ended: bool = False
    played_ms: float = 0.0


class PlaybackBuffer:
    """Reply audio waiting for the track, one segment per turn (see the module notes). Not thread-safe: the send
    loop and the track both run on the event loop."""

    def __init__(self, *, sample_rate: int = 48000, frame_ms: int = 20, capacity_ms: float = 3000.0):
        if frame_ms <= 0 or sample_rate <= 0:
            raise ValueError("sample_rate and frame_ms must be positive")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self.capacity_ms = capacity_ms
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._segments: deque[_Segment] = deque()
        self._buffered = 0
        self._silence = bytes(self.frame_bytes)
        self.paused = False

    @property
    def buffered_ms(self) -> float:
        return self._buffered / self._bytes_per_ms

    def has_room(self) -> bool:
        """False once ``capacity_ms`` is buffered: the producer waits for the track to play some."""
        return self.buffered_ms < self.capacity_ms

    def push(self, turn_id: str, pcm: bytes) -> None:
        """Queue reply audio of ``turn_id`` (mono pcm16 at ``sample_rate``) after everything already queued."""
        if not pcm:
            return
        if len(pcm) % 2:
            raise ValueError(f"pcm16 audio must have an even number of bytes, got {len(pcm)}")
        last = self._segments[-1] if self._segments else None
        if last is not None and last.turn_id == turn_id and not last.ended:
            last.data += pcm
        else:
            self._segments.append(_Segment(turn_id, bytearray(pcm)))
        self._buffered += len(pcm)

    @property
    def playing_turn(self) -> str | None:
        """The turn whose audio goes out next (None when nothing is queued)."""
        return next((s.turn_id for s in self._segments if s.data), None)

    def pause(self) -> None:
        """Hold the queued audio where it is; the track sends silence until :meth:`resume`."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def end_turn(self, turn_id: str) -> None:
        """The turn sent all its audio: its last partial frame goes out padded instead of waiting for more."""
        for segment in self._segments:
            if segment.turn_id == turn_id:
                segment.ended = True

    def clear(self) -> float:
        """Drop everything not yet sent (barge-in) and end a pause; returns the milliseconds dropped."""
        dropped = self.buffered_ms
        self._segments.clear()
        self._buffered = 0
        self.paused = False
        return dropped

    def next_frame(self) -> TrackFrame:
        """The frame to send now: reply audio, or silence when none is ready (between replies, or while the
        reply's next phrase is still being synthesised, or while paused)."""
        while self._segments and not self.paused:
            head = self._segments[0]
            later = len(self._segments) > 1
            if len(head.data) >= self.frame_bytes:
                return self._take(head, self.frame_bytes, pop=False)
            if head.data and (head.ended or later):
                return self._take(head, len(head.data), pop=True)
            if not head.data and (head.ended or later):
                self._segments.popleft()
                continue
            break  # a turn still speaking that ran dry: silence until its next audio arrives
        return TrackFrame(self._silence)

    def _take(self, segment: _Segment, n: int, *, pop: bool) -> TrackFrame:
        pcm = bytes(segment.data[:n])
        del segment.data[:n]
        self._buffered -= n
        ms = n / self._bytes_per_ms
        segment.played_ms += ms
        if pop:
            self._segments.popleft()
        if n < self.frame_bytes:
            pcm += bytes(self.frame_bytes - n)
        return TrackFrame(pcm, segment.turn_id, ms, segment.played_ms)


class MicConverter:
    """Decoded microphone audio (s16 or float, packed or planar, any channel count and rate) -> mono pcm16 at
    ``out_rate``. One per microphone track: the resampler keeps its state across frames."""

    def __init__(self, out_rate: int = 16000):
        self.out_rate = out_rate
        self._resampler: Resampler | None = None

    def convert(self, samples: np.ndarray, *, channels: int, sample_rate: int, planar: bool) -> bytes:
        """``samples`` as PyAV's ``AudioFrame.to_ndarray()`` gives them: shape (channels, n) when planar, else
        (1, n * channels) interleaved."""
        if samples.dtype.kind == "f":
            samples = np.clip(np.rint(samples * 32767.0), -32768, 32767)
        if channels > 1:
            wide = samples.astype(np.int32)
            frames = wide if planar else wide.reshape(-1, channels).T
            mono = (frames.sum(axis=0) // channels).astype("<i2")
        else:
            mono = samples.reshape(-1).astype("<i2")
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            self._resampler = Resampler(sample_rate, self.out_rate)
        return self._resampler.process(mono.tobytes())
