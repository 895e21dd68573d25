"""Encoding pcm16 into the file types a caller can ask for (pcm, wav, mp3, m4a) and decoding any container back, in
memory with PyAV.

Streaming behaviour of :class:`ContainerEncoder` per file type:

- ``pcm``: the samples themselves, passed through.
- ``wav``: a header with the unknown length (0xFFFFFFFF, as streamed WAV does) first, then the samples.
- ``mp3``: MPEG audio frames straight from the libmp3lame encoder, no ID3/Xing header, so every chunk can be sent
  as soon as it is encoded (an MP3 stream is a plain sequence of frames). The encoder holds back up to about one
  frame (1152 samples) plus its look-ahead until ``finish``.
- ``m4a``: AAC in an MP4 container. MP4 needs its index (moov) written with the final sizes, so nothing can be
  sent before the end: ``encode`` buffers the pcm (up to ``MAX_M4A_SECONDS``) and returns b"", ``finish``
  encodes and returns the whole file.

MP3 and AAC support a fixed set of sample rates; other input rates are resampled to the nearest supported rate at
or above them (capped at 48 kHz).
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from .format import AudioChunk
from .resample import Resampler
from .wav import wav_bytes, wav_header

FILETYPES: tuple[str, ...] = ("pcm", "wav", "mp3", "m4a")
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_BITRATE = 64_000
AAC_BITRATE = 64_000
AAC_FRAME_SIZE = 1024  # samples per AAC-LC frame
# Refuse to decode more than this many seconds of audio from one blob (a decompression bomb guard).
MAX_DECODE_SECONDS = 3600
# m4a is buffered until finish(); refuse to buffer more than this (about 55 MB of pcm16 at 48 kHz).
MAX_M4A_SECONDS = 600


def check_filetype(filetype: str) -> str:
    """Return the normalised file type or raise ValueError naming the allowed ones."""
    name = filetype.lower() if isinstance(filetype, str) else filetype
    if name not in FILETYPES:
        raise ValueError(f"unknown filetype {filetype!r}; allowed: {', '.join(FILETYPES)}")
    return name


def _codec_rate(rate: int, supported: tuple[int, ...]) -> int:
    return next((r for r in supported if r >= rate), supported[-1])


class _FrameEncoder:
    """Feeds pcm16 to an audio codec context in the codec's fixed frame size (the last frame may be short)."""

    def __init__(self, ctx: av.AudioCodecContext, frame_size: int):
        self.ctx = ctx
        self.sample_fmt = ctx.format.name
        self.frame_size = frame_size
        self._pending = np.zeros(0, dtype=np.int16)
        self._pts = 0

    @classmethod
    def create(cls, codec: str, sample_rate: int, sample_fmt: str, bit_rate: int) -> _FrameEncoder:
        ctx = av.CodecContext.create(codec, "w")
        ctx.sample_rate = sample_rate
        ctx.format = sample_fmt
        ctx.layout = "mono"
        ctx.bit_rate = bit_rate
        ctx.time_base = Fraction(1, sample_rate)
        ctx.open()
        return cls(ctx, ctx.frame_size or 1152)

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        if self.sample_fmt == "fltp":
            array = (samples.astype(np.float32) / 32768.0).reshape(1, -1)
        else:
            array = samples.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(array, format=self.sample_fmt, layout="mono")
        frame.sample_rate = self.ctx.sample_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.ctx.sample_rate)
        self._pts += samples.size
        return frame

    def encode(self, pcm16: bytes) -> list[av.Packet]:
        if pcm16:
            self._pending = np.concatenate((self._pending, np.frombuffer(pcm16, dtype="<i2")))
        packets: list[av.Packet] = []
        n = self._pending.size // self.frame_size * self.frame_size
        for start in range(0, n, self.frame_size):
            packets.extend(self.ctx.encode(self._frame(self._pending[start : start + self.frame_size])))
        self._pending = self._pending[n:]
        return packets

    def finish(self) -> list[av.Packet]:
        packets: list[av.Packet] = []
        if self._pending.size:
            packets.extend(self.ctx.encode(self._frame(self._pending)))
            self._pending = np.zeros(0, dtype=np.int16)
        packets.extend(self.ctx.encode(None))
        return packets


