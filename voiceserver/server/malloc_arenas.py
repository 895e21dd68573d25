"""Cap glibc's malloc arenas for the whole process, before its native threads start.

glibc gives each thread that meets a contended allocation an arena of its own, up to eight per core, and memory
freed into one arena is reused by that arena only. A served process has many native threads (LanceDB's Rust
runtime, onnxruntime, CTranslate2, llama.cpp, asyncio's worker threads), so freed memory piles up in arenas that
the next allocation does not look at. In-process, 4,000 LanceDB appends grew RSS by 48 MiB with glibc's default
and by 22 MiB with two arenas, of which 7 MiB was LanceDB's own bounded caches (/tmp loops, see
docs/architecture.md). ``MALLOC_ARENA_MAX`` in the environment, when set, wins: it is read at process start.
"""

from __future__ import annotations

import ctypes
import os
import sys

from ..logs import get_logger

log = get_logger("Server")

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(count: int) -> bool:
    """Cap the arenas at ``count`` (0: leave glibc's default). True when the cap was set; False on other C
    libraries (musl, macOS), when ``MALLOC_ARENA_MAX`` is set in the environment, or for 0."""
    if count <= 0 or not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, count) == 1
    if not ok:
        log.warning(f"mallopt(M_ARENA_MAX, {count}) was refused; glibc keeps its default arenas")
    return ok
