"""Transports for scripts/bench_turn.py: each module here speaks one wire format to a running server.

A transport module exposes ``NAME`` and ``async def ask(port, audio, end_ms, *, resource) -> TurnTiming``: stream the
16 kHz pcm16 ``audio`` (a spoken question, real time, 20 ms frames, then silence until the reply) and return what the
client measured. ``end_ms`` is the stream position where the voice ends; the client voice-to-voice runs from the
moment that position was sent to the first reply audio byte received.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TurnTiming:
    transcript: str | None = None
    reply_text: str = ""
    client_voice_to_voice_ms: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the server's metrics event, when the transport has one
    errors: list[Any] = field(default_factory=list)


def load(name: str) -> Any:
    """The transport module ``name`` (native, webrtc, twilio, realtime...)."""
    try:
        return importlib.import_module(f"bench_transports.{name}")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"unknown transport {name!r} ({exc})") from None
