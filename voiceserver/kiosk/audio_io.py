"""The kiosk's audio, behind two small interfaces, so the conversation runs the same on a microphone and speaker,
on WAV files, or on a pipe of raw pcm16 (boards that bring their own audio).

Everything is 16 kHz pcm16 mono in 20 ms frames (:data:`FRAME_BYTES`); sources and sinks at other rates resample.

- :class:`AudioSource`: ``await read()`` gives the next frame, None at the end. ``live`` says whether the audio
  happens in real time whether or not anyone reads it (a microphone, a pipe: while the server is away, its frames
  are read and dropped) or is a recording (a file: paused while the server is away, so no words are lost).
- :class:`AudioSink`: ``play()`` queues reply audio, ``clear()`` drops what has not been played (barge-in),
  ``pause()`` / ``resume()`` hold it (a possible interruption), ``played_ms`` counts what really came out,
  ``take_played()`` hands the played audio to an echo canceller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO, Protocol

from ..audio import Resampler, read_wav, wav_header

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2  # 640
SILENT_FRAME = b"\x00" * FRAME_BYTES


class AudioSource(Protocol):
    live: bool

    async def read(self) -> bytes | None:
        """The next 20 ms frame (16 kHz pcm16 mono), None when the source has ended."""

    async def close(self) -> None: ...


class AudioSink(Protocol):
    @property
    def played_ms(self) -> float:
        """Milliseconds of queued audio that have been played, since the sink started."""

    @property
    def queued_ms(self) -> float:
        """Milliseconds queued and not played yet."""

    def play(self, pcm: bytes) -> None:
        """Queue 16 kHz pcm16 for playback (never blocks)."""

    def clear(self) -> None:
        """Drop everything not played yet (and end a pause)."""

    @property
    def paused(self) -> bool: ...

    def pause(self) -> None:
        """Stop playing for a moment, keeping the queue (the server paused the reply)."""

    def resume(self) -> None: ...

    def take_played(self) -> bytes:
        """The audio played since the last call, silence included (the echo reference)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Framer:
    """pcm16 at any rate -> 20 ms frames at 16 kHz."""

    def __init__(self, rate: int):
        self._resampler = Resampler(rate, RATE) if rate != RATE else None
        self._pending = bytearray()

    def feed(self, pcm: bytes, *, end: bool = False) -> list[bytes]:
        if self._resampler is not None:
            pcm = self._resampler.process(pcm) + (self._resampler.flush() if end else b"")
        self._pending += pcm
        frames = []
        while len(self._pending) >= FRAME_BYTES:
            frames.append(bytes(self._pending[:FRAME_BYTES]))
            del self._pending[:FRAME_BYTES]
        if end and self._pending:
            frames.append(bytes(self._pending).ljust(FRAME_BYTES, b"\x00"))
            self._pending.clear()
        return frames


# --- sources ------------------------------------------------------------------------------------------------------


class WavFileSource:
    """A WAV file (a path, or its bytes; any rate, mono or stereo) read in real time, 20 ms a frame; a recording,
    so ``live`` is False."""

    live = False

    def __init__(self, path: str | os.PathLike[str] | bytes, *, realtime: bool = True, trailing_silence_ms: int = 0):
        chunk = read_wav(path)
        frames = _Framer(chunk.sample_rate).feed(chunk.audio, end=True)
        frames += [SILENT_FRAME] * (trailing_silence_ms // FRAME_MS)
        self._frames = deque(frames)
        self.duration_ms = len(frames) * FRAME_MS
        self.realtime = realtime
        self._next_at: float | None = None

    async def read(self) -> bytes | None:
        if not self._frames:
            return None
        if self.realtime:
            now = time.monotonic()
            # A pause (nobody read while the server was away) is not caught up: the recording just resumes.
            self._next_at = now if self._next_at is None or self._next_at < now - 0.1 else self._next_at
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
            self._next_at += FRAME_MS / 1000
        return self._frames.popleft()

    async def close(self) -> None:
        self._frames.clear()


class PipeSource:
    """Raw pcm16 mono at ``rate`` from a binary stream (stdin); live. A daemon thread does the blocking reads on
    the raw descriptor (no buffer lock), so neither the loop nor the program's exit ever waits on a quiet pipe."""

    live = True

    def __init__(self, stream: BinaryIO, *, rate: int = RATE, max_chunks: int = 100):
        self.fd = stream.fileno()
        self.rate = rate
        self._framer = _Framer(rate)
        self._ready: deque[bytes] = deque()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=max_chunks)
        self._thread: threading.Thread | None = None
        self._ended = False

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        want = self.rate * FRAME_MS // 1000 * 2

        def pump() -> None:
            while True:
                try:
                    data = os.read(self.fd, want)
                except OSError:
                    data = b""
                loop.call_soon_threadsafe(self._arrived, data)
                if not data:
                    return

        self._thread = threading.Thread(target=pump, name="kiosk-pipe-in", daemon=True)
        self._thread.start()

    def _arrived(self, data: bytes) -> None:
        if self._chunks.full():  # nobody reads: keep the newest audio
            self._chunks.get_nowait()
        self._chunks.put_nowait(data)

    async def read(self) -> bytes | None:
        if self._thread is None:
            self._start()
        while not self._ready and not self._ended:
            data = await self._chunks.get()
            self._ended = not data
            self._ready.extend(self._framer.feed(data, end=self._ended))
        return self._ready.popleft() if self._ready else None

    async def close(self) -> None:
        self._ended = True


