"""A kiosk hears its own speaker. Two defences, used together on a microphone:

1. **Acoustic echo cancellation** (:class:`EchoCanceller`) when a well-kept library provides it: WebRTC's AEC3, the
   canceller browsers use, as packaged in LiveKit's Python SDK (``livekit.rtc.AudioProcessingModule``, PyPI
   ``livekit``, Apache-2.0, in the ``kiosk`` extra). It subtracts what the speaker played (the far-end reference)
   from the microphone, in 10 ms frames. The older PyPI bindings (``speexdsp``, ``webrtc-audio-processing``) have
   had no release since 2018-2019, so they are not used.
2. **A gate** (:class:`EchoGate`): while the assistant speaks, the microphone is sent as silence, unless the person
   is clearly louder than the echo for ``open_ms`` (a barge-in): then the held audio and what follows go through.
   The echo level is learnt while the assistant speaks, so a loud speaker raises the bar. The gate works without
   any library, and behind AEC it only has residual echo to keep out.

A file or pipe source has no acoustic echo: use neither (``--echo off``, the default for them).
"""

from __future__ import annotations

from collections import deque

from ..audio import rms_dbfs
from .audio_io import FRAME_BYTES, FRAME_MS, RATE, SILENT_FRAME

AEC_EXTRA_HINT = "pip install 'voiceserver[kiosk]'"


class EchoGate:
    """Decides, frame by frame, what of the microphone is sent while the assistant speaks.

    ``process(frame, speaking)`` returns the frames to send now: the frame itself when the assistant is quiet;
    while it speaks (and ``hangover_ms`` after), frames are held ``open_ms`` and sent as silence, unless
    ``open_ms`` of consecutive frames are at least ``open_dbfs`` and ``margin_db`` above the echo level: then the
    gate opens, the held frames go out as they were (the start of the barge-in is not lost), and it stays open
    until the assistant has been quiet for ``hangover_ms``. The first ``learn_ms`` of each reply only measure the
    echo (it cannot open then): the echo level is what a barge-in must exceed, and it is kept from reply to reply.
    """

    def __init__(self, *, open_dbfs: float = -35.0, margin_db: float = 10.0, open_ms: int = 160,
                 hangover_ms: int = 300, learn_ms: int = 200):
        self.open_dbfs = open_dbfs
        self.margin_db = margin_db
        self.hold_frames = max(1, open_ms // FRAME_MS)
        self.hangover_frames = hangover_ms // FRAME_MS
        self.learn_frames = learn_ms // FRAME_MS
        self._speaking_frames = 0
        self.echo_dbfs = -90.0
        self.is_open = False
        self.opened = 0  # how many times the gate let a barge-in through
        self._held: deque[bytes] = deque()
        self._loud = 0
        self._quiet_for = self.hangover_frames + 1

    def process(self, frame: bytes, *, speaking: bool) -> list[bytes]:
        self._quiet_for = 0 if speaking else self._quiet_for + 1
        if self._quiet_for > self.hangover_frames:  # the assistant is quiet: pass everything
            self._speaking_frames = 0
            out = [SILENT_FRAME] * len(self._held) + [frame]  # what was held was echo: it stays silent
            self._held.clear()
            self._loud = 0
            self.is_open = False
            return out
        if self.is_open:
            return [frame]
        level = max(rms_dbfs(frame), -90.0)
        self._speaking_frames += 1
        learning = self._speaking_frames <= self.learn_frames
        loud = not learning and level >= self.open_dbfs and level >= self.echo_dbfs + self.margin_db
        if not loud:  # learn the echo level from what the speaker puts into the microphone
            weight = 0.3 if learning else 0.1
            self.echo_dbfs = level if self.echo_dbfs <= -90 else (1 - weight) * self.echo_dbfs + weight * level
        self._loud = self._loud + 1 if loud else 0
        self._held.append(frame)
        if self._loud >= self.hold_frames:
            self.is_open = True
            self.opened += 1
            out, self._held = list(self._held), deque()
            return out
        if len(self._held) > self.hold_frames:
            self._held.popleft()
            return [SILENT_FRAME]
        return []


class AecUnavailable(ImportError):
    pass


class EchoCanceller:
    """WebRTC AEC3 through ``livekit.rtc.AudioProcessingModule``: feed what was played (:meth:`far`) and filter the
    microphone (:meth:`near`), 20 ms frames of 16 kHz pcm16, in the order they happened."""

    def __init__(self, *, delay_ms: int = 0, noise_suppression: bool = True):
        try:
            from livekit import rtc
        except ImportError as exc:
            raise AecUnavailable(f"echo cancellation needs LiveKit's WebRTC audio processing: {AEC_EXTRA_HINT}"
                                 ) from exc
        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True, noise_suppression=noise_suppression,
                                              high_pass_filter=True)
        self.set_delay_ms(delay_ms)
        self._half = FRAME_BYTES // 2  # 10 ms: the module's frame

    def set_delay_ms(self, delay_ms: int) -> None:
        """How far the echo trails its reference (the device's input + output latency); AEC3 refines it."""
        if delay_ms > 0:
            self._apm.set_stream_delay_ms(int(delay_ms))

    def _frames(self, pcm: bytes):
        for offset in range(0, len(pcm) - self._half + 1, self._half):
            yield self._rtc.AudioFrame(pcm[offset:offset + self._half], RATE, 1, self._half // 2)

    def far(self, played: bytes) -> None:
        """Audio the speaker just played (the reference the echo is predicted from)."""
        for frame in self._frames(played):
            self._apm.process_reverse_stream(frame)

    def near(self, mic: bytes) -> bytes:
        """The microphone with the echo removed."""
        out = []
        for frame in self._frames(mic):
            self._apm.process_stream(frame)
            out.append(bytes(frame.data))
        return b"".join(out)


def aec_available() -> bool:
    try:
        import livekit.rtc  # noqa: F401
    except ImportError:
        return False
    return True
