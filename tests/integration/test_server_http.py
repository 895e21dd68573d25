"""The HTTP surface of a real server on 127.0.0.1 port 0: /healthz, /readyz, /metrics, /."""

import asyncio

import httpx

from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import Settings
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.servers import serve_app


class SlowLoadingTTS(ToneTTS):
    """A TTS whose load() waits for the test to release it, to observe /readyz before and after."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()

    async def load(self):
        await self.release.wait()


def make_server(tts=None):
    settings = Settings(preload=True)
    return build_server(settings, stt=ScriptedSTT(["hello"]), tts=tts or ToneTTS(),
                        agents={"Assistant": object()}, default_agent="Assistant")


async def test_health_ready_metrics_and_page():
    tts = SlowLoadingTTS()
    server = make_server(tts)
    async with serve_app(create_app(server)) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}

        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503
        assert "tts" in not_ready.json()["missing"], not_ready.json()

        tts.release.set()
        for _ in range(200):
            ready = await http.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert ready.json()["engines"] == {"stt": "ready", "tts": "ready"}

        metrics = await http.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        names = {line.split("{")[0].split(" ")[0] for line in metrics.text.splitlines()
                 if line and not line.startswith("#")}
        assert names and all(n.startswith("voiceserver_") for n in names), names
        assert 'voiceserver_engine_loaded{engine="tts"} 1.0' in metrics.text

        page = await http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'data-testid="talk"' in page.text and "/static/js/app.js" in page.text, "the voice chat page"


async def test_failed_engine_is_reported_not_ready():
    class BrokenTTS(ToneTTS):
        async def load(self):
            raise RuntimeError("voice file unreadable")

    server = make_server(BrokenTTS())
    async with serve_app(create_app(server)) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        for _ in range(100):
            body = (await http.get("/readyz")).json()
            if body["engines"]["tts"].startswith("failed"):
                break
            await asyncio.sleep(0.02)
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["engines"]["tts"] == "failed: voice file unreadable"
        assert (await http.get("/healthz")).status_code == 200, "alive even when not ready"


async def test_two_servers_in_one_process_have_separate_metrics():
    a, b = make_server(), make_server()
    a.metrics.errors.labels("x").inc()
    async with serve_app(create_app(a)) as ra, serve_app(create_app(b)) as rb, httpx.AsyncClient() as http:
        ta = (await http.get(ra.http_url + "/metrics")).text
        tb = (await http.get(rb.http_url + "/metrics")).text
    assert 'voiceserver_errors_total{code="x"} 1.0' in ta
    assert 'code="x"' not in tb
