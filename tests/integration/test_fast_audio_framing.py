"""The native gateway's own frame splitter (gateway/fast_audio.py) against a real server and a raw TCP client.

Binary audio frames bypass the websockets parser, so these tests check what that parser guaranteed before: every
byte of audio arrives once, unmasked and in order, however TCP cuts the stream; text and control frames in between
keep their order and answers; fragmented messages still work; a frame over uvicorn's size limit still closes 1009.
"""

import asyncio
import base64
import json
import math
import os
import random

import numpy as np
from websockets.frames import Frame, Opcode

from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server

FRAME = 640  # 20 ms of 16 kHz pcm16


def tone(ms: int) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """A masked client frame, serialized by the websockets library itself (a random mask per frame)."""
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


class RawClient:
    """A WebSocket client on a bare TCP stream, so the test decides exactly where the bytes are cut."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> "RawClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /v1/voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        return cls(reader, writer)

    async def next_frame(self, timeout: float = 10) -> tuple[int, bytes]:
        """(opcode, payload) of the server's next frame (server frames are not masked)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def next_event(self, kind: str, timeout: float = 10) -> dict:
        while True:
            opcode, payload = await self.next_frame(timeout)
            if opcode == 1:
                event = json.loads(payload)
                if event["type"] == kind:
                    return event

    async def send_in_pieces(self, data: bytes, rng: random.Random) -> None:
        """Write ``data`` in pieces of random size (1 byte to 1.5 frames), so cuts land inside headers, masks and
        payloads; a pause now and then lets the server read a piece on its own."""
        offset = 0
        while offset < len(data):
            size = rng.choice([1, 2, 3, 5, 7, rng.randrange(1, 1000)])
            self.writer.write(data[offset:offset + size])
            offset += size
            await self.writer.drain()
            if rng.random() < 0.3:
                await asyncio.sleep(0.002)

    async def close(self) -> None:
        self.writer.close()


async def test_audio_cut_anywhere_arrives_whole_and_in_order_with_text_and_pings_between():
    heard: list[bytes] = []

    def transcribe(audio: bytes) -> str:
        heard.append(audio)
        return "hello there"

    speech = tone(1200)
    audio = b"\x00" * (FRAME * 15) + speech + b"\x00" * (FRAME * 50)
    frames = [audio[i:i + FRAME] for i in range(0, len(audio), FRAME)]
    async with voice_server(stt=ScriptedSTT(transcribe), tts=ToneTTS()) as vs:
        client = await RawClient.connect(vs.running.port)
        try:
            client.writer.write(client_frame(Opcode.TEXT, json.dumps({"type": "session.start"}).encode()))
            await client.next_event("session.started")
            stream = bytearray()
            for index, frame in enumerate(frames):
                if index == 30:  # in the middle of the speech: a ping, a bad text frame, and a fragmented frame
                    stream += client_frame(Opcode.PING, b"are you there")
                    stream += client_frame(Opcode.TEXT, b'{"type":"bogus"}')
                    stream += client_frame(Opcode.BINARY, frame[:100], fin=False)
                    stream += client_frame(Opcode.CONT, frame[100:], fin=True)
                    continue
                stream += client_frame(Opcode.BINARY, frame)
            await client.send_in_pieces(bytes(stream), random.Random(7))
            seen_pong = seen_error = False
            while True:
                opcode, payload = await client.next_frame()
                if opcode == 0xA:
                    assert payload == b"are you there"
                    seen_pong = True
                elif opcode == 1:
                    event = json.loads(payload)
                    if event["type"] == "error":
                        assert event["code"] == "unknown_type"
                        seen_error = True
                    if event["type"] == "transcript" and event.get("final", True):
                        break
            assert seen_pong and seen_error
            session = next(iter(vs.server.hub.sessions.values()))
            # Every frame was segmented exactly once: the stream clock is the audio sent, to the frame.
            assert session._listener.position_ms == len(frames) * 20
        finally:
            await client.close()
    assert heard, "no utterance reached speech-to-text"
    utterance = heard[-1]
    # The speech frames arrived unmasked and in order (the fragmented one among them).
    assert speech[:FRAME * 40] in utterance


