"""An async client for the native voice protocol (used by tests, benchmarks, `voiceserver talk`, and kiosks).

    async with VoiceClient.connect("ws://127.0.0.1:8080/v1/voice", resource="user-1") as client:
        turn = await client.ask_text("What time is it?")
        print(turn.reply_text, len(turn.audio))

Events arrive as dicts (JSON messages) or :class:`AudioFrame` (binary reply audio, tagged with the turn it belongs
to). Every send records the wall-clock time, so latency can be measured at the client.

A continuous conversation (microphone or files, barge-in, echo handling, reconnection) is
:class:`voiceserver.kiosk.Conversation`, also importable from here as ``voiceserver.client.Conversation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import websockets

from .audio.format import PCM16_16K, AudioFormat


@dataclass(slots=True)
class AudioFrame:
    turn_id: str | None
    data: bytes
    received_at: float


@dataclass
class TurnResult:
    """Everything the server sent for one turn."""

    turn_id: str | None = None
    transcript: str | None = None
    reply_text: str = ""
    audio: bytes = b""
    audio_format: AudioFormat = PCM16_16K
    metrics: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    heard_text: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    first_audio_at: float | None = None
    speech_stopped_at: float | None = None
    done_at: float | None = None


class VoiceClientError(Exception):
    pass


class VoiceClient:
    """A connected native-protocol session."""

    def __init__(self, ws: Any, *, input_format: AudioFormat, output_format: AudioFormat):
        self.ws = ws
        self.input_format = input_format
        self.output_format = output_format
        self.session: dict[str, Any] = {}
        self.sent_audio_ms = 0.0
        self.send_times: list[tuple[float, float]] = []  # (stream ms at end of frame, wall clock)
        self._events: asyncio.Queue[dict[str, Any] | AudioFrame | None] = asyncio.Queue(maxsize=10000)
        self._audio_turn: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, *, resource: str | None = None, thread: str | None = None,
                      agent: str | None = None, input_format: AudioFormat = PCM16_16K,
                      output_format: AudioFormat = PCM16_16K, vad: dict[str, int] | None = None,
                      api_key: str | None = None, open_timeout: float = 20.0) -> AsyncIterator[VoiceClient]:
        """Connect, send session.start, wait for session.started."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        async with websockets.connect(url, additional_headers=headers, max_size=1 << 22,
                                      open_timeout=open_timeout) as ws:
            client = cls(ws, input_format=input_format, output_format=output_format)
            start: dict[str, Any] = {"type": "session.start", "audio": input_format.to_dict(),
                                     "output_audio": output_format.to_dict()}
            for key, value in (("resource", resource), ("thread", thread), ("agent", agent), ("vad", vad)):
                if value is not None:
                    start[key] = value
            await client.send_json(start)
            client.session = await client.wait_for("session.started", timeout=open_timeout)
            try:
                yield client
            finally:
                client._reader.cancel()
                with contextlib.suppress(BaseException):
                    await client._reader

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    item: dict[str, Any] | AudioFrame = AudioFrame(self._audio_turn, message, time.perf_counter())
                else:
                    item = json.loads(message)
                    item["_received_at"] = time.perf_counter()
                    if item.get("type") == "response.audio.started":
                        self._audio_turn = item.get("turn_id")
                await self._events.put(item)
        except websockets.ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self._events.put_nowait(None)

    # --- sending -----------------------------------------------------------------------------------------------

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_audio(self, data: bytes) -> float:
        await self.ws.send(data)
        now = time.perf_counter()
        self.sent_audio_ms += self.input_format.ms_for_bytes(len(data))
        self.send_times.append((self.sent_audio_ms, now))
        return now

    async def stream_audio(self, audio: bytes, *, frame_ms: int = 20, realtime: bool = True) -> None:
        """Send audio in frames, paced in real time (or as fast as possible)."""
        frame = self.input_format.bytes_for_ms(frame_ms)
        start = time.perf_counter()
        sent_ms = 0.0
        for offset in range(0, len(audio), frame):
            if realtime:
                delay = start + sent_ms / 1000 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_audio(audio[offset:offset + frame])
            sent_ms += frame_ms

    def sent_at(self, stream_ms: float) -> float | None:
        """Wall-clock time at which the frame containing ``stream_ms`` was sent."""
        for end_ms, at in self.send_times:
            if end_ms >= stream_ms:
                return at
        return None

    async def send_text(self, text: str) -> None:
        await self.send_json({"type": "input.text", "text": text})

    async def commit(self) -> None:
        await self.send_json({"type": "input.commit"})

    async def cancel(self) -> None:
        await self.send_json({"type": "response.cancel"})

    async def played(self, turn_id: str, played_ms: int) -> None:
        await self.send_json({"type": "response.played", "turn_id": turn_id, "played_ms": played_ms})

    async def end(self) -> None:
        await self.send_json({"type": "session.end"})

    # --- receiving ---------------------------------------------------------------------------------------------

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any] | AudioFrame:
        item = await asyncio.wait_for(self._events.get(), timeout)
        if item is None:
            self._events.put_nowait(None)
            raise VoiceClientError("connection closed")
        return item

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """Skip events until one of type ``kind`` arrives (an error event raises)."""
        deadline = time.perf_counter() + timeout
        while True:
            item = await self.next_event(max(deadline - time.perf_counter(), 0.001))
            if isinstance(item, AudioFrame):
                continue
            if item.get("type") == kind:
                return item
            if item.get("type") == "error" and kind != "error":
                raise VoiceClientError(f"{item.get('code')}: {item.get('message')}")

    async def collect_turn(self, timeout: float = 60.0, *, until: tuple[str, ...] = ("metrics",)) -> TurnResult:
        """Gather one turn's events until its metrics (or response.done when interrupted, or an empty transcript)."""
        result = TurnResult(audio_format=self.output_format)
        deadline = time.perf_counter() + timeout
        while True:
            item = await self.next_event(max(deadline - time.perf_counter(), 0.001))
            if isinstance(item, AudioFrame):
                if result.first_audio_at is None:
                    result.first_audio_at = item.received_at
                result.audio += item.data
                continue
            result.events.append(item)
            kind = item.get("type")
            if item.get("turn_id") and result.turn_id is None and kind != "error":
                result.turn_id = item["turn_id"]
            if kind == "speech.stopped":
                result.speech_stopped_at = item["_received_at"]
            elif kind == "transcript":
                result.transcript = item.get("text")
                if not (item.get("text") or "").strip():
                    return result
            elif kind == "response.text.delta":
                result.reply_text += item.get("delta", "")
            elif kind == "response.audio.started":
                result.audio_format = AudioFormat(item.get("encoding", "pcm16"), item.get("sample_rate", 16000))
            elif kind == "response.done":
                result.reply_text = item.get("text", result.reply_text)
                result.interrupted = bool(item.get("interrupted"))
                result.done_at = item["_received_at"]
                if result.interrupted or "response.done" in until:
                    return result
            elif kind == "response.cancelled":
                result.heard_text = item.get("heard_text")
            elif kind == "metrics":
                result.metrics = {k: v for k, v in item.items() if k not in ("type", "_received_at")}
                if "metrics" in until:
                    return result
            elif kind == "error":
                result.errors.append(item)
                # Once a response started, the server ends it (an apology, response.done, metrics) even after an
                # error: keep reading so those events do not spill into the next turn.
                responding = any(e.get("type") == "response.started" for e in result.events)
                if not responding and (item.get("turn_id") or item.get("code") in ("stt_failed", "llm_failed",
                                                                                     "turn_timeout")):
                    return result

    async def ask_text(self, text: str, timeout: float = 60.0) -> TurnResult:
        await self.send_text(text)
        return await self.collect_turn(timeout)

    async def ask_audio(self, audio: bytes, *, realtime: bool = True, timeout: float = 60.0,
                        trailing_silence_ms: int = 1000) -> TurnResult:
        """Stream an utterance (plus trailing silence so the server's VAD ends it) and collect the reply."""
        silence = b"\x00" * self.input_format.bytes_for_ms(trailing_silence_ms)
        if self.input_format.encoding == "mulaw":
            silence = b"\xff" * len(silence)
        sender = asyncio.create_task(self.stream_audio(audio + silence, realtime=realtime))
        try:
            return await self.collect_turn(timeout)
        finally:
            if not sender.done():
                await sender