class ContainerEncoder:
    """Streaming encoder of mono pcm16 into ``filetype`` (pcm, wav, mp3 or m4a); see the module docstring.

    ``encode`` returns the bytes ready to send (possibly b""); ``finish`` returns the rest and must be called once
    at the end. Odd trailing bytes of input are carried to the next call.
    """

    def __init__(self, filetype: str, sample_rate: int):
        self.filetype = check_filetype(filetype)
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self._odd = b""
        self._finished = False
        self._header_sent = False
        self._resampler: Resampler | None = None
        self._mp3: _FrameEncoder | None = None
        self._m4a_buffer: list[bytes] = []
        self._m4a_bytes = 0
        self.output_rate = sample_rate
        if self.filetype in ("mp3", "m4a"):
            self.output_rate = _codec_rate(sample_rate, MP3_RATES if self.filetype == "mp3" else AAC_RATES)
            if self.output_rate != sample_rate:
                self._resampler = Resampler(sample_rate, self.output_rate)
        if self.filetype == "mp3":
            self._mp3 = _FrameEncoder.create("libmp3lame", self.output_rate, "s16p", MP3_BITRATE)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.filetype]

    def encode(self, pcm16: bytes) -> bytes:
        """Encode the next piece of audio; returns what can be sent now."""
        if self._finished:
            raise ValueError("encoder already finished")
        data = self._odd + pcm16 if self._odd else pcm16
        if len(data) % 2:
            self._odd, data = data[-1:], data[:-1]
        else:
            self._odd = b""
        if self._resampler is not None:
            data = self._resampler.process(data)
        return self._encode(data)

    def finish(self) -> bytes:
        """Flush everything; the encoder cannot be used afterwards."""
        if self._finished:
            raise ValueError("encoder already finished")
        tail = self._resampler.flush() if self._resampler is not None else b""
        out = self._encode(tail) if tail else b""
        self._finished = True
        if self.filetype == "wav" and not self._header_sent:
            self._header_sent = True
            return wav_header(self.sample_rate)
        if self._mp3 is not None:
            out += b"".join(bytes(p) for p in self._mp3.finish())
        elif self.filetype == "m4a":
            out = _mux_m4a(b"".join(self._m4a_buffer), self.output_rate)
            self._m4a_buffer.clear()
        return out

    def _encode(self, data: bytes) -> bytes:
        if self.filetype == "pcm":
            return bytes(data)
        if self.filetype == "wav":
            if not self._header_sent:
                self._header_sent = True
                return wav_header(self.sample_rate) + data
            return bytes(data)
        if self._mp3 is not None:
            return b"".join(bytes(p) for p in self._mp3.encode(data))
        self._m4a_bytes += len(data)
        if self._m4a_bytes > MAX_M4A_SECONDS * self.output_rate * 2:
            raise ValueError(f"m4a output is buffered until the end and is limited to {MAX_M4A_SECONDS} s")
        self._m4a_buffer.append(bytes(data))
        return b""


CONTENT_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", "mp3": "audio/mpeg", "m4a": "audio/mp4"}


def _mux_m4a(pcm16: bytes, sample_rate: int) -> bytes:
    out = io.BytesIO()
    # No "+faststart": moving the index to the front needs FFmpeg to reopen the output by name, which an in-memory
    # buffer does not have. Players read the index from the end of a complete file.
    with av.open(out, "w", format="ipod") as container:  # the mp4 muxer with the M4A brand
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        stream.bit_rate = AAC_BITRATE
        stream.codec_context.format = "fltp"
        encoder = _FrameEncoder(stream.codec_context, AAC_FRAME_SIZE)
        for packet in encoder.encode(pcm16) + encoder.finish():
            packet.stream = stream
            container.mux(packet)
    return out.getvalue()


def encode_audio(pcm16: bytes, sample_rate: int, filetype: str) -> bytes:
    """One-shot: encode mono pcm16 at ``sample_rate`` as ``filetype`` (pcm, wav, mp3 or m4a)."""
    name = check_filetype(filetype)
    if name == "wav":
        return wav_bytes(AudioChunk(audio=pcm16, sample_rate=sample_rate))
    encoder = ContainerEncoder(name, sample_rate)
    return encoder.encode(pcm16) + encoder.finish()


def decode_audio(data: bytes) -> AudioChunk:
    """Decode any container/codec PyAV reads into mono pcm16 at the stream's own rate (its first audio stream).

    An audio stream with no frames gives an empty chunk. Raises ValueError when the data cannot be decoded.
    """
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream in the data")
            stream = container.streams.audio[0]
            resampler: av.AudioResampler | None = None
            parts: list[bytes] = []
            rate = stream.codec_context.sample_rate or 0  # kept for a stream with no frames at all
            total = 0
            for frame in container.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().tobytes())
                    total += out.samples
                if total > MAX_DECODE_SECONDS * rate:
                    raise ValueError(f"audio longer than {MAX_DECODE_SECONDS} s")
            if resampler is not None:
                parts.extend(out.to_ndarray().tobytes() for out in resampler.resample(None))
    except av.FFmpegError as exc:
        raise ValueError(f"could not decode audio: {exc}") from exc
    if resampler is None and rate <= 0:
        raise ValueError("no audio frames in the data")
    return AudioChunk(audio=b"".join(parts), sample_rate=rate)
