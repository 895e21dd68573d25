"""A continuous voice conversation over the native protocol, for kiosks and embedded boards: audio in from a
source, replies out to a sink, barge-in, and reconnection with the same resource and thread.

    conversation = Conversation("ws://server:8080/v1/voice", source=mic, sink=speaker, resource="kiosk-lobby")
    await conversation.run()          # until stop(), Ctrl-C, or the end of a file source

- **Open mic** by default: the server's VAD decides where an utterance ends. With ``push_to_talk``, audio is only
  sent between :meth:`press` and :meth:`release`, and the release sends ``input.commit``.
- **Barge-in**: playback pauses on ``response.paused`` (the server heard a sound: maybe a "mm-hmm"), goes on at
  ``response.resumed``, and stops the moment ``response.cancelled`` arrives. While a reply plays, the conversation
  tells the server how much of it was really played (``response.played``, every ``played_report_ms``, and once
  more after a cancel), so the server keeps exactly the heard text.
- **Echo**: an optional :class:`~voiceserver.kiosk.echo.EchoGate` holds the microphone back while the assistant
  speaks unless the person talks over it loudly (see echo.py; cancellation itself is done by the audio device).
- **Reconnection**: when the server goes away or restarts, the conversation reconnects with exponential backoff
  and jitter, with the same resource and the thread the server gave it, and goes on. A recording (a file source)
  is paused meanwhile; a live source's audio is dropped. An authentication failure is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import websockets

from ..client import AudioFrame, VoiceClient, VoiceClientError
from ..ids import new_id
from .audio_io import FRAME_MS, SILENT_FRAME, AudioSink, AudioSource
from .echo import EchoGate

RETRYABLE = (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake, VoiceClientError, TimeoutError)


class ConversationError(Exception):
    """The conversation cannot go on (refused credentials, too many failed attempts)."""


@dataclass(frozen=True)
class Backoff:
    """Reconnection delays: ``initial_s * factor**attempt`` capped at ``max_s``, minus up to ``jitter`` of it at
    random, so kiosks that lost the same server do not all come back in the same instant."""

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None  # None: keep trying

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** max(attempt, 0))
        return base * (1.0 - self.jitter * (rng or random).random())


@dataclass
class Status:
    """What the one-line status shows."""

    state: str = "connecting"  # connecting, listening, hearing, thinking, speaking, reconnecting, ended
    last_voice_to_voice_ms: float | None = None
    turns: int = 0
    connects: int = 0
    retry_in_s: float | None = None
    error: str | None = None
    thread: str | None = None


@dataclass
class _Playback:
    start_ms: float  # sink position where this turn's audio starts
    received_ms: float = 0.0
    reported_ms: int = -1


@dataclass
class ConversationEvent:
    """Something worth showing: ``kind`` is you, assistant, error, approval or connected."""

    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


class Conversation:
    """See the module docstring."""

    def __init__(self, url: str, *, source: AudioSource, sink: AudioSink, resource: str | None = None,
                 thread: str | None = None, agent: str | None = None, api_key: str | None = None,
                 echo_gate: EchoGate | None = None, push_to_talk: bool = False, backoff: Backoff | None = None,
                 vad: dict[str, int] | None = None, played_report_ms: int = 200, finish_timeout_s: float = 60.0,
                 on_status: Callable[[Status], None] | None = None,
                 on_event: Callable[[ConversationEvent], None] | None = None):
        self.url = url
        self.source = source
        self.sink = sink
        self.resource = resource or new_id("kiosk")  # kept across reconnections, so memory follows
        self.thread = thread
        self.agent = agent
        self.api_key = api_key
        self.echo_gate = echo_gate
        self.push_to_talk = push_to_talk
        self.backoff = backoff or Backoff()
        # Push-to-talk: the release ends the utterance, not a pause (the VAD's longest silence).
        self.vad = vad if vad is not None else ({"silence_ms": 5000} if push_to_talk else None)
        self.played_report_ms = played_report_ms
        self.finish_timeout_s = finish_timeout_s
        self.on_status = on_status
        self.on_event = on_event
        self.status = Status()
        self.events: list[ConversationEvent] = []  # bounded: the last 200
        self._stopping = asyncio.Event()
        self._pressed = False
        self._commit_pending = False
        self._source_ended = False
        self._carry: list[bytes] = []  # frames of a recording not sent when the connection broke
        self._playback: dict[str, _Playback] = {}
        self._cancelled: deque[str] = deque(maxlen=16)  # turns cut by a barge-in: their late audio is dropped
        self._current: str | None = None
        self._awaiting_reply = False

    # --- control --------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def press(self) -> None:
        """Push-to-talk: start sending the microphone."""
        self._pressed = True

    def release(self) -> None:
        """Push-to-talk: stop sending and end the utterance (``input.commit``)."""
        if self._pressed:
            self._pressed = False
            self._commit_pending = True

    @property
    def pressed(self) -> bool:
        return self._pressed

    def _set(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        if self.on_status is not None:
            self.on_status(self.status)

    def _event(self, kind: str, text: str, **data: Any) -> None:
        event = ConversationEvent(kind, text, data)
        self.events = [*self.events[-199:], event]
        if self.on_event is not None:
            self.on_event(event)

    # --- the loop ---------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Converse until :meth:`stop`, the end of a file source (once the last reply was played), or a failure
        that retrying cannot fix (:class:`ConversationError`)."""
        await self.sink.start()
        attempt = 0
        try:
            while not self._stopping.is_set():
                self._set(state="connecting", retry_in_s=None)
                try:
                    async with VoiceClient.connect(self.url, resource=self.resource, thread=self.thread,
                                                   agent=self.agent, vad=self.vad, api_key=self.api_key) as client:
                        attempt = 0
                        self.thread = client.session.get("thread") or self.thread
                        self._set(connects=self.status.connects + 1, thread=self.thread, error=None)
                        self._event("connected", f"resource {self.resource}, thread {self.thread}")
                        if await self._converse(client):
                            return
                except websockets.InvalidStatus as exc:
                    if exc.response.status_code in (401, 403):
                        raise ConversationError(f"the server refused the credentials "
                                                f"(HTTP {exc.response.status_code})") from None
                    self._set(error=f"HTTP {exc.response.status_code}")
                except RETRYABLE as exc:
                    self._set(error=f"{type(exc).__name__}: {exc}"[:120])
                if self._stopping.is_set():
                    return
                if self.backoff.max_attempts is not None and attempt >= self.backoff.max_attempts:
                    raise ConversationError(f"server unreachable after {attempt} attempts: {self.status.error}")
                delay = self.backoff.delay(attempt)
                attempt += 1
                self._set(state="reconnecting", retry_in_s=round(delay, 1))
                await self._wait_offline(delay)
        finally:
            self._set(state="ended", retry_in_s=None)
            await self.sink.close()
            await self.source.close()

    async def _wait_offline(self, delay: float) -> None:
        """Sleep before reconnecting; a live source keeps being read (and dropped), so it never backs up."""
        async def drain() -> None:
            while self.source.live and await self.source.read() is not None:
                pass

        drainer = asyncio.create_task(drain())
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        finally:
            drainer.cancel()
            with contextlib.suppress(BaseException):
                await drainer

    async def _converse(self, client: VoiceClient) -> bool:
        """One connection. True when the conversation is over, False when the connection was lost."""
        self._playback.clear()
        self._cancelled.clear()
        self._current = None
        self._awaiting_reply = False
        self._set(state="listening")
        tasks = {asyncio.create_task(self._microphone(client), name="kiosk-mic"),
                 asyncio.create_task(self._receive(client), name="kiosk-events"),
                 asyncio.create_task(self._report_played(client), name="kiosk-played"),
                 asyncio.create_task(self._stopping.wait(), name="kiosk-stop")}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
        finished = any(t.get_name() in ("kiosk-mic", "kiosk-stop") and not t.cancelled() and t.exception() is None
                       and t.result() is True for t in done)
        if finished or self._stopping.is_set():
            with contextlib.suppress(Exception):
                await client.end()
            return True
        return False

    # --- microphone -------------------------------------------------------------------------------------------------

    def _assistant_speaking(self) -> bool:
        return self.sink.queued_ms > 0 and not self.sink.paused  # a paused speaker makes no echo

    async def _microphone(self, client: VoiceClient) -> bool:
        """Send the source; True once a finished source's conversation is over (the last reply played)."""
        while self._carry:
            await client.send_audio(self._carry[0])
            self._carry.pop(0)
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        ended_at: float | None = None
        while True:
            if self._source_ended:
                frame: bytes | None = SILENT_FRAME
                await asyncio.sleep(FRAME_MS / 1000)
                busy = self._awaiting_reply or self.sink.queued_ms > 0
                now = loop.time()
                ended_at = ended_at or now
                idle_since = None if busy else (idle_since or now)
                if (idle_since is not None and now - idle_since >= 1.0) or now - ended_at > self.finish_timeout_s:
                    return True
            else:
                frame = await self.source.read()
                if frame is None:
                    self._source_ended = True
                    continue
            if self._commit_pending:
                self._commit_pending = False
                await client.commit()
            if self.push_to_talk and not self._pressed:
                continue
            frames = [frame] if self.echo_gate is None else self.echo_gate.process(
                frame, speaking=self._assistant_speaking())
            for index, out in enumerate(frames):
                try:
                    await client.send_audio(out)
                except websockets.ConnectionClosed:
                    if not self.source.live:  # a recording loses nothing: resend on the next connection
                        self._carry = frames[index:]
                    raise

    # --- events -----------------------------------------------------------------------------------------------------

    async def _receive(self, client: VoiceClient) -> None:
        while True:
            try:
                item = await client.next_event(timeout=3600)
            except TimeoutError:
                continue
            except VoiceClientError:
                return  # the connection closed
            if isinstance(item, AudioFrame):
                self._on_audio(item)
            elif self._on_message(item):
                return

    def _on_audio(self, frame: AudioFrame) -> None:
        turn = frame.turn_id or "?"
        if turn in self._cancelled:
            return  # it was cut: nothing more of it plays
        playback = self._playback.get(turn)
        if playback is None:
            playback = self._playback[turn] = _Playback(self.sink.played_ms + self.sink.queued_ms)
            self._current = turn
        self.sink.play(frame.data)
        playback.received_ms += len(frame.data) / 32  # 16 kHz pcm16: 32 bytes a millisecond
        if self.status.state != "speaking":
            self._set(state="speaking")

    def _on_message(self, message: dict[str, Any]) -> bool:
        """Handle one JSON event; True when the server is going away."""
        kind = message.get("type")
        if kind == "speech.started":
            self._set(state="hearing")
        elif kind == "speech.stopped":
            self._awaiting_reply = True
            self._set(state="thinking")
        elif kind == "transcript":
            text = message.get("text") or ""
            if text.strip():
                self._event("you", text)
            else:
                self._awaiting_reply = False
                self._set(state="listening")
        elif kind == "response.audio.started":
            turn = message.get("turn_id") or "?"
            self._playback[turn] = _Playback(self.sink.played_ms + self.sink.queued_ms)
            self._current = turn
        elif kind == "response.paused":
            self.sink.pause()  # the server heard a sound: hold the reply until it knows what it was
        elif kind == "response.resumed":
            self.sink.resume()
        elif kind == "response.cancelled":
            turn = message.get("turn_id") or "?"
            self.sink.clear()  # barge-in: stop playing now
            self._cancelled.append(turn)
        elif kind == "response.done":
            self._awaiting_reply = False
            self._event("assistant", message.get("text") or "", interrupted=bool(message.get("interrupted")))
            self._set(turns=self.status.turns + 1,
                      state="speaking" if self.sink.queued_ms > 0 else "listening")
        elif kind == "metrics" and message.get("voice_to_voice_ms") is not None:
            self._set(last_voice_to_voice_ms=float(message["voice_to_voice_ms"]))
        elif kind == "tool.approval":
            self._event("approval", f"{message.get('tool_name')} {message.get('args')}: say yes or no")
        elif kind == "error":
            if message.get("turn_id"):
                self._awaiting_reply = False
            self._event("error", f"{message.get('code')}: {message.get('message')}")
        elif kind == "session.closed":
            return True
        return False

    def _played(self, turn: str) -> int:
        playback = self._playback[turn]
        return int(max(0.0, min(self.sink.played_ms - playback.start_ms, playback.received_ms)))

    async def _report_played(self, client: VoiceClient) -> None:
        """While a reply plays, tell the server how much of it was played (so a barge-in keeps the heard text)."""
        while True:
            await asyncio.sleep(self.played_report_ms / 1000)
            turn = self._current
            if turn in self._playback:
                played = self._played(turn)
                playback = self._playback[turn]
                if played != playback.reported_ms:  # after a cancel too: the final figure
                    playback.reported_ms = played
                    await client.played(turn, played)
            if self.status.state == "speaking" and self.sink.queued_ms == 0 and not self._awaiting_reply:
                self._set(state="listening")
