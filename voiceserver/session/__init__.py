"""One caller's conversation: the only code that knows the order of the stages (VAD -> STT -> agent -> TTS).

A gateway drives a :class:`Session` with inbound events (:meth:`Session.handle`) and drains its outbox; see
docs/architecture.md, "Adding a gateway".
"""

from .session import Session, SessionDeps

__all__ = ["Session", "SessionDeps"]
