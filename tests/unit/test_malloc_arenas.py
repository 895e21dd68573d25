"""The malloc arena cap: a served process's native threads share at most ``malloc_arena_max`` glibc arenas.

Each case runs in a fresh process (the cap only applies to arenas not yet made), where eight threads allocate at
once through numpy (native mallocs, the GIL released), and glibc's own ``malloc_stats()`` lists the arenas."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from voiceserver.server.malloc_arenas import limit_malloc_arenas
from voiceserver.settings import Settings

PROBE = """
import ctypes, sys, threading
import numpy as np
from voiceserver.server.malloc_arenas import limit_malloc_arenas

print(limit_malloc_arenas(int(sys.argv[1])), flush=True)
barrier = threading.Barrier(8)

def churn():
    barrier.wait()
    for _ in range(300):
        [np.ones(20_000) for _ in range(4)]  # 160 KB each: below glibc's mmap threshold after the first few

threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # writes "Arena N:" per arena to stderr
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and malloc_stats")


def arenas_after_churn(cap: int) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(cap)], capture_output=True, text=True, timeout=120,
                         check=True, env=env)
    return out.stdout.strip() == "True", out.stderr.count("Arena ")


@glibc
def test_the_cap_bounds_the_arenas_that_busy_threads_make():
    capped, arenas = arenas_after_churn(2)
    assert capped and 1 <= arenas <= 2
    uncapped, default_arenas = arenas_after_churn(0)
    assert not uncapped and default_arenas > 2  # the same churn without the cap spreads over more arenas


def test_the_default_setting_caps_at_two_and_the_environment_wins(monkeypatch):
    assert Settings().malloc_arena_max == 2
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # glibc read it at start-up: we leave it alone
    assert limit_malloc_arenas(2) is False
    assert limit_malloc_arenas(0) is False


TRIM_PROBE = """
import asyncio, sys
from voiceserver.server.malloc_arenas import rss_bytes, trim_heap_every

blocks = [bytearray(n) for _ in range(20_000) for n in (300, 3_000, 20_000)]  # heap blocks (under mmap's threshold)
del blocks[::2]  # every other block freed: free pages between live blocks, which glibc keeps without a trim
print(rss_bytes() >> 20, flush=True)

async def main():
    trimmer = asyncio.create_task(trim_heap_every(0.05))
    await asyncio.sleep(0.5)
    trimmer.cancel()

asyncio.run(main())
print(rss_bytes() >> 20, flush=True)
"""


@glibc
def test_the_periodic_trim_gives_free_pages_inside_the_heap_back():
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, timeout=120, check=True)
    before, after = (int(line) for line in out.stdout.split())
    assert before - after > 100, f"RSS {before} MiB before the trim, {after} MiB after"  # ~230 MiB of free pages
    assert Settings().malloc_trim_interval_s == 60.0
