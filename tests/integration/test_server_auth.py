"""With API keys configured, the voice WebSocket and the REST API need one; probes stay open."""

import httpx
import pytest
import websockets
from pydantic import SecretStr

from voiceserver.client import VoiceClient
from voiceserver.settings import Settings
from voiceserver.testing.harness import voice_server
from voiceserver.workflows import create_step, create_workflow


def echo_workflow():
    async def run(ctx):
        return {"text": ctx.input_data["text"]}

    step = create_step(id="echo", execute=run)
    return create_workflow(id="echo").then(step).commit()


async def test_keys_guard_voice_and_rest_but_not_probes():
    settings = Settings(api_keys=[SecretStr("k-123456")])
    async with voice_server(settings=settings, workflows={"echo": echo_workflow()}) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(vs.ws_url)
        assert refused.value.response.status_code == 403
        async with VoiceClient.connect(vs.ws_url, api_key="k-123456") as client:
            assert (await client.ask_text("hi")).reply_text
        for path in ("/healthz", "/readyz", "/metrics", "/"):
            assert (await http.get(path)).status_code in (200, 503), path
        denied = await http.post("/v1/workflows/echo/runs", json={"input_data": {"text": "x"}})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        wrong = await http.post("/v1/workflows/echo/runs", json={"input_data": {"text": "x"}},
                                headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await http.post("/v1/workflows/echo/runs", json={"input_data": {"text": "x"}},
                             headers={"Authorization": "Bearer k-123456"})
        assert ok.status_code == 200 and ok.json()["result"] == {"text": "x"}


async def test_without_keys_everything_is_open():
    async with voice_server(workflows={"echo": echo_workflow()}) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        response = await http.post("/v1/workflows/echo/runs", json={"input_data": {"text": "y"}})
        assert response.status_code == 200
