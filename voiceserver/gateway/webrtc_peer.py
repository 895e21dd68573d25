"""One WebRTC caller (aiortc): the microphone track in, the reply track out, the ``events`` data channel both ways.

A :class:`WebRtcPeer` owns one RTCPeerConnection and one Session. Its tasks:

- the microphone consumer: decoded Opus frames -> mono 16 kHz pcm16 (:class:`MicConverter`) -> ``InputAudio``;
- the feeder: the bounded inbound queue (audio, channel messages, the track's played reports) -> ``Session.handle``,
  in arrival order, one at a time, like the native gateway's receive loop;
- the sender: the session's outbox -> reply audio into the :class:`PlaybackBuffer`, every other event as native
  JSON on the data channel; ``response.paused`` holds the buffer, ``response.resumed`` releases it, a barge-in
  (``response.cancelled``) clears it at once;
- the watchdog: ICE not connected within ``webrtc.ice_timeout_s``, or a connected peer silent (no audio frame, no
  message) for ``webrtc.peer_timeout_s``, ends the session (memory is saved by ``Session.close``).

:class:`ReplyTrack` is the outbound track: aiortc's sender pulls a 20 ms frame from it, paced in real time by the
track's own clock; the frame is taken from the buffer only when it is due, so a barge-in drops every frame not yet
sent, and each reply frame that leaves is reported to the session as ``ResponsePlayed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
import numpy as np

try:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the WebRTC gateway needs aiortc: pip install 'voiceserver[webrtc]'") from exc

from ..logs import get_logger, log_context
from ..session import Session
from ..session.events import (
    InputAudio,
    ResponseAudio,
    ResponseCancelled,
    ResponseDone,
    ResponsePaused,
    ResponsePlayed,
    ResponseResumed,
    SessionConfig,
    SpeechStarted,
    StartSession,
)
from ..session.outbox import OutboxClosed
from ..settings import WebRtcConfig
from .hub import SessionHub
from .webrtc_audio import MicConverter, PlaybackBuffer
from .webrtc_codec import EVENTS_CHANNEL, TRACK_FORMAT, decode_channel_message, encode_channel_event

log = get_logger("GATEWAY")

FRAME_MS = 20
MAX_LAG_S = 0.1  # a track this far behind its clock (a stalled loop) resyncs instead of sending a burst
CHANNEL_HIGH_WATER = 1 << 20  # bytes queued on the data channel before the sender waits for the peer
WATCH_INTERVAL_S = 0.25
# A microphone sends a frame every 20 ms; this long without one and the reply frames still leaving are not counted as
# heard (a vanished peer's session keeps only what was played while it was there).
PRESENCE_GRACE_S = 0.5


class ReplyTrack(MediaStreamTrack):
    """The outbound audio track: 20 ms mono 48 kHz frames from the playback buffer, silence between replies."""

    kind = "audio"

    def __init__(self, buffer: PlaybackBuffer, on_played: Callable[[str, float], None]):
        super().__init__()
        self.buffer = buffer
        self.on_played = on_played
        self.frames_sent = 0
        self.reply_frames_sent = 0
        self._samples = buffer.frame_bytes // 2
        self._time_base = fractions.Fraction(1, buffer.sample_rate)
        self._start: float | None = None
        self._pts = 0
        self.took_frame = asyncio.Event()  # set after every frame: the producer waits on it when the buffer is full

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._pts / self.buffer.sample_rate - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_LAG_S:
                self._start = now - self._pts / self.buffer.sample_rate
        out = self.buffer.next_frame()  # taken when due, not before: a clear() drops everything not yet sent
        self.took_frame.set()
        if out.turn_id is not None:
            self.reply_frames_sent += 1
            self.on_played(out.turn_id, out.played_ms)
        frame = av.AudioFrame.from_ndarray(np.frombuffer(out.pcm, dtype="<i2").reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = self.buffer.sample_rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self._samples
        self.frames_sent += 1
        return frame


def rtc_configuration(config: WebRtcConfig) -> RTCConfiguration:
    """aiortc's configuration. An empty list means host candidates only: aiortc would otherwise add Google's STUN
    server, which a closed network cannot reach (gathering would then wait for it)."""
    servers = [RTCIceServer(urls=s.urls, username=s.username,
                            credential=s.credential.get_secret_value() if s.credential else None)
               for s in config.ice_servers]
    return RTCConfiguration(iceServers=servers)


class WebRtcPeer:
    """One caller's peer connection and session (see the module notes)."""

    def __init__(self, hub: SessionHub, session: Session, config: WebRtcConfig, session_config: SessionConfig):
        self.hub = hub
        self.session = session
        self.config = config
        self.session_config = session_config
        self.clock = hub.deps.clock
        limits = hub.deps.limits
        self.max_text_chars = limits.max_text_chars
        self.max_message_bytes = limits.max_frame_bytes
        capacity = max(config.playback_buffer_ms, hub.deps.turn.output_lead_ms + 500)
        self.buffer = PlaybackBuffer(sample_rate=TRACK_FORMAT.sample_rate, frame_ms=FRAME_MS, capacity_ms=capacity)
        self.track = ReplyTrack(self.buffer, self._played)
        self.pc = RTCPeerConnection(rtc_configuration(config))
        self.inbound: asyncio.Queue[Any] = asyncio.Queue(maxsize=limits.inbound_queue_frames)
        self.dropped_inbound = 0
        self.channel: Any = None
        self._channel_low = asyncio.Event()
        self.ready = asyncio.Event()  # connected and the events channel is open
        self.ended = asyncio.Event()
        self.end_reason = "ended"
        self.created_at = self.clock()
        self.last_heard = self.created_at
        self._connected = False
        self._microphone = False  # a microphone track is sending: its frames say the caller is there
        self._microphone_task = False
        self._tasks: set[asyncio.Task] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def id(self) -> str:
        return self.session.id

    # --- signalling -----------------------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer, add the reply track, gather candidates; the answer SDP (no trickle: all candidates
        are in it). Raises ValueError (or aiortc's errors) for an offer aiortc cannot use."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            raise ValueError("the offer has no audio transceiver")
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def end(self, reason: str) -> None:
        """Ask the peer loop to end the session (DELETE, a lost connection, a timeout); idempotent."""
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()

    # --- the peer loop --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the session and serve it until it ends; then close the peer connection and free the session."""
        session = self.session
        try:
            with log_context(session_id=session.id):
                await session.handle(StartSession(self.session_config))
                sender = self._spawn(self._send_loop(), "send")
                feeder = self._spawn(self._feed_loop(), "feed")
                watchdog = self._spawn(self._watch(), "watch")
                ended = asyncio.create_task(self.ended.wait())
                try:
                    done, _ = await asyncio.wait({sender, feeder, watchdog, ended},
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
                for task in done - {ended}:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("webrtc peer task failed", exc_info=task.exception())
                if not session.closed:
                    reason = self.end_reason if self.ended.is_set() else "client_gone"
                    log.info("webrtc peer ending the session", fields={"reason": reason})
                    await session.close(reason)
                if self.ready.is_set():  # let the last events (session.closed) reach the channel
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(asyncio.shield(sender), timeout=2)
                    await self._drain_channel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task
            self.track.stop()
            with contextlib.suppress(Exception):
                await self.pc.close()
            self.hub.release(session)
            if self.dropped_inbound:
                log.warning("webrtc inbound queue overflowed", fields={"dropped": self.dropped_inbound,
                                                                       "session_id": session.id})

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"webrtc-{name}-{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _feed_loop(self) -> None:
        """Inbound events to the session, in order and one at a time (the session's one entry)."""
        session = self.session
        while not session.closed:
            await session.handle(await self.inbound.get())

    async def _send_loop(self) -> None:
        """Drain the outbox: reply audio to the playback buffer, every event as JSON on the channel.

        Barge-in, as the session decides it: ``response.paused`` (a sound over the reply, maybe an interruption)
        holds the buffered audio and the track sends silence; ``response.resumed`` goes on from there;
        ``response.cancelled`` drops everything not yet sent, and late frames of that turn. The caller speaking over
        the tail of a reply that is already complete (the session no longer pauses or cancels it) clears it too."""
        session, buffer = self.session, self.buffer
        finished: deque[str] = deque(maxlen=8)  # turns whose reply is complete: only their tail may be playing
        cut: deque[str] = deque(maxlen=8)  # cancelled turns: frames of theirs still in flight are dropped
        try:
            await self.ready.wait()
            while True:
                event = await session.outbox.get()
                kind = type(event)
                if kind is ResponseAudio:
                    if event.turn_id in cut:
                        continue
                    # Backpressure, except while paused: the resume that would drain the buffer is queued behind.
                    while not buffer.has_room() and not buffer.paused:
                        self.track.took_frame.clear()
                        await self.track.took_frame.wait()
                    buffer.push(event.turn_id, event.chunk.audio)
                    continue
                if kind is ResponsePaused:
                    buffer.pause()
                elif kind is ResponseResumed:
                    buffer.resume()
                elif kind is ResponseCancelled:
                    cut.append(event.turn_id)
                    self._drop_reply("cancelled")
                elif kind is ResponseDone and not event.interrupted:
                    buffer.end_turn(event.turn_id)
                    finished.append(event.turn_id)
                elif kind is SpeechStarted and buffer.playing_turn in finished:
                    self._drop_reply("speech_over_the_tail")
                message = encode_channel_event(event)
                if message is not None:
                    await self._send_message(message)
        except OutboxClosed:
            return

    def _drop_reply(self, why: str) -> None:
        dropped = self.buffer.clear()
        if dropped:
            log.debug("reply audio dropped from the track", fields={"ms": round(dropped), "on": why})

    async def _send_message(self, message: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        while channel.bufferedAmount > CHANNEL_HIGH_WATER and channel.readyState == "open":
            self._channel_low.clear()  # a slow peer: wait for it (the watchdog ends a vanished one)
            await self._channel_low.wait()
        with contextlib.suppress(Exception):
            channel.send(message)

    async def _drain_channel(self) -> None:
        """Give the last messages (session.closed) a moment to leave before the association is aborted."""
        channel = self.channel
        if channel is None:
            return
        channel.bufferedAmountLowThreshold = 0
        if channel.readyState == "open" and channel.bufferedAmount > 0:
            self._channel_low.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._channel_low.wait(), 0.5)
        await asyncio.sleep(0.05)  # handed to SCTP is not yet on the wire: one more turn of the DTLS sender

    async def _watch(self) -> str:
        """End the session on an ICE timeout or a vanished peer (see the module notes)."""
        config = self.config
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = self.clock()
            if self.ended.is_set() or self.session.closed:
                return self.end_reason
            if not self.ready.is_set():
                if now - self.created_at > config.ice_timeout_s:
                    self.end("ice_timeout")
                    return "ice_timeout"
            elif now - self.last_heard > config.peer_timeout_s:
                self.end("peer_timeout")
                return "peer_timeout"

    # --- inbound --------------------------------------------------------------------------------------------------

    def _enqueue(self, event: Any) -> None:
        try:
            self.inbound.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_inbound += 1  # the session fell behind by inbound_queue_frames: drop, never grow

    def _played(self, turn_id: str, played_ms: float) -> None:
        if self._microphone and self.clock() - self.last_heard > PRESENCE_GRACE_S:
            return
        self._enqueue(ResponsePlayed(turn_id, int(played_ms)))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._microphone_task:
            self._microphone_task = True  # one microphone per session: a second audio track is not mixed in
            self._spawn(self._consume_microphone(track), "mic")

    async def _consume_microphone(self, track: MediaStreamTrack) -> None:
        """Decoded microphone frames -> the session's input format, in this task (never blocks the feeder)."""
        converter = MicConverter(self.session_config.input_format.sample_rate)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrived = self.clock()
            self.last_heard = arrived
            self._microphone = True
            try:
                pcm = converter.convert(frame.to_ndarray(), channels=len(frame.layout.channels),
                                        sample_rate=frame.sample_rate, planar=frame.format.is_planar)
            except ValueError as exc:  # a frame in a shape no codec of ours decodes to: skip it, keep listening
                log.warning("unusable microphone frame", fields={"error": str(exc), "session_id": self.id})
                continue
            if pcm:
                self._enqueue(InputAudio(pcm, arrived))

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != EVENTS_CHANNEL:
            log.info("ignoring a data channel", fields={"label": channel.label[:40], "session_id": self.id})
            return
        self.channel = channel
        channel.bufferedAmountLowThreshold = CHANNEL_HIGH_WATER // 2
        channel.on("bufferedamountlow", self._channel_low.set)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self.end("client_gone"))
        self._check_ready()

    def _on_message(self, data: str | bytes) -> None:
        self.last_heard = self.clock()
        self._enqueue(decode_channel_message(data, max_text_chars=self.max_text_chars,
                                             max_message_bytes=self.max_message_bytes))

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected = True
            self._check_ready()
        elif state in ("failed", "closed"):
            self.end("connection_lost" if state == "failed" else "client_gone")

    def _check_ready(self) -> None:
        if self._connected and self.channel is not None and not self.ready.is_set():
            self.last_heard = self.clock()
            self.ready.set()
