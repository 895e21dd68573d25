"""A fake Twilio, written from Twilio's documented messages, to test a server's telephony bridge.

    async with FakeTwilioCall.dial(vs.http_url, from_number="+15551230001") as call:
        await call.say(to_mulaw_8k(speech))          # real-time 20 ms media frames; silence otherwise
        await call.wait_for(lambda c: c.marks_echoed)
        await call.press("1")

``dial`` does what Twilio does for an incoming call: POSTs the voice webhook (form parameters, signed with
X-Twilio-Signature when given the auth token), reads the TwiML's ``<Connect><Stream url>`` and ``<Parameter>``s,
opens the WebSocket (the upgrade signed over its URL), sends ``connected`` and ``start``, then streams the caller's
audio in real time: 20 ms mu-law frames, silence between utterances, as a phone line does. Reply ``media`` is
played in real time; a ``mark`` is echoed once the audio sent before it has played; a ``clear`` drops the buffered
audio and echoes the outstanding marks at once (as Twilio documents). Everything received is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from ..audio import Resampler, mulaw_encode
from ..gateway.twilio_auth import compute_signature

FRAME = 160  # 20 ms of mu-law at 8 kHz
SILENCE = b"\xff" * FRAME


def to_mulaw_8k(pcm16: bytes, rate: int = 16000) -> bytes:
    """pcm16 at ``rate`` -> mu-law at 8 kHz, as a phone network carries it."""
    resampler = Resampler(rate, 8000)
    return mulaw_encode(resampler.process(pcm16) + resampler.flush())


def parse_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """The ``<Connect><Stream url>`` and its ``<Parameter>`` name/value pairs."""
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise ValueError(f"no <Connect><Stream url> in {twiml[:200]!r}")
    return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


@dataclass
class Received:
    at: float
    message: dict[str, Any]


@dataclass
class EchoedMark:
    name: str
    at: float
    played: bool  # False: echoed because a clear threw its audio away
    played_ms: float  # of all reply audio, when it was echoed


@dataclass
class CallRecord:
    """What the fake Twilio saw and did during a call."""

    received: list[Received] = field(default_factory=list)
    media_stream_sids: set[str] = field(default_factory=set)
    first_media_at: float | None = None
    played: bytearray = field(default_factory=bytearray)
    marks_sent: list[str] = field(default_factory=list)
    marks_echoed: list[EchoedMark] = field(default_factory=list)
    clears: list[tuple[float, float]] = field(default_factory=list)  # (when, ms of reply audio played by then)


class FakeTwilioCall:
    """One call's Media Stream, driven like Twilio drives it (see the module docstring)."""

    def __init__(self, ws: Any, *, stream_sid: str, call_sid: str, account_sid: str):
        self.ws = ws
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.record = CallRecord()
        self.closed = asyncio.Event()
        self._seq = 0
        self._chunk = 0
        self._speech: deque[bytes] = deque()
        self._speech_done = asyncio.Event()
        self._speech_done.set()
        self.last_speech_frame_at: float | None = None
        self._out: deque[tuple[str, bytes | str]] = deque()
        self._out_ready = asyncio.Event()
        self._generation = 0
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []

    # --- dialling -------------------------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def dial(cls, http_url: str, *, from_number: str = "+15551230001", to_number: str = "+15559870002",
                   auth_token: str | None = None, webhook_path: str = "/v1/twilio/voice", query: str = "",
                   direction: str = "inbound", call_sid: str | None = None,
                   parameters: dict[str, str] | None = None) -> AsyncIterator[FakeTwilioCall]:
        """Call the webhook, connect the stream it names, yield the running call; hang up at the end.
        ``parameters`` replaces the TwiML's parameters (to test a forged start)."""
        call_sid = call_sid or "CA" + uuid.uuid4().hex
        account_sid = "AC" + "0" * 32
        form = {"CallSid": call_sid, "AccountSid": account_sid, "From": from_number, "To": to_number,
                "Direction": direction, "CallStatus": "ringing", "ApiVersion": "2010-04-01"}
        url = http_url.rstrip("/") + webhook_path + (f"?{query}" if query else "")
        headers = {"X-Twilio-Signature": compute_signature(auth_token, url, form.items())} if auth_token else {}
        async with httpx.AsyncClient() as http:
            answer = await http.post(url, data=form, headers=headers)
        answer.raise_for_status()
        stream_url, twiml_params = parse_twiml(answer.text)
        call = await cls.connect(stream_url, parameters if parameters is not None else twiml_params,
                                 call_sid=call_sid, account_sid=account_sid, auth_token=auth_token)
        try:
            yield call
        finally:
            await call.hang_up()

    @classmethod
    async def connect(cls, stream_url: str, parameters: dict[str, str], *, call_sid: str, account_sid: str,
                      auth_token: str | None = None) -> FakeTwilioCall:
        headers = {"X-Twilio-Signature": compute_signature(auth_token, stream_url)} if auth_token else None
        ws = await websockets.connect(stream_url, additional_headers=headers, max_size=1 << 22)
        call = cls(ws, stream_sid="MZ" + uuid.uuid4().hex, call_sid=call_sid, account_sid=account_sid)
        await call.send({"event": "connected", "protocol": "Call", "version": "1.0.0"}, numbered=False)
        await call.send({"event": "start", "start": {
            "accountSid": account_sid, "streamSid": call.stream_sid, "callSid": call_sid, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": parameters}, "streamSid": call.stream_sid})
        call._tasks = [asyncio.create_task(call._listen()), asyncio.create_task(call._play()),
                       asyncio.create_task(call._microphone())]
        return call

    # --- the caller -----------------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any], *, numbered: bool = True) -> None:
        if numbered:
            self._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(self._seq), **message}
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        """Anything at all (bad-input tests)."""
        await self.ws.send(data)

    async def say(self, mulaw: bytes, *, wait: bool = True) -> None:
        """Speak ``mulaw`` (8 kHz) into the call in real time; returns once its last frame was sent."""
        for offset in range(0, len(mulaw), FRAME):
            self._speech.append(mulaw[offset:offset + FRAME].ljust(FRAME, b"\xff"))
        self._speech_done.clear()
        if wait:
            await self._speech_done.wait()

    async def press(self, digit: str) -> None:
        await self.send({"event": "dtmf", "streamSid": self.stream_sid,
                         "dtmf": {"track": "inbound_track", "digit": digit}})

    async def hang_up(self) -> None:
        if not self.closed.is_set():
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.send({"event": "stop", "streamSid": self.stream_sid,
                                 "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.closed.set()

    async def _microphone(self) -> None:
        """A phone line never stops: 20 ms frames of what the caller says, or of silence."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while True:
            delay = start + sent * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            speaking = bool(self._speech)
            frame = self._speech.popleft() if speaking else SILENCE
            self._chunk += 1
            await self.send({"event": "media", "streamSid": self.stream_sid, "media": {
                "track": "inbound", "chunk": str(self._chunk), "timestamp": str(sent * 20),
                "payload": base64.b64encode(frame).decode()}})
            sent += 1
            if speaking:
                self.last_speech_frame_at = time.perf_counter()
                if not self._speech:
                    self._speech_done.set()

    # --- Twilio's side of the reply -------------------------------------------------------------------------------

    async def _listen(self) -> None:
        record = self.record
        try:
            async for text in self.ws:
                message = json.loads(text)
                record.received.append(Received(time.perf_counter(), message))
                event = message.get("event")
                if event == "media":
                    if record.first_media_at is None:
                        record.first_media_at = time.perf_counter()
                    record.media_stream_sids.add(message.get("streamSid"))
                    self._out.append(("audio", base64.b64decode(message["media"]["payload"])))
                    self._out_ready.set()
                elif event == "mark":
                    record.marks_sent.append(message["mark"]["name"])
                    self._out.append(("mark", message["mark"]["name"]))
                    self._out_ready.set()
                elif event == "clear":
                    record.clears.append((time.perf_counter(), len(record.played) / 8))
                    self._generation += 1
                    pending = [name for kind, name in self._out if kind == "mark"]
                    self._out.clear()
                    for name in pending:
                        await self._echo(str(name), played=False)
                await self._notify()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            await self._notify()

    async def _play(self) -> None:
        """Play buffered reply audio in real time; echo each mark when the audio before it has played."""
        loop = asyncio.get_running_loop()
        next_at: float | None = None
        while True:
            if not self._out:
                self._out_ready.clear()
                await self._out_ready.wait()
                next_at = None
                continue
            kind, item = self._out[0]
            if kind == "mark":
                self._out.popleft()
                await self._echo(str(item), played=True)
                continue
            now = loop.time()
            next_at = now if next_at is None or next_at < now else next_at  # a gap in the reply was silence
            generation = self._generation
            if next_at > now:
                await asyncio.sleep(next_at - now)
            if generation != self._generation or not self._out:
                continue  # cleared while waiting
            assert isinstance(item, bytes)
            piece, rest = item[:FRAME], item[FRAME:]
            if rest:
                self._out[0] = ("audio", rest)
            else:
                self._out.popleft()
            self.record.played += piece
            next_at += len(piece) / 8000

    async def _echo(self, name: str, *, played: bool) -> None:
        self.record.marks_echoed.append(EchoedMark(name, time.perf_counter(), played, len(self.record.played) / 8))
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        await self._notify()

    # --- waiting --------------------------------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, condition: Callable[[FakeTwilioCall], Any], timeout: float = 30.0) -> Any:
        """Wait until ``condition(call)`` is truthy (checked on every message); returns its value."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while True:
                    value = condition(self)
                    if value:
                        return value
                    if self.closed.is_set():
                        raise ConnectionError("the server closed the stream")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await self._changed.wait()

    async def wait_until_played(self, *, quiet_s: float = 0.5, timeout: float = 30.0) -> None:
        """Wait until every mark was echoed and the server sent nothing for ``quiet_s`` (the reply is over)."""
        def done(call: FakeTwilioCall) -> bool:
            record = call.record
            last = record.received[-1].at if record.received else 0.0
            return (len(record.marks_echoed) >= len(record.marks_sent) and not call._out
                    and time.perf_counter() - last >= quiet_s)

        await self.wait_for(done, timeout)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [r.message for r in self.record.received if r.message.get("event") == kind]

    @property
    def played_ms(self) -> float:
        return len(self.record.played) / 8
