"""The sessions a server has open, and who may open them.

The hub is the one place a presented credential becomes a :class:`~voiceserver.identity.Caller`
(:meth:`SessionHub.authenticate`): every gateway and the REST middleware ask it. :meth:`SessionHub.open` then binds
the session to that caller (a token's resource, thread and agent; another one named in the URL, the offer or the
defaults is ``forbidden_resource``), applies the per-caller limits and the one ``max_sessions`` limit, and tells
the session who its caller is, so a later ``session.start`` cannot change it either. At shutdown it tells every
caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from ..identity import Authenticator, Caller, CallerLimits, Refusal, SessionTicket, forbidden_resource
from ..logs import get_logger
from ..session import Session, SessionDeps
from ..session.events import SessionConfig

log = get_logger("GATEWAY")

# WebSocket close codes of the reasons a session ends with; anything else is a normal close (1000).
CLOSE_CODES = {"server_shutdown": 1001, "forbidden_resource": 1008, "frame_too_large": 1009}


def close_code(reason: str) -> int:
    """The WebSocket close code for a session that ended with ``reason``."""
    return CLOSE_CODES.get(reason, 1000)


def server_full() -> Refusal:
    return Refusal("server_full", "server full, try again later", 503, 1013)


def server_shutdown() -> Refusal:
    return Refusal("server_shutdown", "server shutting down", 503, 1001)


class SessionHub:
    """Creates sessions for gateways, enforces the limits, closes them all on shutdown."""

    def __init__(self, deps: SessionDeps, *, max_sessions: int, api_keys: list[str] | None = None,
                 authenticator: Authenticator | None = None, limits: CallerLimits | None = None):
        self.deps = deps
        self.max_sessions = max_sessions
        self.authenticator = authenticator or Authenticator(api_keys)
        self.limits = limits or CallerLimits()
        self.sessions: dict[str, Session] = {}
        self._tickets: dict[str, SessionTicket] = {}
        self.shutting_down = False

    @property
    def api_keys(self) -> list[str]:
        return self.authenticator.api_keys

    @property
    def open_access(self) -> bool:
        """No keys and no token secret: every caller may act for any resource."""
        return self.authenticator.open

    def authenticate(self, presented: str | None, *, client: str | None = None) -> Caller | Refusal:
        """The caller a presented credential (an API key or a caller token) names, or why it is refused
        (``unauthorized``, ``token_expired``). ``client``: the peer's IP address, for the per-IP limits."""
        return self.authenticator.identify(presented, client=client)

    def authorize(self, presented: str | None, *, client: str | None = None) -> Caller | None:
        """:meth:`authenticate` for code that only needs yes or no: the Caller, or None when refused."""
        caller = self.authenticate(presented, client=client)
        return caller if isinstance(caller, Caller) else None

    def open(self, gateway: str, *, caller: Caller, defaults: SessionConfig | None = None,
             agents: dict[str, Any] | None = None) -> Session | Refusal:
        """A new session for ``caller``, or why not. Every gateway opens its sessions here, so they all count
        against the one ``max_sessions`` limit and the caller's own limits. ``defaults``: what the transport
        knows before any message (ids from the URL or the offer, audio formats); a bound caller's ids fill them,
        and naming others is refused. ``agents``: answerers (AgentPorts) this session uses instead of the
        server's, e.g. a gateway's own wrapper around one of them."""
        if self.shutting_down:
            return server_shutdown()
        config = dataclasses.replace(defaults) if defaults is not None else SessionConfig()
        if caller.bound:
            problem = caller.conflict(config.resource, config.thread, config.agent)
            if problem is not None:
                self.deps.metrics.errors.labels("forbidden_resource").inc()
                log.warning("session refused: forbidden_resource",
                            fields={**caller.describe(), "client": caller.client, "gateway": gateway,
                                    "asked": config.resource})
                return forbidden_resource(problem)
            for name in ("resource", "thread", "agent"):
                if getattr(caller, name) is not None:
                    setattr(config, name, getattr(caller, name))
        if len(self.sessions) >= self.max_sessions:
            return server_full()
        ticket = self.limits.open_session(caller)
        if isinstance(ticket, Refusal):
            self.deps.metrics.errors.labels(ticket.code).inc()
            return ticket
        deps = self.deps
        if agents:
            deps = dataclasses.replace(deps, agents=dict(agents),
                                       default_agent=deps.default_agent if deps.default_agent in agents
                                       else next(iter(agents)))
        session = Session(deps, gateway=gateway, defaults=config, caller=caller)
        self.sessions[session.id] = session
        self._tickets[session.id] = ticket
        return session

    def release(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        ticket = self._tickets.pop(session.id, None)
        if ticket is not None:
            self.limits.close_session(ticket)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Tell every open session the server is going away, end their turns (keeping what was heard)."""
        self.shutting_down = True
        sessions = list(self.sessions.values())
        if sessions:
            log.info(f"closing {len(sessions)} open sessions")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(s.close("server_shutdown") for s in sessions), return_exceptions=True)
