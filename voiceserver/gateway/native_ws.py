"""The native WebSocket gateway: a thin loop between a Starlette WebSocket and a Session.

Receive: binary frames are audio (fed straight to the session's synchronous audio path), text frames are decoded by
native_codec. Send: a task drains the session's outbox and encodes each event. Close codes: 1008 bad credentials,
1009 a frame over the limit, 1013 server full, 1001 server shutting down, 1000 normal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..events import ErrorEvent, Ping, Pong, SessionClosed, SessionConfig, StartSession
from ..ids import InvalidIdError, validate_id
from ..logs import get_logger, log_context
from ..outbox import OutboxClosed
from ..session import Session
from .hub import SessionHub
from .native_codec import ProtocolError, decode_text, encode_event

log = get_logger("GATEWAY")


def _credentials(ws: WebSocket) -> str | None:
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return ws.query_params.get("api_key")


async def native_voice_endpoint(ws: WebSocket) -> None:
    hub: SessionHub = ws.app.state.hub
    if not hub.authorize(_credentials(ws)):
        await ws.close(code=1008, reason="missing or invalid API key")
        return
    session = hub.open("native")
    if session is None:
        await ws.accept()
        code, error, reason = ((1001, "server_shutdown", "server shutting down") if hub.shutting_down
                               else (1013, "server_full", "server full, try again later"))
        await ws.send_text(encode_event(ErrorEvent(error, reason)))
        await ws.close(code=code, reason=reason)
        return
    await ws.accept()
    try:
        initial = SessionConfig()
        try:
            for key in ("resource", "thread"):
                if ws.query_params.get(key):
                    setattr(initial, key, validate_id(ws.query_params[key], key))
        except InvalidIdError as exc:
            await ws.send_text(encode_event(ErrorEvent("invalid_id", str(exc), fatal=True)))
            await ws.close(code=1008, reason="invalid id")
            return
        with log_context(session_id=session.id):
            sender = asyncio.create_task(_send_loop(ws, session), name=f"send-{session.id}")
            try:
                await _receive_loop(ws, session, hub, initial)
            finally:
                await session.close("client_gone" if not session.closed else "ended")
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(sender, timeout=5)
    finally:
        hub.release(session)


async def _receive_loop(ws: WebSocket, session: Session, hub: SessionHub, initial: SessionConfig) -> None:
    limits = hub.deps.limits
    max_frame = limits.max_frame_bytes
    # The raw ASGI receive: Starlette's wrapper re-checks connection state on every message, a measurable cost at
    # 25,000 audio frames a second. After accept() the messages are only websocket.receive / .disconnect.
    receive = ws._receive
    while not session.closed:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            arrived = time.perf_counter()
            if len(data) > max_frame:
                await _close_too_big(ws, session, len(data), max_frame)
                return
            if not session.started:
                await session.start(initial)
            session.feed_audio(data, arrived)
            continue
        text = message.get("text")
        if text is None:
            continue
        if len(text) > max_frame:
            await _close_too_big(ws, session, len(text), max_frame)
            return
        event = decode_text(text, max_text_chars=limits.max_text_chars)
        if isinstance(event, ProtocolError):
            session.deps.metrics.errors.labels(event.code).inc()
            session.outbox.put_nowait(ErrorEvent(event.code, event.message), force=True)
            continue
        if isinstance(event, StartSession):
            config = event.config
            config.resource = config.resource or initial.resource
            config.thread = config.thread or initial.thread
            await session.start(config)
        elif isinstance(event, Ping):
            session.outbox.put_nowait(Pong(event.id), force=True)
        else:
            await session.handle(event)


async def _close_too_big(ws: WebSocket, session: Session, size: int, limit: int) -> None:
    session.deps.metrics.errors.labels("frame_too_large").inc()
    with contextlib.suppress(Exception):
        await ws.send_text(encode_event(ErrorEvent("frame_too_large", f"frame of {size} bytes; the limit is {limit}")))
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
            if isinstance(event, SessionClosed) and event.reason == "server_shutdown":
                close_code = 1001
    except OutboxClosed:
        pass
    except (WebSocketDisconnect, RuntimeError, OSError):
        # The client vanished mid-reply: end the session so its work is cancelled and resources freed.
        await session.close("client_gone")
        return
    if ws.application_state != WebSocketState.DISCONNECTED and ws.client_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=close_code)
