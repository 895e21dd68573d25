"""The socket loop every telephony media stream shares: a provider's WebSocket <-> one Session, through a codec.

Receive: the codec decodes each message; caller audio goes to ``Session.handle`` as InputAudio (after telling the
session how much of the current reply the caller has heard, so a barge-in keeps exactly that), keys as InputDtmf,
echoed marks as ResponsePlayed. Bad messages are logged with their code and counted; the call goes on.

Send: one task drains the session's outbox into a :class:`~voiceserver.gateway.telephony.Playout` (reply audio cut
into the provider's frames, a mark after each phrase), holds the frames while the session pauses a reply (a
possible interruption), and answers a cancellation, or the caller speaking over the tail of a complete reply,
with the provider's clear; a pacer task sends the frames no more than ``lead_ms`` ahead of the caller's playback.
One lock orders every write, so no frame is ever sent after the clear that dropped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..identity import Refusal, vouched_call
from ..logs import get_logger, log_context
from ..session import Session
from ..session.events import (
    ErrorEvent,
    InputAudio,
    InputDtmf,
    ResponseAudio,
    ResponseCancelled,
    ResponseDone,
    ResponsePaused,
    ResponsePlayed,
    ResponseResumed,
    SessionClosed,
    SessionConfig,
    SpeechStarted,
    StartSession,
)
from ..session.outbox import OutboxClosed
from .hub import SessionHub
from .telephony import (
    MediaStreamCodec,
    OutFrame,
    Playout,
    StreamAudio,
    StreamBadInput,
    StreamDtmf,
    StreamMark,
    StreamStart,
    StreamStop,
)

log = get_logger("GATEWAY")

Admit = Callable[[StreamStart], SessionConfig | StreamBadInput]
"""Who the call is (and whether it may be served): the session defaults for this start, or why not."""


@dataclass(slots=True)
class StreamOptions:
    lead_ms: float = 200.0
    max_buffered_ms: float = 10000.0
    max_message_bytes: int = 65536
    start_timeout_s: float = 10.0
    max_log_per_code: int = 20


class MediaStreamCall:
    """One call's media stream, from an accepted WebSocket to the end of its session."""

    def __init__(self, ws: WebSocket, hub: SessionHub, codec: MediaStreamCodec, options: StreamOptions):
        self.ws = ws
        self.hub = hub
        self.codec = codec
        self.options = options
        self.clock = hub.deps.clock
        self.playout = Playout(frame_bytes=codec.frame_bytes, frame_ms=codec.audio_format.ms_for_bytes(
            codec.frame_bytes), silence=codec.silence, lead_ms=options.lead_ms)
        self._lock = asyncio.Lock()  # every write to the socket, so a clear is never overtaken by a frame
        self._wake = asyncio.Event()  # audio queued, or the playback clock moved: the pacer looks again
        self._drained = asyncio.Event()  # the pacer sent frames: a full playout may take more
        self._reported: dict[str, int] = {}
        self._finished: deque[str] = deque(maxlen=8)  # turns whose reply is complete (only their tail may play)
        self._logged: Counter[str] = Counter()
        self._close_code = 1000
        self.session: Session | None = None

    async def run(self, admit: Admit) -> None:
        start = await self._wait_for_start()
        if start is None:
            await self._close(1008)
            return
        admitted = admit(start)
        if isinstance(admitted, StreamBadInput):
            self._bad(admitted)
            await self._close(1008)
            return
        caller = vouched_call(admitted.resource, admitted.thread, admitted.agent)  # what admit verified
        session = self.hub.open(self.codec.name, caller=caller, defaults=admitted)
        if isinstance(session, Refusal):
            self._bad(StreamBadInput(session.code, session.message))
            await self._close(session.close_code)
            return
        self.session = session
        reason = "caller_gone"
        tasks: list[asyncio.Task] = []
        try:
            with log_context(session_id=session.id):
                log.info("call connected", fields={"gateway": self.codec.name, "stream": start.stream_id,
                                                   "call": start.call_id, "resource": admitted.resource})
                await session.handle(StartSession(dataclasses.replace(admitted)))
                tasks = [asyncio.create_task(self._output(session), name=f"{self.codec.name}-out-{session.id}"),
                         asyncio.create_task(self._pace(), name=f"{self.codec.name}-pace-{session.id}")]
                reason = await self._receive(session)
        finally:
            await session.close(reason)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            self.hub.release(session)
            await self._close(self._close_code)

    # --- receiving ------------------------------------------------------------------------------------------------

    async def _next_text(self) -> str | None:
        """The next text message (bad frames are logged and skipped); None when the socket closed."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                if message.get("bytes") is not None:
                    self._bad(self.codec.decode_binary(message["bytes"]))
                continue
            if len(text) > self.options.max_message_bytes:
                self._bad(StreamBadInput("message_too_large", f"a message of {len(text)} characters; the limit "
                                                              f"is {self.options.max_message_bytes}"))
                continue
            return text

    async def _wait_for_start(self) -> StreamStart | None:
        try:
            async with asyncio.timeout(self.options.start_timeout_s):
                while True:
                    text = await self._next_text()
                    if text is None:
                        return None
                    event = self.codec.decode(text)
                    if isinstance(event, StreamStart):
                        return event
                    if isinstance(event, StreamBadInput):
                        self._bad(event)
                        if event.fatal:
                            return None
                    elif isinstance(event, StreamStop):
                        return None
        except TimeoutError:
            self._bad(StreamBadInput("start_timeout", f"no start message within {self.options.start_timeout_s:g} s"))
            return None

    async def _receive(self, session: Session) -> str:
        playout = self.playout
        while not session.closed:
            text = await self._next_text()
            if text is None:
                return "caller_gone"
            event = self.codec.decode(text)
            now = self.clock()
            if type(event) is StreamAudio:  # the hot path
                await self._report_played(session, now)
                await session.handle(InputAudio(event.audio, now))
            elif isinstance(event, StreamMark):
                heard = playout.mark_echoed(event.name, now)
                if heard is not None:
                    self._wake.set()  # the playback clock was corrected: the pacer may send sooner
                    await session.handle(ResponsePlayed(heard[0], int(heard[1])))
                elif not playout.is_discarded(event.name):
                    self._bad(StreamBadInput("unknown_mark", f"mark {event.name[:60]!r} was never sent"))
            elif isinstance(event, StreamDtmf):
                await session.handle(InputDtmf(event.digit))
            elif isinstance(event, StreamStop):
                return "caller_hung_up"
            elif isinstance(event, StreamBadInput):
                self._bad(event)
                if event.fatal:
                    return event.code
        return "ended"

    async def _report_played(self, session: Session, now: float) -> None:
        """Before each caller frame (the only thing that can start a barge-in), tell the session how much of the
        reply being played the caller has heard: marks echoed plus the playback clock since."""
        turn = self.playout.playing_turn(now)
        if turn is None:
            return
        played = int(self.playout.played_ms(turn, now))
        if played >= self._reported.get(turn, -1) + self.playout.frame_ms:
            if turn not in self._reported and len(self._reported) > 8:
                self._reported.clear()
            self._reported[turn] = played
            await session.handle(ResponsePlayed(turn, played))

    # --- sending --------------------------------------------------------------------------------------------------

    async def _output(self, session: Session) -> None:
        """Drain the outbox: reply audio into the playout, clears on cancellation or speech over a reply."""
        playout = self.playout
        try:
            while True:
                event = await session.outbox.get()
                kind = type(event)
                if kind is ResponseAudio:
                    # Backpressure, except while paused: the resume that would drain it is queued behind.
                    while playout.queued_ms >= self.options.max_buffered_ms and not playout.paused:
                        self._drained.clear()
                        await self._drained.wait()
                    if playout.push(event.turn_id, event.phrase_index, event.chunk.audio):
                        self._wake.set()
                elif kind is ResponseDone:
                    if not event.interrupted:
                        playout.end_turn(event.turn_id)
                        self._finished.append(event.turn_id)
                        self._wake.set()
                elif kind is ResponseCancelled:
                    await self._clear(event.turn_id)
                elif kind is ResponsePaused:
                    playout.pause()  # maybe an interruption: send no more until the session decides
                elif kind is ResponseResumed:
                    playout.resume()
                    self._wake.set()
                elif kind is SpeechStarted and playout.playing_turn(self.clock()) in self._finished:
                    # The caller talks over the last audio of a reply that is complete: the session will not cut
                    # it (a reply still running is the session's to pause or cancel), so stop it here.
                    await self._clear(None)
                elif kind is ErrorEvent:
                    log.warning("session error on a call", fields={"code": event.code, "detail": event.message})
                elif kind is SessionClosed and event.reason == "server_shutdown":
                    self._close_code = 1001
        except OutboxClosed:
            pass
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        # The session ended (hang-up, shutdown): closing the socket ends the receive loop and the call.
        await self._close(self._close_code)

    async def _clear(self, turn_id: str | None) -> None:
        async with self._lock:
            if self.playout.clear(self.clock(), turn_id):
                await self._send(self.codec.encode_clear())
        self._drained.set()

    async def _pace(self) -> None:
        playout = self.playout
        while True:
            delay = playout.next_send_in(self.clock())
            if delay is None or delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            async with self._lock:
                for item in playout.take_due(self.clock()):
                    if isinstance(item, OutFrame):
                        await self._send(self.codec.encode_audio(item.audio))
                    else:
                        await self._send(self.codec.encode_mark(item.name))
            self._drained.set()

    async def _send(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The provider went away: the receive loop sees the disconnect and ends the call.
            pass

    async def _close(self, code: int) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        if self.ws.client_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)

    # --- bad input ------------------------------------------------------------------------------------------------

    def _bad(self, bad: StreamBadInput) -> None:
        """Log (the first few per code) and count a message that could not be used."""
        self.hub.deps.metrics.errors.labels(bad.code).inc()
        self._logged[bad.code] += 1
        if self._logged[bad.code] <= self.options.max_log_per_code:
            fields = {"gateway": self.codec.name, "code": bad.code, "detail": bad.message}
            if self.session is not None:
                with log_context(session_id=self.session.id):
                    log.warning("bad media stream message", fields=fields)
            else:
                log.warning("bad media stream message", fields=fields)
