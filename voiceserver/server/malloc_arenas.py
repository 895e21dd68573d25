"""glibc's malloc: cap its arenas for the whole process before its native threads start, read its heap, and give
its free pages back to the system now and then.

glibc gives each thread that meets a contended allocation an arena of its own, up to eight per core, and memory
freed into one arena is reused by that arena only. A served process has many native threads (LanceDB's Rust
runtime, onnxruntime, CTranslate2, llama.cpp, asyncio's worker threads), so freed memory piles up in arenas that
the next allocation does not look at. In-process, 4,000 LanceDB appends grew RSS by 48 MiB with glibc's default
and by 22 MiB with two arenas, of which 7 MiB was LanceDB's own bounded caches (/tmp loops, see
docs/architecture.md). ``MALLOC_ARENA_MAX`` in the environment, when set, wins: it is read at process start.

glibc returns freed memory to the system only from the top of a heap; free pages between live blocks stay in RSS.
In a 20-minute soak of the scripted server that free memory grew from 16 to 37 MiB, most of its RSS growth.
:func:`trim_heap_every` calls ``malloc_trim(0)`` (which also releases those inner pages) every
``malloc_trim_interval_s``, in a worker thread; it holds each arena's lock while it walks it, a few milliseconds for
a heap of a few hundred MiB, so the event loop may wait that long for an allocation once per interval.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import resource
import sys
import time
from typing import Any

from ..logs import get_logger

log = get_logger("Server")

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


@functools.cache
def _libc_function(name: str) -> Any:
    """A function of the process's C library, or None when it has none of that name (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_stats() -> dict[str, int] | None:
    """glibc's heap, summed over its arenas (mallinfo2): what native code holds (in use), what is freed but kept
    (free), and the large blocks mapped on their own (mmap). None on other C libraries."""
    mallinfo2 = _libc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"heap_bytes": info.arena, "in_use_bytes": info.uordblks, "free_bytes": info.fordblks,
            "mmap_bytes": info.hblkhd}


def limit_malloc_arenas(count: int) -> bool:
    """Cap the arenas at ``count`` (0: leave glibc's default). True when the cap was set; False on other C
    libraries (musl, macOS), when ``MALLOC_ARENA_MAX`` is set in the environment, or for 0."""
    if count <= 0 or not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, count) == 1
    if not ok:
        log.warning(f"mallopt(M_ARENA_MAX, {count}) was refused; glibc keeps its default arenas")
    return ok


def trim_heap() -> bool:
    """Give glibc's free pages back to the system, inside the heaps too (``malloc_trim(0)``). True when memory was
    released; False when none was, or on other C libraries."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return malloc_trim(0) == 1


def rss_bytes() -> int:
    """This process's resident memory now (Linux); elsewhere its peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak instead of the current size
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def trim_heap_every(interval_s: float) -> None:
    """Run :func:`trim_heap` in a worker thread every ``interval_s`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        before, started = rss_bytes(), time.perf_counter()
        released = await asyncio.to_thread(trim_heap)
        log.debug("heap trimmed", fields={"released": released, "ms": round((time.perf_counter() - started) * 1000, 1),
                                          "rss_mib_before": before >> 20, "rss_mib_after": rss_bytes() >> 20})
