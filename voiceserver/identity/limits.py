"""Per-token and per-IP limits: concurrent sessions, new sessions per minute, REST requests per minute.

Only callers with a token (per token and per IP) and requests that bring no valid credential (per IP) are limited:
an admin key, a vouched-for phone call and an open server are not (the server's own ``max_sessions`` still holds).
Rates are token buckets: N per minute with a burst of N, refilled continuously. Memory is bounded: a bucket idle for
a minute is full again and is dropped, and at most ``max_keys`` buckets are kept per rate (the least recently used
goes first: that caller starts again with a full bucket). Concurrent counts exist only while sessions are open.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .caller import Caller, Refusal

WINDOW_S = 60.0


def too_many_sessions(message: str) -> Refusal:
    return Refusal("too_many_sessions", message, 429, 1013)


def rate_limited(message: str) -> Refusal:
    return Refusal("rate_limited", message, 429, 1013)


class RateBuckets:
    """``per_minute`` events per key and minute (0: no limit), bounded in memory (see the module docstring)."""

    def __init__(self, per_minute: int, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated), by use

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> bool:
        """Count one event for ``key``; False when its bucket is empty (the event is refused and not counted)."""
        if self.per_minute <= 0:
            return True
        now = self.clock()
        self._expire(now)
        capacity = float(self.per_minute)
        tokens, updated = self._buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * capacity / WINDOW_S)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def _expire(self, now: float) -> None:
        """Drop buckets idle for a whole window: they are full again, the same as absent."""
        buckets = self._buckets
        while buckets:
            key, (_, updated) = next(iter(buckets.items()))
            if now - updated < WINDOW_S:
                return
            del buckets[key]


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The numbers (settings.LimitsConfig); 0 turns one off."""

    token_max_sessions: int = 4
    ip_max_sessions: int = 20
    token_sessions_per_minute: int = 20
    ip_sessions_per_minute: int = 60
    token_requests_per_minute: int = 120
    ip_requests_per_minute: int = 600
    max_tracked_keys: int = 100_000

    @classmethod
    def from_settings(cls, limits: object) -> LimitPolicy:
        return cls(**{name: getattr(limits, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """The limit keys a session was counted under, handed back when it ends."""

    keys: tuple[str, ...] = ()


NO_TICKET = SessionTicket()


class CallerLimits:
    """The server's limit state (one per server, no globals)."""

    def __init__(self, policy: LimitPolicy | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.policy = policy = policy or LimitPolicy()
        bounded = {"max_keys": policy.max_tracked_keys, "clock": clock}
        self._session_rate = {"token": RateBuckets(policy.token_sessions_per_minute, **bounded),
                              "ip": RateBuckets(policy.ip_sessions_per_minute, **bounded)}
        self._request_rate = {"token": RateBuckets(policy.token_requests_per_minute, **bounded),
                              "ip": RateBuckets(policy.ip_requests_per_minute, **bounded)}
        self._open: dict[str, int] = {}

    @staticmethod
    def _keys(caller: Caller | None, client: str | None) -> dict[str, str]:
        """The limit keys of a caller: its token and its IP; only the IP for a request with no valid credential
        (``caller`` None); none for an admin, an open server or a vouched-for call."""
        if caller is not None and caller.role != "token":
            return {}
        keys = {}
        if caller is not None and caller.key:
            keys["token"] = f"token:{caller.key}"
        ip = caller.client if caller is not None else client
        if ip:
            keys["ip"] = f"ip:{ip}"
        return keys

    def open_session(self, caller: Caller) -> SessionTicket | Refusal:
        """Count a new session of ``caller``, or say why it may not have one."""
        keys = self._keys(caller, None)
        if not keys:
            return NO_TICKET
        ceilings = {"token": self.policy.token_max_sessions, "ip": self.policy.ip_max_sessions}
        for kind, key in keys.items():
            ceiling = ceilings[kind]
            if ceiling and self._open.get(key, 0) >= ceiling:
                return too_many_sessions(f"this {kind} already has {ceiling} open sessions; end one first")
        for kind, key in keys.items():
            if not self._session_rate[kind].take(key):
                return rate_limited(f"too many new sessions for this {kind}; try again in a minute")
        for key in keys.values():
            self._open[key] = self._open.get(key, 0) + 1
        return SessionTicket(tuple(keys.values()))

    def close_session(self, ticket: SessionTicket) -> None:
        for key in ticket.keys:
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)

    def request(self, caller: Caller | None, client: str | None) -> Refusal | None:
        """Count one REST request (``caller`` None: one without a valid credential); a Refusal when over a rate."""
        for kind, key in self._keys(caller, client).items():
            if not self._request_rate[kind].take(key):
                return rate_limited(f"too many requests for this {kind}; try again in a minute")
        return None

    def open_sessions(self, key: str) -> int:
        """Sessions open under a limit key (``token:<fingerprint>`` or ``ip:<address>``), for tests and metrics."""
        return self._open.get(key, 0)
