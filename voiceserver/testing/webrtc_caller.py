"""A WebRTC caller (aiortc) for tests and benchmarks: a real peer connection to ``POST /v1/webrtc/offer``.

    async with WebRtcCaller.connect(server.http_url, resource="user-1") as caller:
        caller.say(speech_16k)                        # the microphone track plays it in real time, then silence
        transcript = await caller.wait_for("transcript")
        await caller.wait_for("response.done")
        print(caller.reply_audio_ms())                # audible reply audio received on the track

The microphone is an aiortc track paced in real time (20 ms frames, 48 kHz, silence when nothing is queued), so
the server sees what a browser sends. Events arrive on the ``events`` data channel as dicts with ``_received_at``;
reply audio frames are kept with their arrival time and level. Needs the ``webrtc`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio import Resampler, rms_dbfs
from ..gateway.webrtc_audio import MicConverter

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
AUDIBLE_DBFS = -50.0


class WebRtcCallerError(Exception):
    pass


class MicrophoneTrack(MediaStreamTrack):
    """Plays queued 16 kHz pcm16 in real time as 20 ms 48 kHz frames; silence when nothing is queued."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._resampler = Resampler(16000, RATE)
        self._start: float | None = None
        self._pts = 0
        self.sent_samples = 0  # of queued speech, at 48 kHz
        self.send_times: deque[tuple[float, float]] = deque(maxlen=20000)  # (speech ms at the end of a frame, time)

    def say(self, pcm16_16k: bytes) -> None:
        self._pending += self._resampler.process(pcm16_16k) + self._resampler.flush()

    @property
    def speaking(self) -> bool:
        return bool(self._pending)

    def sent_at(self, speech_ms: float) -> float | None:
        """When the frame holding ``speech_ms`` of the queued speech left this track."""
        for end_ms, at in self.send_times:
            if end_ms >= speech_ms:
                return at
        return None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._pts / RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = bytes(self._pending[:FRAME_SAMPLES * 2])
        del self._pending[:FRAME_SAMPLES * 2]
        if chunk:
            self.sent_samples += len(chunk) // 2
            self.send_times.append((self.sent_samples / RATE * 1000, time.perf_counter()))
        chunk += bytes(FRAME_SAMPLES * 2 - len(chunk))
        frame = av.AudioFrame.from_ndarray(np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


@dataclass(slots=True)
class ReceivedFrame:
    received_at: float
    dbfs: float
    pcm16_16k: bytes

    @property
    def audible(self) -> bool:
        return self.dbfs > AUDIBLE_DBFS


class WebRtcCaller:
    """A connected WebRTC session (see the module notes)."""

    def __init__(self, pc: RTCPeerConnection, mic: MicrophoneTrack, channel: Any):
        self.pc = pc
        self.mic = mic
        self.channel = channel
        self.session: dict[str, Any] = {}
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []
        self.frames: deque[ReceivedFrame] = deque(maxlen=30000)  # 10 minutes of 20 ms frames
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=10000)
        self._tasks: set[asyncio.Task] = set()
        self.channel_open = asyncio.Event()
        channel.on("open", self.channel_open.set)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._queue.put_nowait(None))
        pc.on("track", self._on_track)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, http_url: str, *, resource: str | None = None, thread: str | None = None,
                      agent: str | None = None, vad: dict[str, int] | None = None, api_key: str | None = None,
                      token: str | None = None, timeout: float = 20.0) -> AsyncIterator[WebRtcCaller]:
        """Offer, get the answer, wait for the channel and ``session.started``."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        mic = MicrophoneTrack()
        pc.addTrack(mic)
        caller = cls(pc, mic, pc.createDataChannel("events"))
        try:
            await pc.setLocalDescription(await pc.createOffer())
            body: dict[str, Any] = {"sdp": pc.localDescription.sdp, "type": "offer"}
            for key, value in (("resource", resource), ("thread", thread), ("agent", agent), ("vad", vad),
                               ("token", token)):
                if value is not None:
                    body[key] = value
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            async with httpx.AsyncClient(timeout=timeout) as http:
                response = await http.post(f"{http_url}/v1/webrtc/offer", json=body, headers=headers)
            if response.status_code != 200:
                raise WebRtcCallerError(f"offer refused: {response.status_code} {response.text}")
            answer = response.json()
            caller.session_id = answer["session_id"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            caller.session = await caller.wait_for("session.started", timeout=timeout)
            yield caller
        finally:
            await caller.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.pc.close()

    # --- sending ----------------------------------------------------------------------------------------------------

    def say(self, pcm16_16k: bytes) -> None:
        """Queue speech (16 kHz pcm16) on the microphone track; it plays in real time after what is queued."""
        self.mic.say(pcm16_16k)

    async def send_json(self, message: dict[str, Any]) -> None:
        await asyncio.wait_for(self.channel_open.wait(), 20)
        self.channel.send(json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.send_json({"type": "input.text", "text": text})

    # --- receiving --------------------------------------------------------------------------------------------------

    def _on_message(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            return
        event = json.loads(data)
        event["_received_at"] = time.perf_counter()
        self.events.append(event)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(event)

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.create_task(self._read_track(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_track(self, track: MediaStreamTrack) -> None:
        converter = MicConverter(16000)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = converter.convert(frame.to_ndarray(), channels=len(frame.layout.channels),
                                    sample_rate=frame.sample_rate, planar=frame.format.is_planar)
            self.frames.append(ReceivedFrame(time.perf_counter(), rms_dbfs(pcm), pcm))

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if item is None:
            self._queue.put_nowait(None)
            raise WebRtcCallerError("the events channel closed")
        return item

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """Skip events until one of type ``kind`` (an error event raises, unless ``kind`` is "error")."""
        deadline = time.perf_counter() + timeout
        while True:
            event = await self.next_event(max(deadline - time.perf_counter(), 0.001))
            if event.get("type") == kind:
                return event
            if event.get("type") == "error" and kind != "error":
                raise WebRtcCallerError(f"{event.get('code')}: {event.get('message')}")

    async def settle(self, quiet_s: float = 0.5, timeout: float = 10.0, since: float | None = None) -> None:
        """Wait until no audible reply frame arrived for ``quiet_s`` (the tail of a reply is still on its way when
        ``response.done`` arrives: audio is paced in real time). With ``since`` (perf_counter time), first wait
        for an audible frame received after it: ``response.done`` can come before the reply's first frame has
        crossed the jitter buffer, and "quiet" then only means "not started yet"."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            last = next((f.received_at for f in reversed(self.frames) if f.audible), 0.0)
            if (since is None or last >= since) and time.perf_counter() - last >= quiet_s:
                return
            await asyncio.sleep(0.05)

    def audible_frames(self, since: float = 0.0) -> list[ReceivedFrame]:
        """Reply frames above -50 dBFS received after ``since`` (perf_counter time)."""
        return [f for f in list(self.frames) if f.received_at >= since and f.audible]

    def reply_audio_ms(self, since: float = 0.0) -> float:
        return 20.0 * len(self.audible_frames(since))
