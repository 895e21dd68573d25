"""The browser Origin allow-list (``auth.allowed_origins``), pure.

Browsers send ``Origin`` on every WebSocket upgrade and on every cross-origin or non-GET request; other clients
(the Python client, the openai SDK, Twilio) send none. A request without an Origin is therefore not a browser page
acting on its own and is let through (credentials still apply); one with an Origin must match an entry:

- ``self``: the page was served by this server (the Origin's host and port equal the request's Host);
- ``localhost``: any port of ``localhost``, ``127.0.0.1`` or ``[::1]`` over http or https (local development);
- ``*``: any origin;
- ``scheme://host[:port]``: exactly that origin (compared case-insensitively, default ports written or not).

``null`` (a sandboxed frame, a ``file://`` page) matches only ``*``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .caller import Refusal

ORIGIN_PATTERN = re.compile(r"(self|localhost|\*|https?://[^/?#\s]+)", re.IGNORECASE)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def forbidden_origin(origin: str) -> Refusal:
    return Refusal("forbidden_origin", f"origin {origin[:80]!r} is not in auth.allowed_origins", 403, 1008)


def _host_port(netloc: str, scheme: str) -> str:
    """``host:port`` in lower case with the scheme's default port written out."""
    netloc = netloc.lower().rsplit("@", 1)[-1]
    if netloc.startswith("["):
        host, _, rest = netloc.partition("]")
        host += "]"
        port = rest.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    return f"{host}:{port or _DEFAULT_PORTS.get(scheme, '')}"


def normalise_origin(origin: str) -> str | None:
    """``scheme://host:port`` of an Origin value, or None when it is not an http(s) origin."""
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return None
    return f"{scheme}://{_host_port(parts.netloc, scheme)}"


class OriginPolicy:
    """``allows(origin, host)``: may a page from ``origin`` use this server, reached at ``host`` (the Host header)?"""

    def __init__(self, allowed: list[str]):
        self.any = "*" in allowed
        self.same_origin = any(a.lower() == "self" for a in allowed)
        self.localhost = any(a.lower() == "localhost" for a in allowed)
        self.exact = {n for a in allowed if (n := normalise_origin(a)) is not None}

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any:
            return True
        normal = normalise_origin(origin)
        if normal is None:
            return False
        if normal in self.exact:
            return True
        scheme, _, host_port = normal.partition("://")
        if self.localhost and host_port.rsplit(":", 1)[0] in LOOPBACK_HOSTS:
            return True
        if self.same_origin and host:
            # The Host header carries no scheme: http and https pages of the same host:port are the same origin
            # here (a TLS proxy in front terminates https and forwards http).
            reached = _host_port(host.strip(), scheme)
            return host_port == reached
        return False
