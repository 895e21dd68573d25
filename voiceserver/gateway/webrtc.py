"""The WebRTC gateway's HTTP side: signalling and the sessions it opened.

- ``POST /v1/webrtc/offer``: an SDP offer (with the ``events`` data channel and an audio m-line) -> 200 with the
  answer and the ``session_id``; 400 ``invalid_offer`` / ``invalid_id`` / ``invalid_sdp``, 401 ``unauthorized`` /
  ``token_expired``, 403 ``forbidden_resource`` (ids a caller token does not allow) / ``forbidden_origin``, 413
  ``body_too_large``, 429 ``too_many_sessions`` / ``rate_limited``, 501 ``not_installed`` (no aiortc), 503
  ``server_full`` / ``server_shutdown``.
- ``DELETE /v1/webrtc/sessions/{session_id}``: end the session (memory is saved) -> 200, or 404 ``session_not_found``.
- ``GET /v1/webrtc/config``: the ICE servers a browser should use -> ``{"ice_servers": [...]}``.

Every session is opened through the hub, so WebRTC and WebSocket callers count against the same ``max_sessions``.
The peer itself (aiortc) lives in :mod:`voiceserver.gateway.webrtc_peer`, imported on the first offer so a server
without the ``webrtc`` extra still starts (and answers 501).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..identity import Caller, Refusal
from ..logs import get_logger
from ..settings import WebRtcConfig
from .hub import SessionHub
from .webrtc_codec import SignallingError, answer_body, browser_ice_servers, credential_from, parse_offer

if TYPE_CHECKING:
    from ..server.composition import VoiceServer

log = get_logger("GATEWAY")

CLOSE_WAIT_S = 5.0


class WebRtcGateway:
    """Signalling endpoints and the running peers, by session id."""

    def __init__(self, hub: SessionHub, config: WebRtcConfig):
        self.hub = hub
        self.config = config
        self.peers: dict[str, Any] = {}
        self._runs: dict[str, asyncio.Task] = {}
        self._peer_module: Any = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/webrtc/offer", self.offer, methods=["POST"]),
            Route("/v1/webrtc/sessions/{session_id}", self.delete_session, methods=["DELETE"]),
            Route("/v1/webrtc/config", self.client_config, methods=["GET"]),
        ]

    def _load_peer_module(self) -> Any:
        if self._peer_module is None:
            self._peer_module = importlib.import_module(".webrtc_peer", __package__)
        return self._peer_module

    def _caller(self, request: Request, token: str | None = None) -> Caller | Refusal:
        return self.hub.authenticate(credential_from(request.headers, request.query_params, token),
                                     client=request.client.host if request.client else None)

    async def offer(self, request: Request) -> Response:
        body = await _read_limited(request, self.config.max_offer_bytes)
        parsed = parse_offer(body, max_bytes=self.config.max_offer_bytes)
        if isinstance(parsed, SignallingError):
            return _error(parsed)
        caller = self._caller(request, parsed.token)
        if isinstance(caller, Refusal):
            return _refused(caller)
        try:
            peers = self._load_peer_module()
        except ImportError as exc:
            return _error(SignallingError(501, "not_installed", str(exc)))
        session = self.hub.open("webrtc", caller=caller, defaults=parsed.config)
        if isinstance(session, Refusal):
            return _refused(session)
        peer = None
        try:
            peer = peers.WebRtcPeer(self.hub, session, self.config, parsed.config)
            async with asyncio.timeout(self.config.ice_timeout_s):
                sdp = await peer.answer(parsed.sdp)
        except Exception as exc:  # noqa: BLE001 - whatever aiortc raises for an offer it cannot use is the offer's
            await _discard(self.hub, session, peer)
            if isinstance(exc, TimeoutError):
                return _error(SignallingError(503, "ice_timeout", "could not gather ICE candidates in "
                                                                  f"{self.config.ice_timeout_s:g} s"))
            log.info("webrtc offer refused", fields={"error": f"{type(exc).__name__}: {exc}"})
            return _error(SignallingError(400, "invalid_sdp", f"the offer cannot be answered: {exc}"[:300]))
        self.peers[session.id] = peer
        task = asyncio.create_task(peer.run(), name=f"webrtc-peer-{session.id}")
        self._runs[session.id] = task
        task.add_done_callback(lambda _t, sid=session.id: self._forget(sid))
        log.info("webrtc peer answered", fields={"session_id": session.id})
        return JSONResponse(answer_body(sdp, session.id))

    def _forget(self, session_id: str) -> None:
        self.peers.pop(session_id, None)
        self._runs.pop(session_id, None)

    async def delete_session(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Refusal):
            return _refused(caller)
        session_id = request.path_params["session_id"]
        peer, run = self.peers.get(session_id), self._runs.get(session_id)
        if peer is None or run is None or not caller.owns(peer.session.config.resource):  # a token: its own only
            return _error(SignallingError(404, "session_not_found", f"no WebRTC session {session_id[:80]!r}"))
        peer.end("client_end")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(run), CLOSE_WAIT_S)  # closed (memory saved) when we answer
        return JSONResponse({"session_id": session_id, "closed": True})

    async def client_config(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Refusal):
            return _refused(caller)
        return JSONResponse({"ice_servers": browser_ice_servers(self.config.ice_servers)})

    async def close(self) -> None:
        """At shutdown, after the hub closed every session: wait for the peers to close their connections."""
        runs = list(self._runs.values())
        if not runs:
            return
        for peer in list(self.peers.values()):
            peer.end("server_shutdown")
        _, pending = await asyncio.wait(runs, timeout=CLOSE_WAIT_S)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task


async def _discard(hub: SessionHub, session: Any, peer: Any) -> None:
    if peer is not None:
        with contextlib.suppress(Exception):
            await peer.pc.close()
    await session.close("invalid_sdp")
    hub.release(session)


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, read up to one byte over ``limit`` (parse_offer then answers 413), never all of a huge one."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return bytes(limit + 1)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            break
    return bytes(body)


def _error(error: SignallingError) -> Response:
    return JSONResponse(error.body(), status_code=error.status)


def _refused(refusal: Refusal) -> Response:
    """The hub's refusal (unauthorized 401, forbidden_resource 403, the caller's limits 429, server full 503)."""
    return JSONResponse(refusal.body(), status_code=refusal.status)


def webrtc_routes(server: VoiceServer) -> list[Route]:
    """The gateway's routes for ``create_app`` (none when ``webrtc.enabled`` is off); its peers close at shutdown."""
    config = server.settings.webrtc
    if not config.enabled or server.hub is None:
        return []
    gateway = WebRtcGateway(server.hub, config)
    server._closers.append(gateway.close)
    return gateway.routes()
