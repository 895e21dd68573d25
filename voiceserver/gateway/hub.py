"""The sessions a server has open: the session limit, lookup, and telling every caller on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from ..logs import get_logger
from ..server.auth import key_matches
from ..session import Session, SessionDeps
from ..session.events import SessionConfig

log = get_logger("GATEWAY")


class SessionHub:
    """Creates sessions for gateways, enforces ``max_sessions``, closes them all on shutdown."""

    def __init__(self, deps: SessionDeps, *, max_sessions: int, api_keys: list[str] | None = None):
        self.deps = deps
        self.max_sessions = max_sessions
        self.api_keys = [k for k in (api_keys or []) if k]
        self.sessions: dict[str, Session] = {}
        self.shutting_down = False

    def authorize(self, presented: str | None) -> bool:
        """True when no keys are configured, or ``presented`` matches one (constant-time)."""
        return not self.api_keys or key_matches(presented, self.api_keys)

    def open(self, gateway: str, *, defaults: SessionConfig | None = None,
             agents: dict[str, Any] | None = None) -> Session | None:
        """A new session, or None when the server is full or shutting down (see :meth:`refusal`). Every gateway
        opens its sessions here, so they all count against the one ``max_sessions`` limit. ``agents``: answerers
        (AgentPorts) this session uses instead of the server's, e.g. a gateway's own wrapper around one of them."""
        if self.shutting_down or len(self.sessions) >= self.max_sessions:
            return None
        deps = self.deps
        if agents:
            deps = dataclasses.replace(deps, agents=dict(agents),
                                       default_agent=deps.default_agent if deps.default_agent in agents
                                       else next(iter(agents)))
        session = Session(deps, gateway=gateway, defaults=defaults)
        self.sessions[session.id] = session
        return session

    def refusal(self) -> tuple[int, str, str]:
        """Why :meth:`open` refused: (WebSocket close code, error code, message)."""
        if self.shutting_down:
            return 1001, "server_shutdown", "server shutting down"
        return 1013, "server_full", "server full, try again later"

    def release(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Tell every open session the server is going away, end their turns (keeping what was heard)."""
        self.shutting_down = True
        sessions = list(self.sessions.values())
        if sessions:
            log.info(f"closing {len(sessions)} open sessions")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(s.close("server_shutdown") for s in sessions), return_exceptions=True)