# --- sinks --------------------------------------------------------------------------------------------------------


class PacedSink:
    """A sink that plays in real time by its own clock: every 20 ms one frame leaves (silence when nothing is
    queued), handed to :meth:`emit`. Subclasses write the frames somewhere (a file, a pipe)."""

    def __init__(self, *, max_queue_ms: float = 120_000):
        self._queue: deque[bytes] = deque()
        self._partial = b""
        self._played_frames = 0
        self._played_audio: list[bytes] = []
        self._max_frames = int(max_queue_ms // FRAME_MS)
        self._task: asyncio.Task | None = None
        self.paused = False

    @property
    def played_ms(self) -> float:
        return self._played_frames * FRAME_MS

    @property
    def queued_ms(self) -> float:
        return len(self._queue) * FRAME_MS

    def play(self, pcm: bytes) -> None:
        data = self._partial + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        for offset in range(0, whole, FRAME_BYTES):
            if len(self._queue) >= self._max_frames:
                self._queue.popleft()  # bounded: a sink that cannot keep up loses the oldest audio
            self._queue.append(data[offset:offset + FRAME_BYTES])
        self._partial = data[whole:]

    def clear(self) -> None:
        self._queue.clear()
        self._partial = b""
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def take_played(self) -> bytes:
        played, self._played_audio = b"".join(self._played_audio), []
        return played

    def emit(self, frame: bytes, *, reply: bool) -> None:
        """Write one frame out (``reply``: it is reply audio, not filler silence)."""

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kiosk-sink")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + FRAME_MS / 1000, loop.time() - 0.1)
            if self._queue and not self.paused:
                frame = self._queue.popleft()
                self._played_frames += 1
                self.emit(frame, reply=True)
            else:
                frame = SILENT_FRAME
                self.emit(frame, reply=False)
            self._played_audio.append(frame)
            if len(self._played_audio) > 50:  # nobody takes the echo reference: keep one second
                del self._played_audio[:-50]


class WavFileSink(PacedSink):
    """Writes what the kiosk plays, in real time (silence between replies), to a 16 kHz WAV file; the header's
    sizes are written when the sink closes."""

    def __init__(self, path: str | os.PathLike[str], **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path)
        self._file = self.path.open("wb")
        self._file.write(wav_header(RATE))
        self._bytes = 0
        self.reply_ms = 0.0

    def emit(self, frame: bytes, *, reply: bool) -> None:
        self._file.write(frame)
        self._bytes += len(frame)
        if reply:
            self.reply_ms += FRAME_MS

    async def close(self) -> None:
        await super().close()
        if not self._file.closed:
            self._file.seek(4)
            self._file.write(struct.pack("<I", self._bytes + 36))
            self._file.seek(40)
            self._file.write(struct.pack("<I", self._bytes))
            self._file.close()


class PipeSink(PacedSink):
    """Raw 16 kHz pcm16 mono to a binary stream (stdout) in real time, silence between replies. A daemon thread
    does the blocking writes; a consumer that stops reading loses audio beyond ``max_backlog_ms``."""

    def __init__(self, stream: BinaryIO, *, max_backlog_ms: float = 2000, **kwargs):
        super().__init__(**kwargs)
        self.fd = stream.fileno()
        self._out: queue.Queue[bytes | None] = queue.Queue(maxsize=max(1, int(max_backlog_ms // FRAME_MS)))
        self._writer = threading.Thread(target=self._write, name="kiosk-pipe-out", daemon=True)
        self._writer.start()
        self.dropped = 0

    def _write(self) -> None:
        while (frame := self._out.get()) is not None:
            view = memoryview(frame)
            try:
                while view:  # the raw descriptor: no buffer lock to hold at the program's exit
                    view = view[os.write(self.fd, view):]
            except OSError:
                return  # the consumer went away; the conversation goes on without sound

    def emit(self, frame: bytes, *, reply: bool) -> None:
        try:
            self._out.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(queue.Full):
            self._out.put_nowait(None)
