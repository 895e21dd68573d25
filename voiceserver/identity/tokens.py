"""Caller tokens: HMAC-SHA256-signed claims naming one caller (a resource), an expiry, optionally a thread and an agent.

Format (docs/security.md)::

    base64url(payload) "." base64url(mac)            no padding, at most MAX_TOKEN_CHARS characters
    payload = compact JSON {"v": 1, "resource": R, "iat": T0, "exp": T1, "thread"?: T, "agent"?: A}
    mac     = HMAC-SHA256(secret, "voiceserver-token." + base64url(payload))

``iat`` and ``exp`` are Unix seconds. The MAC covers the encoded payload exactly as sent, so nothing is
re-serialised before checking it, and the label keeps these MACs apart from any other use of the secret (Twilio stream
tokens are keyed differently). Verification compares MACs in constant time against the current secret and every
previous one (rotation), and only then reads the payload. A token is valid from ``iat - skew`` to ``exp + skew``.
Pure functions: no clock, no settings; the caller passes ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from ..ids import InvalidIdError, validate_id

TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 2048
MAX_AGENT_CHARS = 128
_LABEL = b"voiceserver-token."


class TokenError(ValueError):
    """A token that cannot be used. ``code`` is what clients see: ``token_expired`` for a token that was valid
    (refresh it), ``unauthorized`` for anything else (malformed, a bad signature, another server's secret)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says."""

    resource: str
    issued_at: int
    expires_at: int
    thread: str | None = None
    agent: str | None = None

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": TOKEN_VERSION, "resource": self.resource, "iat": self.issued_at,
                                "exp": self.expires_at}
        if self.thread is not None:
            body["thread"] = self.thread
        if self.agent is not None:
            body["agent"] = self.agent
        return body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url: no padding, and only the one canonical spelling of the bytes (the unused low bits of the
    last character could otherwise spell one MAC four ways: four tokens, four sets of per-token limits)."""
    if not text or "=" in text:
        raise ValueError("empty or padded")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _mac(secret: str, encoded_payload: str) -> bytes:
    return hmac.new(secret.encode(), _LABEL + encoded_payload.encode("ascii"), hashlib.sha256).digest()


def issue_token(secret: str, resource: str, *, now: float, ttl_s: float, thread: str | None = None,
                agent: str | None = None) -> str:
    """A token for ``resource`` valid ``ttl_s`` seconds from ``now``. Raises ValueError on a bad id or agent name,
    an empty secret or a non-positive ttl."""
    if not secret:
        raise ValueError("a token needs a secret")
    if ttl_s <= 0:
        raise ValueError("the ttl must be positive")
    claims = TokenClaims(resource=validate_id(resource, "resource"), issued_at=int(now),
                         expires_at=int(now + ttl_s), thread=validate_id(thread, "thread") if thread else None,
                         agent=agent_name(agent) if agent else None)
    encoded = _b64(json.dumps(claims.payload(), separators=(",", ":"), sort_keys=True).encode())
    return f"{encoded}.{_b64(_mac(secret, encoded))}"


def agent_name(value: object) -> str:
    """``value`` if it can name an agent (1-128 printable characters; agent names are free text, not ids)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_AGENT_CHARS or not value.isprintable():
        raise ValueError(f"invalid agent name {str(value)[:40]!r}: use 1-{MAX_AGENT_CHARS} printable characters")
    return value


def looks_like_token(presented: str) -> bool:
    """True when ``presented`` has a token's shape (two base64url parts): API keys and tokens share a header."""
    head, sep, tail = presented.partition(".")
    return bool(sep and head and tail and "." not in tail)


def verify_token(token: str, secrets: list[str], *, now: float, skew_s: float = 30.0) -> TokenClaims:
    """The claims of ``token`` if one of ``secrets`` signed it and it is valid at ``now`` (give or take
    ``skew_s``); raises TokenError otherwise."""
    if not secrets:
        raise TokenError("unauthorized", "this server accepts no caller tokens (no auth.token_secret)")
    if not token or len(token) > MAX_TOKEN_CHARS or not looks_like_token(token):
        raise TokenError("unauthorized", "malformed token")
    encoded, _, mac_text = token.partition(".")
    try:
        presented = _unb64(mac_text)
        encoded.encode("ascii")
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise TokenError("unauthorized", "malformed token") from None
    # Every secret is tried (no early exit), so the time taken says nothing about which one matched.
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(presented, _mac(secret, encoded))
    if not matched:
        raise TokenError("unauthorized", "the token's signature does not match")
    claims = _claims(encoded)
    if now > claims.expires_at + skew_s:
        raise TokenError("token_expired", "the token has expired")
    if now < claims.issued_at - skew_s:
        raise TokenError("unauthorized", "the token is not valid yet (issued in the future: check the clocks)")
    return claims


def _claims(encoded: str) -> TokenClaims:
    """The payload of a token whose MAC was verified (so a bad one here is a signing bug, still refused)."""
    try:
        body = json.loads(_unb64(encoded))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise TokenError("unauthorized", "malformed token payload") from None
    if not isinstance(body, dict) or body.get("v") != TOKEN_VERSION:
        raise TokenError("unauthorized", f"unsupported token version (this server reads v{TOKEN_VERSION})")
    iat, exp = body.get("iat"), body.get("exp")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (iat, exp)):
        raise TokenError("unauthorized", "malformed token payload: iat and exp must be integers")
    try:
        resource = validate_id(body.get("resource"), "resource")
        thread = validate_id(body["thread"], "thread") if body.get("thread") is not None else None
        agent = agent_name(body["agent"]) if body.get("agent") is not None else None
    except (InvalidIdError, ValueError) as exc:
        raise TokenError("unauthorized", f"malformed token payload: {exc}") from None
    return TokenClaims(resource=resource, issued_at=iat, expires_at=exp, thread=thread, agent=agent)


def token_fingerprint(token: str) -> str:
    """A short, stable name for a token (limits, logs) that reveals nothing usable: never log the token itself."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]
