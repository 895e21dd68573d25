"""The OpenAI Realtime gateway (``ws /v1/realtime``): a thin loop between a Starlette WebSocket, the connection's
conversation mapper (realtime_state.py) and a Session.

Receive: each text frame is decoded (realtime_codec.py), the mapper turns it into actions, and the actions run in
order — server events are queued in the session's outbox behind what the session queued already (so the client
sees them in order), session events are handled (one at a time: a lock), audio items are transcribed in commit
order. Send: one task drains the outbox; session events become server events through the mapper and are written.

Connection: ``Authorization: Bearer <key>`` (or ``?api_key=``, or the browser subprotocol
``openai-insecure-api-key.<key>``), checked by the hub; ``OpenAI-Beta: realtime=v1`` (or the subprotocol
``openai-beta.realtime-v1``) selects the beta dialect, else GA; ``?model=`` names a configured agent (others get the
default agent, or a caller token's own); ``?resource=`` / ``?thread=`` are the caller's memory ids (a caller token's
when left out; others than the token's are ``forbidden_resource``). Close codes: 1008 bad ids or
``forbidden_resource``, 1009 an event over the limit, 1013 server full or the caller's limits, 1001 server shutting
down, 1000 normal. A refused credential is answered 403 before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..audio.format import AudioChunk
from ..engines import ProviderError
from ..identity import Refusal
from ..ids import InvalidIdError, new_id, validate_id
from ..logs import get_logger, log_context
from ..server.auth import deny_upgrade
from ..session import Session
from ..session.agent_adapter import AgentAdapter
from ..session.events import Event, SessionClosed, SessionConfig
from ..session.outbox import OutboxClosed
from ..tts.fallback import FallbackTTS
from . import realtime_codec as codec
from .hub import SessionHub
from .realtime_items import Identity
from .realtime_port import RealtimeAnswerer
from .realtime_shapes import Dialect, RealtimeSettings
from .realtime_state import Drive, Mark, RealtimeConversation, RealtimeLimits, ReplaceHeard, Send, Transcribe

log = get_logger("GATEWAY")
KEY_PROTOCOL = "openai-insecure-api-key."
BETA_PROTOCOL = "openai-beta.realtime-v1"


@dataclass(slots=True)
class WireEvent(Event):
    """A server event the gateway itself answers, queued in the session's outbox to keep the order."""

    payload: dict[str, Any]


@dataclass(slots=True)
class WireMarker(Event):
    """A marker behind what the session has queued so far (see RealtimeConversation.on_marker)."""

    name: str


def _credential(ws: WebSocket, protocols: list[str]) -> str | None:
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for protocol in protocols:
        if protocol.startswith(KEY_PROTOCOL):
            return protocol[len(KEY_PROTOCOL):]
    return ws.query_params.get("api_key")


def _voice_name(tts: Any) -> str:
    """The name the session reports for the server's voice."""
    engine = tts.engines[0] if isinstance(tts, FallbackTTS) else tts
    if engine.provider == "piper":
        return getattr(engine, "voice_name", None) or "alloy"
    return getattr(engine, "voice", None) or "alloy"


def limits_from(config: Any, max_text_chars: int) -> RealtimeLimits:
    return RealtimeLimits(max_tools=config.realtime_max_tools,
                          max_instructions_chars=config.realtime_max_instructions_chars,
                          max_buffer_ms=int(config.realtime_max_buffer_s * 1000), max_items=config.realtime_max_items,
                          audio_delta_ms=config.realtime_audio_delta_ms, max_trigger_chars=max_text_chars)


async def realtime_endpoint(ws: WebSocket) -> None:
    hub: SessionHub = ws.app.state.hub
    config = ws.app.state.voice.settings.openai_endpoints
    protocols = [p.strip() for p in ws.scope.get("subprotocols") or []]
    caller = hub.authenticate(_credential(ws, protocols), client=ws.client.host if ws.client else None)
    if isinstance(caller, Refusal):
        await deny_upgrade(ws, caller)
        return
    dialect: Dialect = ("beta" if "realtime=v1" in ws.headers.get("openai-beta", "") or BETA_PROTOCOL in protocols
                        else "ga")
    subprotocol = "realtime" if "realtime" in protocols else None
    try:
        identity = Identity(*(validate_id(ws.query_params[k], k) if ws.query_params.get(k) else None
                              for k in ("resource", "thread")))
    except InvalidIdError as exc:
        await ws.accept(subprotocol=subprotocol)
        await ws.send_text(codec.encode(codec.error_event("invalid_id", str(exc)), dialect) or "")
        await ws.close(code=1008, reason="invalid id")
        return
    model = ws.query_params.get("model") or "voiceserver"
    fixed = caller.agent if caller.agent in hub.deps.agents else None  # a caller token may name its agent
    identity.agent = model if model in hub.deps.agents else fixed or hub.deps.default_agent
    base = hub.deps.agents[identity.agent]
    instructions = ""
    if isinstance(base, AgentAdapter):
        with contextlib.suppress(Exception):  # dynamic instructions that need a run context: report none
            instructions = await base.agent.resolve_instructions()
    own = base.voice()  # the agent's own voice, when it has one
    voice = own.speaker if own is not None and own.speaker else _voice_name(own.tts if own else hub.deps.tts)
    settings = RealtimeSettings(model=model, instructions=instructions, voice=voice,
                                transcription={"model": hub.deps.stt.provider})
    limits = limits_from(config, hub.deps.limits.max_text_chars)
    state = RealtimeConversation(dialect=dialect, settings=settings, limits=limits, session_id=new_id("sess"),
                                 identity=identity)
    port: Any = base
    if isinstance(base, AgentAdapter):
        port = RealtimeAnswerer(base.agent, key=identity.agent, state=state, server_tts=hub.deps.tts,
                                base_instructions=instructions)
    session = hub.open("realtime", caller=caller, agents={identity.agent: port}, defaults=SessionConfig(
        resource=identity.resource, thread=identity.thread, agent=identity.agent))
    await ws.accept(subprotocol=subprotocol)
    if isinstance(session, Refusal):
        kind = "server_error" if session.status >= 500 else "invalid_request_error"
        await ws.send_text(codec.encode(codec.error_event(session.code, session.message, kind=kind), dialect) or "")
        await ws.close(code=session.close_code, reason=session.message[:120])
        return
    identity.resource, identity.thread = session.defaults.resource, session.defaults.thread  # a token's own
    state.session_id = session.id
    try:
        with log_context(session_id=session.id):
            log.info("realtime connection", fields={"dialect": dialect, "model": model, "agent": identity.agent,
                                                   "resource": identity.resource})
            await RealtimeLoop(ws, session, state, port, hub, config.realtime_max_event_bytes).run()
    finally:
        hub.release(session)


