"""API-key protection for the REST API (memory, workflows) when keys are configured.

The voice WebSocket checks keys itself (gateway/hub.py); this pure-ASGI middleware covers every HTTP path under
``/v1/``. Health, readiness, metrics and the page stay open so probes and scrapers need no secret.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

# Endpoints that check credentials themselves through the session hub (like the voice WebSocket): WebRTC signalling
# also accepts the body's "token", which this middleware cannot see.
SELF_AUTHENTICATING = ("/v1/webrtc/",)


def key_matches(presented: str | None, keys: list[str]) -> bool:
    """True when ``presented`` equals one of ``keys`` (constant-time comparison)."""
    if not presented:
        return False
    candidate = presented.encode()
    return any(hmac.compare_digest(candidate, key.encode()) for key in keys)


class ApiKeyMiddleware:
    """Answer 401 to ``/v1/`` HTTP requests without ``Authorization: Bearer <key>`` (or ``?api_key=``)."""

    def __init__(self, app: Any, keys: list[str]):
        self.app = app
        self.keys = [k for k in keys if k]

    def _authorized(self, scope: dict[str, Any]) -> bool:
        presented = ""
        for name, value in scope.get("headers") or []:
            if name == b"authorization" and value.lower().startswith(b"bearer "):
                presented = value[7:].decode("latin-1").strip()
        if not presented:
            from urllib.parse import parse_qs

            presented = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key") or [""])[0]
        return key_matches(presented, self.keys)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (scope["type"] == "http" and self.keys and path.startswith("/v1/")
                and not path.startswith(SELF_AUTHENTICATING) and not self._authorized(scope)):
            body = json.dumps({"error": {"code": "unauthorized", "message": "missing or invalid API key"}}).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