async def test_a_frame_over_the_transport_limit_still_closes_1009():
    async with voice_server(stt=ScriptedSTT(["hello"]), tts=ToneTTS()) as vs:
        client = await RawClient.connect(vs.running.port)
        try:
            client.writer.write(client_frame(Opcode.TEXT, json.dumps({"type": "session.start"}).encode()))
            await client.next_event("session.started")
            client.writer.write(client_frame(Opcode.BINARY, bytes(FRAME)))
            # Far over uvicorn's own limit (twice the largest message a gateway takes): websockets refuses it.
            header = bytes([0x82, 0x80 | 127]) + (64 << 20).to_bytes(8, "big") + os.urandom(4)
            client.writer.write(header + bytes(1000))
            while True:
                opcode, payload = await client.next_frame()
                if opcode == 8:
                    assert int.from_bytes(payload[:2], "big") == 1009
                    break
        finally:
            await client.close()


class RecordingTransport(asyncio.Transport):
    """Collects what the protocol writes (this test drives the protocol's byte interface directly)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def test_frames_sent_before_the_handshake_finished_go_to_websockets_in_order():
    """A client that does not wait for the 101: frames that arrive before the application accepted reach the
    websockets parser, and the connection stays with it (no frame is cut twice, none is lost)."""
    import uvicorn
    from uvicorn.server import ServerState

    from voiceserver.gateway.fast_audio import AUDIO_SINK, FastAudioProtocol

    accept_now = asyncio.Event()
    delivered: list = []  # in the order the application got them, through the sink or the ASGI queue

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await accept_now.wait()
        await send({"type": "websocket.accept"})
        scope[AUDIO_SINK] = lambda data: delivered.append(data) is None
        while len(delivered) < 3:
            message = await receive()
            delivered.append(message.get("bytes") or message.get("text"))

    config = uvicorn.Config(app, ws=FastAudioProtocol, lifespan="off")
    config.load()
    protocol = FastAudioProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(RecordingTransport())
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.data_received((f"GET /v1/voice HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    early = client_frame(Opcode.BINARY, b"early audio")
    protocol.data_received(early[:5])  # part of a frame before the accept: websockets' parser holds it
    await asyncio.sleep(0)
    accept_now.set()
    for _ in range(50):
        if protocol.conn.state.name == "OPEN":
            break
        await asyncio.sleep(0.01)
    protocol.data_received(early[5:] + client_frame(Opcode.BINARY, b"later audio")
                           + client_frame(Opcode.TEXT, b"text"))
    for _ in range(50):
        if len(delivered) >= 3:
            break
        await asyncio.sleep(0.01)
    assert protocol._raw
    assert delivered == [b"early audio", b"later audio", "text"]


async def start_session(ws) -> None:
    """session.start on a websockets client connection, then wait for session.started."""
    await ws.send(json.dumps({"type": "session.start"}))
    while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "session.started":
        pass


async def test_permessage_deflate_is_declined_unless_configured():
    """Compressed frames skip the fast path and cost a zlib state per connection: the server declines the
    extension that clients (browsers, the websockets library) offer, unless ``websocket_compression`` is on."""
    import websockets

    from voiceserver.settings import Settings

    for enabled in (False, True):
        settings = Settings(websocket_compression=enabled)
        async with (voice_server(stt=ScriptedSTT(["hello"]), tts=ToneTTS(), settings=settings) as vs,
                    websockets.connect(f"{vs.running.ws_url}/v1/voice") as ws):  # it offers permessage-deflate
            await start_session(ws)
            names = [e.name for e in ws.protocol.extensions]
            assert names == (["permessage-deflate"] if enabled else [])


async def test_a_closed_connection_is_freed_without_the_collector():
    """websockets' protocol object is a reference cycle (its parser generator); once the connection is lost it
    must be freed by reference counting, not wait for a full collection with the connection's buffers."""
    import gc
    import weakref

    import websockets

    async with voice_server(stt=ScriptedSTT(["hello"]), tts=ToneTTS()) as vs:
        gc.collect()
        gc.disable()
        try:
            async with websockets.connect(f"{vs.running.ws_url}/v1/voice") as ws:
                await start_session(ws)
                (protocol,) = vs.running.server.server_state.connections
                conn_ref = weakref.ref(protocol.conn)
                del protocol
            for _ in range(200):
                if not vs.running.server.server_state.connections and conn_ref() is None:
                    break
                await asyncio.sleep(0.01)
            assert conn_ref() is None, "the closed connection's websockets protocol is still in memory"
        finally:
            gc.enable()
