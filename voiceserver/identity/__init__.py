"""Caller identity: tokens, the credential -> Caller step, per-caller limits, the browser Origin allow-list.

Pure parts with no I/O. The session hub (gateway/hub.py) is the one place a presented credential becomes a
:class:`Caller`; the HTTP middleware (server/auth.py) asks the hub too. docs/security.md describes the model.
"""

from .caller import (
    ADMIN,
    OPEN,
    Authenticator,
    Caller,
    Refusal,
    forbidden_resource,
    key_matches,
    unauthorized,
    vouched_call,
)
from .limits import CallerLimits, LimitPolicy, RateBuckets, SessionTicket, rate_limited, too_many_sessions
from .origins import OriginPolicy, forbidden_origin
from .tokens import TokenClaims, TokenError, issue_token, token_fingerprint, verify_token

__all__ = [
    "ADMIN", "OPEN", "Authenticator", "Caller", "CallerLimits", "LimitPolicy", "OriginPolicy", "RateBuckets",
    "Refusal", "SessionTicket", "TokenClaims", "TokenError", "forbidden_origin", "forbidden_resource",
    "issue_token", "key_matches", "rate_limited", "token_fingerprint", "too_many_sessions", "unauthorized",
    "verify_token", "vouched_call",
]