def __getattr__(name: str) -> Any:
    """The kiosk's conversation from here too (imported on first use: the kiosk package imports this module)."""
    if name in ("Conversation", "Backoff", "ConversationError"):
        from . import kiosk

        return getattr(kiosk, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def talk_main(args: Any) -> int:
    """`voiceserver talk`: one turn from a WAV file or text (prints transcript, reply and metrics, saves the audio),
    or a continuous conversation (--mic, --pipe, --file with --conversation; see voiceserver.kiosk)."""
    import sys

    if getattr(args, "mic", False) or getattr(args, "pipe", False) or getattr(args, "list_devices", False) \
            or getattr(args, "conversation", False):
        from .kiosk.cli import run_kiosk

        return await run_kiosk(args)
    if not (args.file or args.text):
        print("voiceserver talk: give --file, --text, --mic or --pipe (or --list-devices)", file=sys.stderr)
        return 2

    from .audio import Resampler, read_wav, write_wav
    from .audio.format import AudioChunk

    try:
        async with VoiceClient.connect(args.url, resource=args.resource, thread=args.thread, agent=args.agent,
                                       api_key=args.api_key) as client:
            if args.file:
                chunk = read_wav(args.file)
                pcm = chunk.audio
                if chunk.sample_rate != 16000:
                    resampler = Resampler(chunk.sample_rate, 16000)
                    pcm = resampler.process(pcm) + resampler.flush()
                turn = await client.ask_audio(pcm, realtime=args.realtime, timeout=args.timeout)
                print(f"you said: {turn.transcript}")
            else:
                turn = await client.ask_text(args.text, timeout=args.timeout)
    except (OSError, websockets.InvalidURI, websockets.InvalidHandshake, VoiceClientError, TimeoutError) as exc:
        print(f"voiceserver talk: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for error in turn.errors:
        print(f"error: {error.get('code')}: {error.get('message')}", file=sys.stderr)
    print(f"reply: {turn.reply_text}")
    if turn.metrics:
        print("metrics: " + json.dumps({k: v for k, v in turn.metrics.items() if k != "turn_id"}))
    if args.out:
        fmt = turn.audio_format
        write_wav(args.out, AudioChunk(turn.audio, fmt.sample_rate, fmt.encoding))
        print(f"saved {fmt.ms_for_bytes(len(turn.audio)) / 1000:.2f} s of reply audio to {args.out}")
    return 0 if turn.reply_text and not turn.errors else 1
