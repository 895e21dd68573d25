"""Format conversion between the formats audio travels in (:class:`AudioFormat`): encoding and sample rate.

:class:`StreamConverter` is the streaming form (one per direction per session: caller audio in -> 16 kHz pcm16 for
VAD/STT, TTS audio -> the caller's output format). :func:`convert_chunk` and :func:`to_pcm16_16k` are one-shot.
"""

from __future__ import annotations

from .alaw import alaw_decode, alaw_encode
from .format import PCM16_16K, AudioChunk, AudioFormat
from .mulaw import mulaw_decode, mulaw_encode
from .resample import Resampler

_SUPPORTED_ENCODINGS = ("pcm16", "mulaw", "alaw")
_DECODERS = {"mulaw": mulaw_decode, "alaw": alaw_decode}
_ENCODERS = {"mulaw": mulaw_encode, "alaw": alaw_encode}


def _check_format(fmt: AudioFormat, role: str) -> None:
    if fmt.encoding not in _SUPPORTED_ENCODINGS:
        allowed = ", ".join(_SUPPORTED_ENCODINGS)
        raise ValueError(f"{role} encoding {fmt.encoding!r} is not supported; allowed: {allowed}")
    if fmt.channels != 1:
        raise ValueError(f"{role} must be mono, got {fmt.channels} channels")


class StreamConverter:
    """Stateful converter from one mono format to another: decode G.711 (mu-law, A-law), resample, encode G.711.

    ``convert`` accepts any number of bytes: for pcm16 input an odd trailing byte is kept and joined with the next
    call, so the sample stream is never shifted. ``flush`` emits the resampler's tail and resets the stream (a
    dangling odd byte is dropped, since half a sample carries no audio). Same format in and out passes through.
    """

    def __init__(self, in_fmt: AudioFormat, out_fmt: AudioFormat):
        _check_format(in_fmt, "input")
        _check_format(out_fmt, "output")
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        self._resampler = Resampler(in_fmt.sample_rate, out_fmt.sample_rate)
        self._pending = b""  # odd trailing byte of pcm16 input

    @property
    def passthrough(self) -> bool:
        return self.in_fmt.encoding == self.out_fmt.encoding and self._resampler.passthrough

    @property
    def pending_bytes(self) -> int:
        """Input bytes held back (0 or 1) until the next call completes a sample."""
        return len(self._pending)

    def convert(self, data: bytes) -> bytes:
        """Convert the next piece of the stream; returns the output available so far (may be empty)."""
        if self.in_fmt.encoding == "pcm16":
            if self._pending:
                data = self._pending + data
                self._pending = b""
            if len(data) % 2:
                self._pending = data[-1:]
                data = data[:-1]
            if self.passthrough:
                return bytes(data)
            pcm = data
        else:
            if self.passthrough:
                return bytes(data)
            pcm = _DECODERS[self.in_fmt.encoding](data)
        return self._encode(self._resampler.process(pcm))

    def flush(self) -> bytes:
        """End of stream: emit the remaining output and reset for a new stream."""
        self._pending = b""
        return self._encode(self._resampler.flush())

    def _encode(self, pcm: bytes) -> bytes:
        encode = _ENCODERS.get(self.out_fmt.encoding)
        return encode(pcm) if encode is not None else pcm


def convert_chunk(chunk: AudioChunk, fmt: AudioFormat) -> AudioChunk:
    """One-shot conversion of a whole chunk to ``fmt`` (an odd trailing pcm16 byte is dropped)."""
    if chunk.format == fmt:
        return chunk
    converter = StreamConverter(chunk.format, fmt)
    audio = converter.convert(chunk.audio) + converter.flush()
    return AudioChunk(audio=audio, sample_rate=fmt.sample_rate, encoding=fmt.encoding, channels=fmt.channels)


def to_pcm16_16k(chunk: AudioChunk) -> bytes:
    """The audio of ``chunk`` as 16 kHz mono pcm16 little-endian (what VAD and STT take); passthrough if it is."""
    if chunk.format == PCM16_16K:
        return chunk.audio
    return convert_chunk(chunk, PCM16_16K).audio
