"""A WebSocket protocol for uvicorn that hands binary audio frames to the session without an ASGI round trip.

uvicorn's websockets-sansio protocol turns every frame into an ASGI ``websocket.receive`` message: a queue put, a
task wake-up, and a ``pause_reading`` / ``resume_reading`` pair on the socket per frame. At 50 frames a second per
caller that is most of a frame's cost (scripts/bench_ws_servers.py). This subclass keeps everything else as uvicorn
does it and adds one shortcut: when the application registered an audio sink for the connection
(``scope[AUDIO_SINK]``, a callable taking the frame's bytes and returning True when it handled them) and no earlier
message is still waiting in the ASGI queue (so the order of messages never changes), a binary frame goes straight
to the sink, synchronously, in ``data_received``. The session's audio path is synchronous and takes a few
microseconds, so nothing waits. A sink that returns False (the session is not started yet, the frame is too large)
sends the frame the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

AUDIO_SINK = "voiceserver.audio_sink"
AudioSink = Callable[[bytes], bool]


class FastAudioProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a direct path for binary frames (see the module notes)."""

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "bytes" and not self.close_sent and self.queue.empty():
            sink = getattr(self, "scope", {}).get(AUDIO_SINK)
            if sink is not None:
                data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
                if sink(data):
                    self.frames = []
                    return
        super().send_receive_event_to_app()
