"""The native WebSocket gateway (``/v1/voice``): a thin loop between a Starlette WebSocket and a Session.

Receive: every frame is decoded by native_codec into an inbound event and handed to ``Session.handle``. Send: a task
drains the session's outbox and encodes each event. Close codes: 1008 ids in the URL or a ``session.start`` the
credential does not allow (``forbidden_resource``), 1009 a frame over the limit, 1013 server full or a caller's
limits, 1001 server shutting down, 1000 normal. Bad credentials are refused before the upgrade (HTTP 403).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..identity import Refusal
from ..logs import get_logger, log_context
from ..server.auth import deny_upgrade
from ..session import Session
from ..session.events import ErrorEvent, SessionClosed
from ..session.outbox import OutboxClosed
from .fast_audio import AUDIO_SINK
from .hub import SessionHub
from .hub import close_code as close_code_for
from .native_codec import InvalidInput, decode_binary, decode_text, encode_event, frame_too_large, initial_config

log = get_logger("GATEWAY")


def credentials(ws: WebSocket) -> str | None:
    """The API key or caller token a client presented: ``Authorization: Bearer``, or ``?api_key=``."""
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return ws.query_params.get("api_key")


async def native_voice_endpoint(ws: WebSocket) -> None:
    hub: SessionHub = ws.app.state.hub
    caller = hub.authenticate(credentials(ws), client=ws.client.host if ws.client else None)
    if isinstance(caller, Refusal):
        await deny_upgrade(ws, caller)
        return
    initial = initial_config(ws.query_params)
    if isinstance(initial, InvalidInput):
        await ws.accept()
        await ws.send_text(encode_event(ErrorEvent(initial.code, initial.message, fatal=True)))
        await ws.close(code=1008, reason="invalid id")
        return
    session = hub.open("native", caller=caller, defaults=initial)
    if isinstance(session, Refusal):
        await ws.accept()
        await ws.send_text(encode_event(ErrorEvent(session.code, session.message)))
        await ws.close(code=session.close_code, reason=session.message[:120])
        return
    await ws.accept()
    try:
        with log_context(session_id=session.id):
            sender = asyncio.create_task(_send_loop(ws, session), name=f"send-{session.id}")
            try:
                await _receive_loop(ws, session, hub)
            finally:
                await session.close("client_gone" if not session.closed else "ended")
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(sender, timeout=5)
    finally:
        hub.release(session)


async def _receive_loop(ws: WebSocket, session: Session, hub: SessionHub) -> None:
    limits = hub.deps.limits
    max_frame = limits.max_frame_bytes
    clock = hub.deps.clock

    def audio_sink(data: bytes) -> bool:
        # With the FastAudioProtocol, frames arrive here straight from the socket (see gateway/fast_audio.py);
        # anything it cannot take at once (too large, before the session started) comes through the loop below.
        return len(data) <= max_frame and session.feed_audio_nowait(data, clock())

    ws.scope[AUDIO_SINK] = audio_sink
    # The raw ASGI receive: Starlette's wrapper re-checks connection state on every message, a measurable cost at
    # 25,000 audio frames a second. After accept() the messages are only websocket.receive / .disconnect.
    receive = ws._receive
    while not session.closed:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            arrived = clock()
            if len(data) > max_frame:
                await _close_too_big(ws, session, len(data), max_frame)
                return
            await session.handle(decode_binary(data, arrived))
            continue
        text = message.get("text")
        if text is None:
            continue
        if len(text) > max_frame:
            await _close_too_big(ws, session, len(text), max_frame)
            return
        await session.handle(decode_text(text, max_text_chars=limits.max_text_chars))


async def _close_too_big(ws: WebSocket, session: Session, size: int, limit: int) -> None:
    session.deps.metrics.errors.labels("frame_too_large").inc()
    with contextlib.suppress(Exception):
        await ws.send_text(frame_too_large(size, limit))
    await session.close("frame_too_large")
    with contextlib.suppress(Exception):
        await ws.close(code=1009, reason=f"frame over {limit} bytes")


async def _send_loop(ws: WebSocket, session: Session) -> None:
    """Drain the outbox to the socket until the session closes; a dead socket ends the session."""
    close_code = 1000
    try:
        while True:
            event = await session.outbox.get()
            payload = encode_event(event)
            if payload is None:
                continue
            if isinstance(payload, bytes):
                await ws.send_bytes(payload)
            else:
                await ws.send_text(payload)
            if isinstance(event, SessionClosed):
                close_code = close_code_for(event.reason)
    except OutboxClosed:
        pass
    except (WebSocketDisconnect, RuntimeError, OSError):
        # The client vanished mid-reply: end the session so its work is cancelled and resources freed.
        await session.close("client_gone")
        return
    if ws.application_state != WebSocketState.DISCONNECTED and ws.client_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=close_code)

