"""glibc's malloc: cap its arenas for the whole process before its native threads start, and read its heap.

glibc gives each thread that meets a contended allocation an arena of its own, up to eight per core, and memory
freed into one arena is reused by that arena only. A served process has many native threads (LanceDB's Rust
runtime, onnxruntime, CTranslate2, llama.cpp, asyncio's worker threads), so freed memory piles up in arenas that
the next allocation does not look at. In-process, 4,000 LanceDB appends grew RSS by 48 MiB with glibc's default
and by 22 MiB with two arenas, of which 7 MiB was LanceDB's own bounded caches (/tmp loops, see
docs/architecture.md). ``MALLOC_ARENA_MAX`` in the environment, when set, wins: it is read at process start.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
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
