"""A WebSocket protocol for uvicorn that hands binary audio frames to the session without an ASGI round trip.

uvicorn's websockets-sansio protocol turns every frame into an ASGI ``websocket.receive`` message: a queue put, a
task wake-up, and a ``pause_reading`` / ``resume_reading`` pair on the socket per frame; and before that the
``websockets`` parser runs a generator and builds a ``Frame`` per frame. At 50 frames a second per caller that is
most of a frame's cost (scripts/bench_ws_servers.py). This subclass keeps everything else as uvicorn does it and
adds one shortcut, for connections whose application registered an audio sink (``scope[AUDIO_SINK]``, a callable
taking the frame's bytes and returning True when it handled them):

- Once the connection is open, incoming bytes are cut into whole frames here (a few header bytes each). A frame that
  is a complete, unfragmented, masked binary frame without extension bits is unmasked (websockets' C routine) and
  goes straight to the sink, synchronously, when no earlier message still waits in the ASGI queue (so the order of
  messages never changes) and no fragmented message is in progress. The session's audio path is synchronous and
  takes a few microseconds, so nothing waits.
- Every other frame (text, control, fragments, compressed, a sink that says False because the session has not
  started) is handed to the ``websockets`` parser as whole frames, so its parser is always at a frame boundary and
  handles them exactly as before, errors and limits included.
- A connection that sent frame bytes before the handshake finished, or a frame larger than ``ws_max_size``, goes
  back to the ``websockets`` parser for good (it then answers as it always did, e.g. close 1009).
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

AUDIO_SINK = "voiceserver.audio_sink"
AudioSink = Callable[[bytes], bool]

_FIN_BINARY = 0x82  # FIN set, no RSV bits, opcode 2
_MASKED = 0x80


class FastAudioProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a direct path for binary frames (see the module notes)."""

    _pending: bytes = b""  # the start of a frame not yet complete
    _raw = False  # True once this connection is parsed by websockets alone
    _fragmented = False  # a fragmented data message is in progress (its frames go to websockets)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # websockets' sans-I/O protocol keeps its frame parser, a generator of its own method, on itself: a
        # reference cycle that waits for a full collection (rare in a served process, server/run.py), with the
        # connection's buffers and any zlib state. No bytes arrive after this, so the parser can end now.
        self.conn.parser.close()

    def data_received(self, data: bytes) -> None:
        if self._raw:
            super().data_received(data)
        elif self.conn.state is not State.OPEN:
            started = self.handshake_initiated
            super().data_received(data)
            # Bytes after the request reached websockets' frame parser: it owns this connection's framing now.
            if started or (self.handshake_initiated and not data.endswith(b"\r\n\r\n")):
                self._raw = True
        else:
            self._split_frames(self._pending + data if self._pending else data)

    def _split_frames(self, buffer: bytes) -> None:
        offset, end = 0, len(buffer)
        max_size = self.config.ws_max_size
        sink = self.scope.get(AUDIO_SINK)
        while end - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if end - offset < 4:
                    break
                length, head = int.from_bytes(buffer[offset + 2:offset + 4], "big"), 4
            elif length == 127:
                if end - offset < 10:
                    break
                length, head = int.from_bytes(buffer[offset + 2:offset + 10], "big"), 10
            if second & _MASKED:
                head += 4
            if length > max_size:
                self._pending, self._raw = b"", True
                super().data_received(buffer[offset:])
                return
            stop = offset + head + length
            if stop > end:
                break
            # The hot path: one complete masked binary frame, nothing queued before it (so order is kept).
            if (first == _FIN_BINARY and second & _MASKED and sink is not None and not self._fragmented
                    and not self.close_sent and self.queue.empty()
                    and sink(apply_mask(buffer[offset + head:stop], buffer[offset + head - 4:offset + head]))):
                offset = stop
                continue
            opcode = first & 0x0F
            if opcode in (1, 2):
                self._fragmented = not first & 0x80
            elif opcode == 0 and first & 0x80:
                self._fragmented = False
            super().data_received(buffer[offset:stop])
            offset = stop
            if self.conn.state is not State.OPEN:  # that frame closed the connection: websockets has the rest
                self._raw = True
                if offset < end:
                    super().data_received(buffer[offset:])
                self._pending = b""
                return
            sink = self.scope.get(AUDIO_SINK)
        self._pending = buffer[offset:] if offset < end else b""

    def send_receive_event_to_app(self) -> None:
        # A binary message websockets parsed (a fragmented one, or one sent before the sink was there).
        if self.curr_msg_data_type == "bytes" and not self.close_sent and self.queue.empty():
            sink = getattr(self, "scope", {}).get(AUDIO_SINK)
            if sink is not None:
                data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
                if sink(data):
                    self.frames = []
                    return
        super().send_receive_event_to_app()
