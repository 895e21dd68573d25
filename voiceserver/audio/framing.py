"""Fixed-size framing of a byte stream (for example 20 ms of 16 kHz pcm16 = 640 bytes for the VAD)."""

from __future__ import annotations


class Framer:
    """Cut a stream of bytes into frames of exactly ``frame_bytes``; the remainder waits for the next push.

    The remainder is always shorter than one frame, so memory stays bounded by ``frame_bytes`` plus one push.
    """

    def __init__(self, frame_bytes: int):
        if not isinstance(frame_bytes, int) or isinstance(frame_bytes, bool) or frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be a positive int, got {frame_bytes!r}")
        self.frame_bytes = frame_bytes
        self._rest = b""

    @property
    def pending(self) -> int:
        """Bytes held back until a frame is complete (always < frame_bytes)."""
        return len(self._rest)

    def push(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete frame, oldest first."""
        size = self.frame_bytes
        if self._rest:
            data = self._rest + data
        n = len(data) // size
        if n == 0:
            self._rest = bytes(data)
            return []
        end = n * size
        self._rest = bytes(data[end:])
        view = memoryview(data)
        return [bytes(view[i : i + size]) for i in range(0, end, size)]

    def flush(self, pad: bytes | None = None) -> bytes:
        """Return (and clear) the partial frame; with ``pad`` (one byte) it is padded to a full frame."""
        rest, self._rest = self._rest, b""
        if pad is not None and rest:
            if len(pad) != 1:
                raise ValueError("pad must be a single byte")
            rest = rest + pad * (self.frame_bytes - len(rest))
        return rest

    def reset(self) -> None:
        """Drop the partial frame."""
        self._rest = b""
