"""HTTP access control: who a REST request is, its per-caller rate, and the browser Origin allow-list.

:class:`AccessMiddleware` (pure ASGI) runs in front of every route:

- every WebSocket upgrade, and every ``/v1/`` HTTP request, that carries an ``Origin`` must match
  ``auth.allowed_origins`` (identity/origins.py), else 403 ``forbidden_origin`` (before the upgrade);
- every ``/v1/`` HTTP request brings an admin API key or a caller token (``Authorization: Bearer``, or
  ``?api_key=``), turned into a Caller by the session hub (the one place that does it) and stored in the request's
  state (:func:`request_caller`); none valid is 401 ``unauthorized`` / ``token_expired``; over a per-caller rate is
  429 ``rate_limited``. On an open server (no keys, no secret) every request is an ``open`` caller.
- endpoints that check credentials themselves through the hub (``self_authenticating``: the WebRTC offer carries a
  token in its body) are passed on; signed paths (Twilio's webhook when ``twilio.auth_token`` is set) are passed on
  when the server has no API keys, the signature being their credential; they never accept a caller token.

Health, readiness, metrics and the page stay open so probes and scrapers need no secret. The voice WebSockets check
credentials in their gateways (through the same hub).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from ..identity import OPEN, Caller, OriginPolicy, Refusal, forbidden_origin, key_matches, unauthorized

if TYPE_CHECKING:
    from ..gateway.hub import SessionHub

__all__ = ["AccessMiddleware", "deny_upgrade", "key_matches", "presented_credential", "request_caller"]

ADMIN_ONLY = ("/v1/twilio/",)  # a caller token must not answer calls: the webhook names callers by their number
# Endpoints that check credentials themselves through the session hub (like the voice WebSockets): WebRTC signalling
# also accepts the body's "token", which this middleware cannot see.
SELF_AUTHENTICATING = ("/v1/webrtc/",)


def presented_credential(headers: Any, query: Any) -> str | None:
    """The API key or caller token a client presented: ``Authorization: Bearer``, else ``?api_key=``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return query.get("api_key") or None


def request_caller(connection: HTTPConnection) -> Caller:
    """Who made this request (set by AccessMiddleware); ``open`` for an app mounted without it."""
    caller = connection.scope.get("state", {}).get("caller")
    return caller if isinstance(caller, Caller) else OPEN


async def deny_upgrade(ws: WebSocket, refusal: Refusal) -> None:
    """Refuse a WebSocket before the upgrade: HTTP 403 with the refusal as a JSON body where the server supports
    it (the ASGI denial-response extension), else a plain 403 (a close before accepting). Counted by code."""
    hub = getattr(ws.app.state, "hub", None)
    if hub is not None:
        hub.deps.metrics.errors.labels(refusal.code).inc()
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(refusal.body(), status_code=403))
    else:
        await ws.close(code=refusal.close_code, reason=refusal.message[:120])


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or []}


async def _answer(scope: dict[str, Any], send: Any, refusal: Refusal, status: int) -> None:
    body = json.dumps(refusal.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    prefix = "websocket." if scope["type"] == "websocket" else ""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": refusal.close_code})  # answered 403 by the server
        return
    await send({"type": f"{prefix}http.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}http.response.body", "body": body})


class AccessMiddleware:
    """Origin allow-list for upgrades and ``/v1/``; credentials and request rates for ``/v1/`` (see above)."""

    def __init__(self, app: Any, hub: SessionHub, allowed_origins: list[str], *,
                 self_authenticating: tuple[str, ...] = (), signed: tuple[str, ...] = ()):
        self.app = app
        self.hub = hub
        self.origins = OriginPolicy(allowed_origins)
        self.self_authenticating = self_authenticating
        self.signed = signed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        if kind not in ("http", "websocket") or (kind == "http" and not path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        if not self.origins.allows(origin, headers.get("host")):
            self.hub.deps.metrics.errors.labels("forbidden_origin").inc()
            await _answer(scope, send, forbidden_origin(origin or ""), 403)
            return
        if kind == "websocket" or path.startswith(self.self_authenticating):
            await self.app(scope, receive, send)
            return
        refusal = self._admit(scope, headers, path)
        if refusal is not None:
            self.hub.deps.metrics.errors.labels(refusal.code).inc()
            await _answer(scope, send, refusal, refusal.status)
            return
        await self.app(scope, receive, send)

    def _admit(self, scope: dict[str, Any], headers: dict[str, str], path: str) -> Refusal | None:
        """Store the request's Caller in its state, or say why it is refused."""
        client = scope["client"][0] if scope.get("client") else None
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        caller = self.hub.authenticate(presented_credential(headers, query), client=client)
        admin_only = path.startswith(ADMIN_ONLY)
        if admin_only and isinstance(caller, Caller) and caller.role == "token":
            caller = unauthorized("this endpoint takes an API key, not a caller token")
        if isinstance(caller, Refusal):
            if admin_only and path.startswith(self.signed) and not self.hub.api_keys:
                return None  # the sender's signature is the credential; its endpoint checks it
            return self.hub.limits.request(None, client) or caller
        limited = self.hub.limits.request(caller, client)
        if limited is not None:
            return limited
        scope.setdefault("state", {})["caller"] = caller
        return None