class RealtimeLoop:
    """One connection's receive loop, send task and helper tasks (see the module notes)."""

    def __init__(self, ws: WebSocket, session: Session, state: RealtimeConversation, port: Any, hub: SessionHub,
                 max_event_bytes: int):
        self.ws = ws
        self.session = session
        self.state = state
        self.port = port
        self.hub = hub
        self.clock = hub.deps.clock
        self.max_event_bytes = max_event_bytes
        self._lock = asyncio.Lock()  # session.handle is called by one task at a time
        self._tasks: set[asyncio.Task] = set()
        self._transcription: asyncio.Task | None = None
        self.close_code = 1000  # what the send task closes with once the session is over

    async def run(self) -> None:
        await self._write(self.state.session_created())
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.session.id}")
        try:
            await self._receive_loop()
        finally:
            await self.session.close("client_gone" if not self.session.closed else "ended")
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(sender, timeout=5)

    # --- receiving -----------------------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        receive = self.ws._receive  # the raw ASGI receive, as native_ws does (the fast path for audio appends)
        while not self.session.closed:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = message.get("bytes") or b""
            if len(text) > self.max_event_bytes:
                await self._too_big(len(text))
                return
            event = codec.decode_client(text, self.state.dialect, self.state.limits)
            await self._run(self.state.on_client(event, self.clock()))

    async def _too_big(self, size: int) -> None:
        """An event over the limit: an error, then the session ends and the socket closes with 1009."""
        self.session.deps.metrics.errors.labels("event_too_large").inc()
        error = codec.error_event("event_too_large", f"client event of {size} bytes; the limit is "
                                  f"{self.max_event_bytes}")
        self.close_code = 1009
        await self.session.outbox.put(WireEvent(error))
        await self.session.close("event_too_large")

    async def _run(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self.session.outbox.put(WireEvent(action.event))
            elif isinstance(action, Drive):
                async with self._lock:
                    await self.session.handle(action.event)
            elif isinstance(action, Mark):
                await self.session.outbox.put(WireMarker(action.name))
            elif isinstance(action, Transcribe):
                self._transcribe(action)
            elif isinstance(action, ReplaceHeard) and isinstance(self.port, RealtimeAnswerer):
                self._spawn(self.port.replace_heard(action.turn_id, action.heard_text))

    def _transcribe(self, action: Transcribe) -> None:
        """An item's audio transcribed outside any turn, in commit order."""
        previous = self._transcription
        listener = (self.port.listener() if hasattr(self.port, "listener") else None) or self.hub.deps.stt

        async def transcribe() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            text, error = None, None
            try:
                text = (await listener.transcribe(AudioChunk(action.audio, 16000))).text
            except ProviderError as exc:
                error = (exc.code, exc.message)
            except Exception as exc:
                log.exception("transcription failed")
                error = ("internal_error", f"{type(exc).__name__}: {exc}")
            await self._run(self.state.on_transcribed(action.item_id, text, error))

        self._transcription = self._spawn(transcribe())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("realtime task failed", exc_info=task.exception())

    # --- sending -------------------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                event = await self.session.outbox.get()
                if isinstance(event, WireEvent):
                    await self._write(event.payload)
                    continue
                if isinstance(event, WireMarker):
                    actions = self.state.on_marker(event.name)
                else:
                    actions = self.state.on_session(event, self.clock())
                    if isinstance(event, SessionClosed) and event.reason == "server_shutdown":
                        self.close_code = 1001
                        await self._write(codec.error_event("server_shutdown", "server shutting down",
                                                            kind="server_error"))
                later = []
                for action in actions:
                    if isinstance(action, Send):
                        await self._write(action.event)
                    else:
                        later.append(action)
                if later:  # a response that waited for a transcript starts now
                    self._spawn(self._run(later))
        except OutboxClosed:
            pass
        except (WebSocketDisconnect, RuntimeError, OSError):
            await self.session.close("client_gone")
            return
        except Exception:  # a bug here must not leave the caller waiting on a silent socket
            log.exception("realtime send loop failed")
            self.close_code = 1011
            await self.session.close("internal_error")
        ws = self.ws
        if ws.application_state != WebSocketState.DISCONNECTED and ws.client_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(code=self.close_code)

    async def _write(self, event: dict[str, Any]) -> None:
        text = codec.encode(event, self.state.dialect)
        if text is not None:
            await self.ws.send_text(text)
