"""Who a credential says the caller is (:class:`Caller`), why a request is refused (:class:`Refusal`), and the
:class:`Authenticator` that turns a presented credential into one or the other.

Roles:

- ``open``: the server has no API keys and no token secret (local use); anyone may act for any resource.
- ``admin``: an API key (``VOICESERVER_API_KEYS``); may act for any resource, no per-caller limits.
- ``token``: a caller token (identity/tokens.py); the session's resource is the token's (and its thread and agent
  when it names them); limited per token and per IP.
- ``call``: a phone call a telephony gateway vouches for (Twilio's signed stream token): bound to the call's
  identity like a token, but not limited per IP (every call arrives from the provider's addresses).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .tokens import TokenError, looks_like_token, token_fingerprint, verify_token

Role = Literal["open", "admin", "token", "call"]
BOUND_FIELDS = ("resource", "thread", "agent")


def key_matches(presented: str | None, keys: list[str]) -> bool:
    """True when ``presented`` equals one of ``keys`` (constant-time comparison, every key tried)."""
    if not presented:
        return False
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request or a session is refused: a code and a message for the client, the HTTP status and the
    WebSocket close code that carry it."""

    code: str
    message: str
    status: int
    close_code: int

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def unauthorized(message: str = "missing or invalid API key or token", code: str = "unauthorized") -> Refusal:
    return Refusal(code, message, 401, 1008)


def forbidden_resource(message: str) -> Refusal:
    return Refusal("forbidden_resource", message, 403, 1008)


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity behind one connection or request. ``resource`` / ``thread`` / ``agent`` are bound (fixed) for
    the ``token`` and ``call`` roles when set; ``key`` names a token for its limits (a fingerprint, never the token);
    ``client`` is the peer's IP address."""

    role: Role
    resource: str | None = None
    thread: str | None = None
    agent: str | None = None
    key: str | None = None
    client: str | None = None
    expires_at: int | None = None

    @property
    def bound(self) -> bool:
        """True when the credential fixes who this is (a token or a vouched-for call)."""
        return self.role in ("token", "call")

    @property
    def unrestricted(self) -> bool:
        """True when this caller may act for any resource (an admin key, or an open server)."""
        return self.role in ("open", "admin")

    def conflict(self, resource: str | None, thread: str | None = None, agent: str | None = None) -> str | None:
        """Why a request naming these ids is not this caller's to make (None when it is). An id the request leaves
        out is never a conflict: it takes the bound value."""
        if not self.bound:
            return None
        for name, asked in zip(BOUND_FIELDS, (resource, thread, agent), strict=True):
            pinned = getattr(self, name)
            if asked is not None and pinned is not None and asked != pinned:
                return f"this credential is for another {name}; it may not name {name} {asked[:60]!r}"
        return None

    def owns(self, resource: str | None) -> bool:
        """True when data owned by ``resource`` (None: nobody's) is this caller's to see."""
        return self.unrestricted or (self.resource is not None and resource == self.resource)

    def describe(self) -> dict[str, str | None]:
        """What may be logged about this caller: the role, the resource, the token's fingerprint."""
        return {"role": self.role, "resource": self.resource, "token": self.key}


OPEN = Caller("open")
ADMIN = Caller("admin")


def vouched_call(resource: str | None, thread: str | None, agent: str | None) -> Caller:
    """A telephony call whose identity its gateway verified (see the module docstring)."""
    return Caller("call", resource=resource, thread=thread, agent=agent)


class Authenticator:
    """API keys and token secrets -> a Caller for a presented credential, or a Refusal.

    ``token_secrets``: the current secret first, then previous ones still accepted (rotation). ``clock``: Unix
    seconds (tokens carry wall-clock expiries)."""

    def __init__(self, api_keys: list[str] | None = None, token_secrets: list[str] | None = None, *,
                 skew_s: float = 30.0, clock: Callable[[], float] = time.time):
        self.api_keys = [k for k in (api_keys or []) if k]
        self.token_secrets = [s for s in (token_secrets or []) if s]
        self.skew_s = skew_s
        self.clock = clock

    @property
    def open(self) -> bool:
        """No keys and no secret: every caller is let in and may act for any resource (local use)."""
        return not self.api_keys and not self.token_secrets

    def identify(self, presented: str | None, *, client: str | None = None) -> Caller | Refusal:
        if self.open:
            return Caller("open", client=client)
        if presented and key_matches(presented, self.api_keys):
            return Caller("admin", client=client)
        if presented and self.token_secrets and looks_like_token(presented):
            try:
                claims = verify_token(presented, self.token_secrets, now=self.clock(), skew_s=self.skew_s)
            except TokenError as exc:
                return unauthorized(exc.message, exc.code)
            return Caller("token", resource=claims.resource, thread=claims.thread, agent=claims.agent,
                          key=token_fingerprint(presented), client=client, expires_at=claims.expires_at)
        return unauthorized()
