"""`voiceserver serve` gives glibc's free pages back every ``malloc_trim_interval_s`` (server/malloc_arenas.py)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from voiceserver.testing.processes import start_serve_process, stop_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")


async def test_the_served_process_trims_its_heap_on_the_interval(tmp_path):
    proc, _port = await start_serve_process(env={
        "VOICESERVER_PRELOAD": "false", "LANCEDB_URI": str(tmp_path / "memory"), "VOICESERVER_LOG_FORMAT": "json",
        "VOICESERVER_LOG_LEVEL": "debug", "VOICESERVER_MALLOC_TRIM_INTERVAL_S": "0.2"})
    try:
        await asyncio.sleep(1.5)
    finally:
        assert await stop_process(proc) == 0
    records = [json.loads(line) for line in proc.stderr.read().decode().splitlines() if line.startswith("{")]
    trims = [r for r in records if r.get("msg", r.get("message")) == "heap trimmed"]
    assert len(trims) >= 3, f"{len(trims)} trims logged in 1.5 s at a 0.2 s interval"
    assert all(t["rss_mib_after"] > 0 for t in trims)
