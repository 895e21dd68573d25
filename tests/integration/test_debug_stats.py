"""GET /v1/debug/stats: off by default; with debug_stats on, one sample of the process, and ?objects=1 adds what the
Python heap is made of (how the soak's RSS growth is read)."""

from __future__ import annotations

import httpx

from voiceserver.client import VoiceClient
from voiceserver.settings import Settings
from voiceserver.testing.harness import voice_server


async def test_debug_stats_are_off_by_default_and_sample_the_process_when_on():
    async with voice_server() as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        assert (await http.get("/v1/debug/stats")).status_code == 404
    async with voice_server(settings=Settings(debug_stats=True)) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        async with VoiceClient.connect(vs.ws_url):
            body = (await http.get("/v1/debug/stats")).json()
            assert body["sessions"] == 1 and body["rss_bytes"] > 0 and body["asyncio_tasks"] > 0
            assert "object_types" not in body
            detailed = (await http.get("/v1/debug/stats?objects=1")).json()
        types = detailed["object_types"]
        assert len(types) == 25 and all(isinstance(n, int) and n > 0 for n in types.values())
        assert "dict" in types  # the most common types of any Python process are among them
        # The session's tasks are named by the coroutine they run, and the session's socket is among the fds.
        tasks = detailed["asyncio_tasks_by_coroutine"]
        assert sum(tasks.values()) >= 1 and all(isinstance(name, str) and name for name in tasks)
        assert detailed["open_fds_by_kind"].get("socket", 0) >= 2  # the listener and the connection
        assert detailed["gc_unreachable"] >= 0 and detailed["untracked_kib_by_holder"]
        assert body["python_blocks"] > 0 and body["malloc"]["in_use_bytes"] > 0  # glibc on this machine


async def test_debug_stats_report_each_stores_bounded_caches(tmp_path):
    """The soak reads how much of RSS the LanceDB caches and the outage row cache hold, per store."""
    from voiceserver.testing.fuzz_target import build_target, target_settings

    server = build_target(tmp_path, settings=target_settings())
    from voiceserver.server.composition import create_app
    from voiceserver.testing.servers import serve_app

    async with serve_app(create_app(server)) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        async with VoiceClient.connect(running.ws_url + "/v1/voice?resource=alice") as client:
            await client.ask_text("Remember that my name is Ada.")
        stores = (await http.get("/v1/debug/stats")).json()["stores"]
    (uri, caches), = stores.items()
    assert uri.endswith("memory")
    assert caches["lancedb_cache_bytes"] > 0  # the turn's reads and writes went through LanceDB
    assert caches["cached_rows"] == 0  # this store has no outage journal, so it keeps no rows for one
