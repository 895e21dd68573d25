"""``GET /v1/debug/stats``: what a soak test samples from inside the process, served only with ``debug_stats`` on.

The figures that cannot be read from outside the process (asyncio tasks, sessions and their outboxes, threads) plus
the cheap ones a script would otherwise read from /proc (RSS, open file descriptors), so one request gives a
consistent sample. It sits under ``/v1/`` so configured API keys protect it like the REST API.

``?objects=1`` adds the 25 most numerous Python object types, the tasks by coroutine and the file descriptors by
kind (a walk of every object: tens of milliseconds on a
busy server, for finding what a soak's RSS growth is made of); with ``PYTHONTRACEMALLOC`` set, it also adds the
25 source lines holding the most memory.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .malloc_arenas import heap_stats, rss_bytes

if TYPE_CHECKING:
    from .composition import VoiceServer


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
        "rss_bytes": rss_bytes(),
        "open_fds": _open_fds(),
        "threads": threading.active_count(),
        "asyncio_tasks": len(asyncio.all_tasks()),
        "sessions": len(sessions),
        "sessions_by_gateway": dict(Counter(s.gateway for s in sessions)),
        "outbox_events": sum(outboxes),
        "outbox_max": max(outboxes, default=0),
        "gc_counts": list(gc.get_count()),
        "malloc": heap_stats(),
        "python_blocks": sys.getallocatedblocks(),
        # The bounded caches a store fills as callers talk (part of RSS until each reaches its bound).
        "stores": {uri: {"lancedb_cache_bytes": getattr(store, "cache_size_bytes", None),
                         "cached_rows": len(cache) if (cache := getattr(store, "cache", None)) is not None else None}
                   for uri, store in server.stores().items()},
    }


def _task_kinds(top: int) -> dict[str, int]:
    """The live asyncio tasks counted by the coroutine they run (what a growing task count is made of)."""
    kinds = Counter(getattr(task.get_coro(), "__qualname__", type(task.get_coro()).__name__)
                    for task in asyncio.all_tasks())
    return dict(kinds.most_common(top))


def _fd_kinds() -> dict[str, int]:
    """The open file descriptors counted by kind: socket, pipe, anon_inode:[eventfd], or the file's directory."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return {}
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed between the listing and the read
            continue
        kinds[target.split(":[")[0] if ":[" in target else os.path.dirname(target) or target] += 1
    return dict(kinds.most_common())


def _untracked_kib_by_holder(top: int) -> dict[str, int]:
    """KiB of the objects the collector does not track (bytes, str, numbers, ...: the type counts miss them), by
    the type of the object that refers to them. Audio or samples kept by mistake show up here."""
    held: Counter[str] = Counter()
    for holder in gc.get_objects():
        for item in gc.get_referents(holder):
            if not gc.is_tracked(item):
                held[type(holder).__qualname__] += sys.getsizeof(item)
    return {name: size // 1024 for name, size in held.most_common(top)}


def object_stats(top: int = 25) -> dict[str, Any]:
    """The most numerous object types, the tasks and file descriptors by kind, what holds the untracked objects,
    and, when tracemalloc traces, the source lines holding the most memory. Runs a full collection first."""
    # Collect first: garbage in reference cycles waits for a full collection, and counted as alive it reads like a
    # leak (a soak counted 1,900 more Turn objects after 16 minutes; after a collection they were gone).
    unreachable = gc.collect()
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    out: dict[str, Any] = {"gc_unreachable": unreachable, "object_types": dict(counts.most_common(top)),
                           "asyncio_tasks_by_coroutine": _task_kinds(top), "open_fds_by_kind": _fd_kinds(),
                           "untracked_kib_by_holder": _untracked_kib_by_holder(top)}
    if tracemalloc.is_tracing():
        out["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        lines = tracemalloc.take_snapshot().statistics("lineno")[:top]
        out["top_allocations"] = [{"where": str(s.traceback[0]), "bytes": s.size, "blocks": s.count} for s in lines]
    return out


def debug_routes(server: VoiceServer) -> list[Route]:
    """The debug routes, or none when ``debug_stats`` is off (the default)."""
    if not server.settings.debug_stats:
        return []

    async def stats(request: Request) -> Response:
        body = process_stats(server)
        if request.query_params.get("objects") == "1":
            body.update(object_stats())
        return JSONResponse(body)

    return [Route("/v1/debug/stats", stats, methods=["GET"])]
