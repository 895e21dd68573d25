"""Microphone and speaker through PortAudio (``sounddevice``, in the ``kiosk`` extra), as one duplex stream.

One callback every 20 ms takes the next reply frame for the speaker, gives that same frame to the echo canceller as
its reference, and filters the microphone frame with it, so reference and echo stay aligned to the block. The
callback runs on PortAudio's thread: it only moves bytes and hands the microphone frame to the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from .audio_io import FRAME_BYTES, FRAME_MS, RATE, SILENT_FRAME
from .echo import EchoCanceller

INSTALL_HINT = ("the microphone and speaker need PortAudio through sounddevice: pip install 'voiceserver[kiosk]' "
                "(and the PortAudio library, e.g. apt-get install libportaudio2)")


class AudioDeviceUnavailable(RuntimeError):
    """sounddevice or PortAudio is missing, or the device cannot be opened."""


def import_sounddevice() -> Any:
    """The sounddevice module, or AudioDeviceUnavailable naming the extra to install."""
    try:
        import sounddevice
    except ImportError as exc:
        raise AudioDeviceUnavailable(INSTALL_HINT) from exc
    except OSError as exc:  # sounddevice is installed, the PortAudio library is not
        raise AudioDeviceUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    return sounddevice


def list_devices() -> str:
    """PortAudio's devices, as sounddevice prints them (> default input, < default output)."""
    return str(import_sounddevice().query_devices())


def _device(value: str | None) -> int | str | None:
    if value is None or value == "":
        return None
    return int(value) if value.isdigit() else value


class SoundDeviceAudio:
    """The microphone (an :class:`AudioSource`, live) and the speaker (an :class:`AudioSink`) in one object."""

    live = True

    def __init__(self, *, input_device: str | None = None, output_device: str | None = None,
                 canceller: EchoCanceller | None = None, latency: str | float = "low",
                 max_queue_ms: float = 120_000, max_mic_frames: int = 50):
        self.sd = import_sounddevice()
        self.devices = (_device(input_device), _device(output_device))
        self.canceller = canceller
        self.latency = latency
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        self._partial = b""
        self._played_frames = 0
        self._played_audio: deque[bytes] = deque(maxlen=50)
        self._max_frames = int(max_queue_ms // FRAME_MS)
        self._mic: asyncio.Queue[bytes] = asyncio.Queue(maxsize=max_mic_frames)
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.overflows = 0
        self.paused = False

    # --- sink -----------------------------------------------------------------------------------------------------

    @property
    def played_ms(self) -> float:
        return self._played_frames * FRAME_MS

    @property
    def queued_ms(self) -> float:
        return len(self._queue) * FRAME_MS

    def play(self, pcm: bytes) -> None:
        data = self._partial + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        with self._lock:
            for offset in range(0, whole, FRAME_BYTES):
                if len(self._queue) >= self._max_frames:
                    self._queue.popleft()
                self._queue.append(data[offset:offset + FRAME_BYTES])
        self._partial = data[whole:]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.paused = False
        self._partial = b""

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def take_played(self) -> bytes:
        with self._lock:
            played = b"".join(self._played_audio)
            self._played_audio.clear()
        return played

    # --- source ---------------------------------------------------------------------------------------------------

    async def read(self) -> bytes | None:
        if self._stream is None:
            await self.start()
        return await self._mic.get()

    # --- the device -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._stream is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            self._stream = self.sd.RawStream(samplerate=RATE, blocksize=FRAME_BYTES // 2, channels=1, dtype="int16",
                                             device=self.devices, latency=self.latency, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise AudioDeviceUnavailable(f"cannot open the audio device {self.devices}: {exc}") from exc
        if self.canceller is not None:
            latency = self._stream.latency  # (input, output) seconds: the echo's delay behind its reference
            self.canceller.set_delay_ms(int((latency[0] + latency[1]) * 1000))

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def _callback(self, indata: Any, outdata: Any, frames: int, time: Any, status: Any) -> None:
        with self._lock:
            frame = self._queue.popleft() if self._queue and not self.paused else None
            if frame is not None:
                self._played_frames += 1
        out = frame or SILENT_FRAME
        outdata[:] = out[:len(outdata)].ljust(len(outdata), b"\x00")
        mic = bytes(indata)
        if self.canceller is not None:
            self.canceller.far(out)
            mic = self.canceller.near(mic)
        with self._lock:
            self._played_audio.append(out)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._push_mic, mic)

    def _push_mic(self, frame: bytes) -> None:
        if self._mic.full():  # nobody reads (the server is away): keep the newest audio
            self._mic.get_nowait()
            self.overflows += 1
        self._mic.put_nowait(frame)
