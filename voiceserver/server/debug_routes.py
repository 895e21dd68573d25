"""``GET /v1/debug/stats``: what a soak test samples from inside the process, served only with ``debug_stats`` on.

The figures that cannot be read from outside the process (asyncio tasks, sessions and their outboxes, threads) plus
the cheap ones a script would otherwise read from /proc (RSS, open file descriptors), so one request gives a
consistent sample. It sits under ``/v1/`` so configured API keys protect it like the REST API.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from .composition import VoiceServer


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak instead of the current size
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def process_stats(server: VoiceServer) -> dict[str, Any]:
    """One sample of the process and its sessions (cheap: no object walk)."""
    sessions = list(server.hub.sessions.values()) if server.hub is not None else []
    outboxes = [len(s.outbox) for s in sessions]
    return {
        "rss_bytes": _rss_bytes(),
        "open_fds": _open_fds(),
        "threads": threading.active_count(),
        "asyncio_tasks": len(asyncio.all_tasks()),
        "sessions": len(sessions),
        "sessions_by_gateway": dict(Counter(s.gateway for s in sessions)),
        "outbox_events": sum(outboxes),
        "outbox_max": max(outboxes, default=0),
        "gc_counts": list(gc.get_count()),
    }


def debug_routes(server: VoiceServer) -> list[Route]:
    """The debug routes, or none when ``debug_stats`` is off (the default)."""
    if not server.settings.debug_stats:
        return []

    async def stats(request: Request) -> Response:
        return JSONResponse(process_stats(server))

    return [Route("/v1/debug/stats", stats, methods=["GET"])]
