"""Streaming encoders for the speech formats OpenAI's ``/v1/audio/speech`` offers: pcm, wav and mp3 come from
containers.py (:class:`ContainerEncoder`), opus (in Ogg), aac (ADTS frames) and flac are muxed here with PyAV into an
in-memory sink that is drained after every piece, so each encoded piece can be sent as soon as it exists.

- opus: libopus in 20 ms frames, Ogg pages of at most 100 ms (the muxer would otherwise hold a second of audio);
- aac: AAC-LC frames of 1024 samples, each ADTS frame self-contained;
- flac: FLAC frames as they are encoded; the stream header's total length stays "unknown" (the sink cannot seek),
  which FLAC decoders accept.

Pure CPU work on bytes, no files: callers off the event loop run it in a thread.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from .containers import ContainerEncoder

SPEECH_FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                        "wav": "audio/wav", "pcm": "audio/pcm"}
_MUXED = {"opus": ("ogg", "libopus", 480), "aac": ("adts", "aac", 1024), "flac": ("flac", "flac", 4608)}


class _Sink:
    """A write-only file for PyAV's muxer: what it writes is taken after each call."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


class MuxedEncoder:
    """Streaming encoder of mono pcm16 into opus (Ogg), aac (ADTS) or flac; ``encode`` returns what is ready."""

    def __init__(self, filetype: str, sample_rate: int):
        if filetype not in _MUXED:
            raise ValueError(f"unknown filetype {filetype!r}; allowed: {', '.join(_MUXED)}")
        container_format, codec, frame_ms_samples = _MUXED[filetype]
        self.filetype = filetype
        self.sample_rate = sample_rate
        self._sink = _Sink()
        options = {"page_duration": "100000"} if container_format == "ogg" else {}
        self._container = av.open(self._sink, "w", format=container_format, options=options,
                                  container_options={"flush_packets": "1"})
        self._stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        self._sample_fmt = self._stream.codec.audio_formats[0].name
        # opus takes 20 ms frames (480 samples at 24 kHz), AAC exactly 1024 samples, FLAC any block size.
        self._frame = frame_ms_samples * sample_rate // 24000 if filetype == "opus" else frame_ms_samples
        self._pending = np.zeros(0, dtype=np.int16)
        self._odd = b""
        self._pts = 0
        self._finished = False

    def encode(self, pcm16: bytes) -> bytes:
        if self._finished:
            raise ValueError("encoder already finished")
        data = self._odd + pcm16 if self._odd else pcm16
        if len(data) % 2:
            self._odd, data = data[-1:], data[:-1]
        else:
            self._odd = b""
        if data:
            self._pending = np.concatenate((self._pending, np.frombuffer(data, dtype="<i2")))
        whole = self._pending.size // self._frame * self._frame
        for start in range(0, whole, self._frame):
            self._mux(self._pending[start:start + self._frame])
        self._pending = self._pending[whole:]
        return self._sink.take()

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("encoder already finished")
        self._finished = True
        if self._pending.size:
            self._mux(self._pending)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()

    def _mux(self, samples: np.ndarray) -> None:
        if self._sample_fmt in ("flt", "fltp"):
            array = (samples.astype(np.float32) / 32768.0).reshape(1, -1)
        else:
            array = samples.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(array, format=self._sample_fmt, layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.sample_rate)
        self._pts += samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)


def speech_encoder(response_format: str, sample_rate: int) -> ContainerEncoder | MuxedEncoder:
    """The streaming encoder of one ``/v1/audio/speech`` response format."""
    if response_format in _MUXED:
        return MuxedEncoder(response_format, sample_rate)
    if response_format in ("mp3", "wav", "pcm"):
        return ContainerEncoder(response_format, sample_rate)
    raise ValueError(f"unknown response_format {response_format!r}; allowed: {', '.join(SPEECH_FORMATS)}")
