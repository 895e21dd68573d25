"""Cross-call memory through the voice server with the default local model (Qwen2.5-Coder-0.5B): working memory is
filled after the turn by structured output (small models do not call tools reliably), and a new call's prompt holds
it. What the model then *says* is printed for the record, not asserted here (tests/e2e/test_agent_returning_caller.py
asserts the answer, with counts per model)."""

import asyncio

import httpx
import pytest

from voiceserver.client import VoiceClient
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import Settings
from voiceserver.testing.servers import serve_app

pytestmark = pytest.mark.e2e


async def test_local_model_remembers_the_callers_name_across_calls(models_dir, tmp_path, capsys):
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / "memory"))
    server = build_server(settings)
    async with serve_app(create_app(server)) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        for _ in range(900):
            if (await http.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        url = running.ws_url + "/v1/voice"
        async with VoiceClient.connect(url, resource="caller-ada") as client:
            intro = await client.ask_text("Hello! My name is Ada and I live in Paris.", timeout=120)
        agent = server.agents[settings.agent.name]
        await agent.flush()  # the extraction runs after the turn; wait for it
        working = (await http.get("/v1/memory/working", params={"resource": "caller-ada"})).json()
        async with VoiceClient.connect(url, resource="caller-ada") as client:
            again = await client.ask_text("What is my name?", timeout=120)
        threads = (await http.get("/v1/memory/threads", params={"resource": "caller-ada"})).json()
    with capsys.disabled():
        print(f"\n[local model] intro reply: {intro.reply_text!r}\n[local model] working memory: "
              f"{working['working_memory']!r}\n[local model] second call reply: {again.reply_text!r}")
    assert intro.reply_text and again.reply_text
    assert threads["total"] == 2
    assert working["working_memory"] and "Ada" in working["working_memory"], working
