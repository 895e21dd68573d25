"""Telephony media streams, provider-neutral and sans-I/O: the codec interface and the outbound playout.

A phone provider (Twilio, Telnyx, Vonage, Plivo...) bridges a call to a WebSocket and speaks its own JSON. A
:class:`MediaStreamCodec` turns that JSON into the small stream vocabulary below (start, audio, a key, an echoed
mark, stop, or a bad message with a code) and renders what the server sends back (audio, a mark, a clear). The
socket loop (:mod:`voiceserver.gateway.telephony_ws`) is shared, so another provider is one more codec file.

:class:`Playout` is the outbound side every such provider needs: reply audio cut into fixed frames, paced no more
than ``lead_ms`` ahead of the caller's playback, a mark after each phrase, and what the caller heard of a turn:
the audio up to the last mark the provider echoed (played) plus what its playback clock says played since. Pure
bookkeeping: time is passed in, nothing awaits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from ..audio.format import AudioFormat

# --- what a provider's stream says (inbound) ----------------------------------------------------------------------


@dataclass(slots=True)
class StreamConnected:
    """The provider opened the stream (nothing to do yet)."""

    protocol: str | None = None
    version: str | None = None


@dataclass(slots=True)
class StreamStart:
    """The call's stream started: ids, the custom parameters the call's instructions set, the audio format."""

    stream_id: str
    call_id: str
    parameters: dict[str, str] = field(default_factory=dict)
    account_id: str | None = None
    tracks: tuple[str, ...] = ()


@dataclass(slots=True)
class StreamAudio:
    """Caller audio in the codec's ``audio_format``."""

    audio: bytes
    timestamp_ms: int | None = None


@dataclass(slots=True)
class StreamDtmf:
    digit: str


@dataclass(slots=True)
class StreamMark:
    """The provider echoed a mark: the audio sent before it was played (or cleared)."""

    name: str


@dataclass(slots=True)
class StreamStop:
    """The stream ended (the caller hung up, or the call moved on)."""


@dataclass(slots=True)
class StreamBadInput:
    """A message that cannot be used: logged and counted with ``code``; the call goes on unless ``fatal``."""

    code: str
    message: str
    fatal: bool = False


StreamEvent = StreamConnected | StreamStart | StreamAudio | StreamDtmf | StreamMark | StreamStop | StreamBadInput


class MediaStreamCodec(Protocol):
    """One provider's media-stream wire format, sans-I/O (see gateway/twilio_codec.py for an implementation).

    ``decode`` takes one text message and returns a stream event, or None for a message that needs nothing (an
    outbound-track echo, an empty payload). ``encode_*`` render the three things the server sends. A codec keeps
    the little state its wire needs (the stream id, whether the stream started).
    """

    name: str  # the gateway name sessions are counted under ("twilio")
    audio_format: AudioFormat  # the call's audio, both ways (mu-law 8 kHz for the PSTN)
    frame_bytes: int  # outbound audio frame (160 bytes = 20 ms of mu-law 8 kHz)
    silence: bytes  # one sample of silence in audio_format, to pad the last frame of a phrase

    def decode(self, text: str) -> StreamEvent | None: ...

    def decode_binary(self, data: bytes) -> StreamBadInput: ...

    def encode_audio(self, audio: bytes) -> str: ...

    def encode_mark(self, name: str) -> str: ...

    def encode_clear(self) -> str: ...


# --- what the server sends (outbound) -----------------------------------------------------------------------------


@dataclass(slots=True)
class OutFrame:
    turn_id: str
    audio: bytes


@dataclass(slots=True)
class OutMark:
    turn_id: str
    name: str


class Playout:
    """Outbound audio of one call: frames, pacing, phrase marks and what the caller heard of each turn.

    Positions are milliseconds on the call's outbound timeline (everything ever sent, minus what a clear threw
    away). The provider plays what it receives in order, in real time; ``_playout_end`` is when it will have played
    everything sent so far, by our clock, corrected each time a mark comes back.
    """

    def __init__(self, *, frame_bytes: int = 160, frame_ms: float = 20.0, silence: bytes = b"\xff",
                 lead_ms: float = 200.0, max_marks: int = 256):
        self.frame_bytes = frame_bytes
        self.frame_ms = frame_ms
        self.silence = silence
        self.lead_ms = lead_ms
        self._queue: deque[OutFrame | OutMark] = deque()
        self._queued_frames = 0
        self._partial = b""
        self._phrase: tuple[str, int] | None = None  # (turn, phrase index) of the audio being cut into frames
        self._seq = 0
        self.position_ms = 0.0  # end of everything sent to the provider
        self._playout_end: float | None = None
        self._echoed_ms = 0.0  # position of the last mark the provider echoed
        self._turn_start: dict[str, float] = {}  # turn -> position where its first frame starts
        self._turn_sent: dict[str, float] = {}  # turn -> ms of its audio sent
        self._last_turn: str | None = None  # the turn whose audio was sent last
        self._marks: dict[str, tuple[str, float]] = {}  # sent, not yet echoed: name -> (turn, position)
        self._discarded: deque[str] = deque(maxlen=max_marks)  # marks a clear threw away: their echo means nothing
        self._cleared: deque[str] = deque(maxlen=16)  # turns whose audio was cleared: later audio of them is dropped
        self.paused = False  # the session paused the reply (a possible interruption): no frame leaves meanwhile

    # --- filling --------------------------------------------------------------------------------------------------

    def push(self, turn_id: str, phrase_index: int, audio: bytes) -> bool:
        """Queue reply audio; a new phrase (or turn) closes the previous one with a mark. False if the turn was
        cleared (its late audio is dropped)."""
        if turn_id in self._cleared:
            return False
        if self._phrase is not None and self._phrase != (turn_id, phrase_index):
            self._close_phrase()
        self._phrase = (turn_id, phrase_index)
        data = self._partial + audio
        whole = len(data) - len(data) % self.frame_bytes
        for offset in range(0, whole, self.frame_bytes):
            self._queue.append(OutFrame(turn_id, data[offset:offset + self.frame_bytes]))
            self._queued_frames += 1
        self._partial = data[whole:]
        return True

    def end_turn(self, turn_id: str) -> None:
        """The turn's reply is complete: pad and mark its last phrase."""
        if self._phrase is not None and self._phrase[0] == turn_id:
            self._close_phrase()

    def _close_phrase(self) -> None:
        assert self._phrase is not None
        turn_id, index = self._phrase
        if self._partial:
            pad = self.silence * ((self.frame_bytes - len(self._partial)) // max(len(self.silence), 1))
            self._queue.append(OutFrame(turn_id, self._partial + pad))
            self._queued_frames += 1
            self._partial = b""
        self._seq += 1
        self._queue.append(OutMark(turn_id, f"{turn_id}:{index}:{self._seq}"))
        self._phrase = None

    # --- sending --------------------------------------------------------------------------------------------------

    def pause(self) -> None:
        """Hold the frames not sent yet (the provider still plays what it has: at most ``lead_ms``)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    @property
    def queued_ms(self) -> float:
        """Audio waiting to be sent (not yet handed to the provider)."""
        return self._queued_frames * self.frame_ms

    def next_send_in(self, now: float) -> float | None:
        """Seconds until the next item may be sent (0: now), or None when nothing is queued."""
        if not self._queue:
            return None
        if isinstance(self._queue[0], OutMark):
            return 0.0
        if self.paused:
            return None
        if self._playout_end is None:
            return 0.0
        return max(0.0, self._playout_end - now - self.lead_ms / 1000)

    def take_due(self, now: float) -> list[OutFrame | OutMark]:
        """The frames and marks that may be sent now: frames while sending stays within ``lead_ms`` of playback."""
        out: list[OutFrame | OutMark] = []
        while self._queue:
            item = self._queue[0]
            if isinstance(item, OutMark):
                self._queue.popleft()
                self._marks[item.name] = (item.turn_id, self.position_ms)
                out.append(item)
                continue
            if self.paused or (self._playout_end is not None
                               and (self._playout_end - now) * 1000 > self.lead_ms + 1e-6):
                break
            self._queue.popleft()
            self._queued_frames -= 1
            start = now if self._playout_end is None else max(now, self._playout_end)
            if item.turn_id not in self._turn_start:
                self._turn_start[item.turn_id] = self.position_ms
                self._turn_sent[item.turn_id] = 0.0
                self._forget_old_turns()
            self.position_ms += self.frame_ms
            self._turn_sent[item.turn_id] += self.frame_ms
            self._playout_end = start + self.frame_ms / 1000
            self._last_turn = item.turn_id
            out.append(item)
        return out

    def _forget_old_turns(self, keep: int = 8) -> None:
        while len(self._turn_start) > keep:
            oldest = next(iter(self._turn_start))
            del self._turn_start[oldest]
            self._turn_sent.pop(oldest, None)

    # --- what was heard -------------------------------------------------------------------------------------------

    def played_position(self, now: float) -> float:
        """Where the caller's playback is: at least the last echoed mark, else by the playback clock."""
        if self._playout_end is None:
            return self._echoed_ms
        by_clock = self.position_ms - max(0.0, self._playout_end - now) * 1000
        return max(self._echoed_ms, by_clock)

    def played_ms(self, turn_id: str, now: float) -> float:
        """Milliseconds of ``turn_id``'s audio the caller has heard."""
        start = self._turn_start.get(turn_id)
        if start is None:
            return 0.0
        return max(0.0, min(self.played_position(now) - start, self._turn_sent[turn_id]))

    def playing_turn(self, now: float) -> str | None:
        """The turn whose audio is being played (sent and not all heard yet), if any."""
        turn = self._last_turn
        if turn is None or turn not in self._turn_start:
            return None
        return turn if self.played_ms(turn, now) < self._turn_sent[turn] or self._queue else None

    def mark_echoed(self, name: str, now: float) -> tuple[str, float] | None:
        """The provider echoed ``name``: the audio before it was played. Returns (turn, played ms of that turn),
        or None for a mark a clear threw away (its echo does not mean it played) or one never sent."""
        entry = self._marks.pop(name, None)
        if entry is None:
            return None
        turn_id, position = entry
        for other, (_, pos) in list(self._marks.items()):  # marks come back in order: earlier ones played too
            if pos <= position:
                del self._marks[other]
        self._echoed_ms = max(self._echoed_ms, position)
        # The provider says where its playback really is: re-anchor the clock on it.
        self._playout_end = now + max(0.0, self.position_ms - position) / 1000
        return turn_id, self.played_ms(turn_id, now)

    def is_discarded(self, name: str) -> bool:
        return name in self._discarded

    def has_unplayed(self, now: float) -> bool:
        """Audio is queued, half cut, or sent and not yet played."""
        return bool(self._queue or self._partial) or self.played_position(now) < self.position_ms - 1e-6

    def clear(self, now: float, turn_id: str | None = None) -> bool:
        """Barge-in: drop everything not yet played (the caller of this sends the provider's clear). Marks still
        outstanding are discarded. ``turn_id`` (default: the turn being played or cut) gets no more audio. Returns
        True when there was something to clear."""
        had = self.has_unplayed(now)
        for item in self._queue:
            if isinstance(item, OutMark):
                self._discarded.append(item.name)
        self._discarded.extend(self._marks)
        self._marks.clear()
        turns = {t for t in (turn_id, self._last_turn, self._phrase[0] if self._phrase else None) if t}
        turns |= {item.turn_id for item in self._queue}
        for turn in turns:
            if turn not in self._cleared:
                self._cleared.append(turn)
        self._queue.clear()
        self._queued_frames = 0
        self._partial = b""
        self._phrase = None
        heard = self.played_position(now)
        for turn, start in self._turn_start.items():  # what was sent past the playback point was never heard
            self._turn_sent[turn] = max(0.0, min(self._turn_sent[turn], heard - start))
        self.position_ms = heard
        self._echoed_ms = min(self._echoed_ms, heard)
        self._playout_end = now
        self.paused = False
        return had
