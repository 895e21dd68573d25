"""What the page needs from the server: the page itself with its test hooks, its static modules and worklets, the
agents for the picker, and the ICE servers."""

import httpx

from voiceserver.agent import Agent
from voiceserver.settings import Settings, WebRtcConfig
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.harness import voice_server


async def test_the_page_and_its_files_are_served():
    async with voice_server() as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for hook in ('data-testid="talk"', 'data-testid="transcript"', 'data-testid="status"',
                     'data-testid="latency"', 'type="module"'):
            assert hook in page.text, hook
        for path in ("/static/js/app.js", "/static/js/transport-webrtc.js", "/static/js/transport-websocket.js",
                     "/static/worklets/capture.js", "/static/worklets/playback.js", "/static/worklets/meter.js"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert "javascript" in response.headers["content-type"], (path, response.headers["content-type"])
        assert (await http.get("/static/css/app.css")).headers["content-type"].startswith("text/css")
        assert (await http.get("/static/../pyproject.toml")).status_code == 404
        assert (await http.get("/static/nope.js")).status_code == 404


async def test_agents_for_the_picker_and_ice_servers_for_the_browser():
    agents = {name: Agent(name=name, description=f"The {name.lower()} desk.", instructions="x",
                          model=ScriptedChatModel(["ok"])) for name in ("Front", "Billing")}
    settings = Settings(webrtc=WebRtcConfig(ice_servers=[{"urls": ["turn:turn.example.org:3478"], "username": "u",
                                                          "credential": "p"}]))
    async with voice_server(agents=agents, settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        listed = (await http.get("/v1/agents")).json()
        config = (await http.get("/v1/webrtc/config")).json()
    assert listed == {"agents": [{"name": "Front", "description": "The front desk."},
                                 {"name": "Billing", "description": "The billing desk."}], "default": "Front"}
    assert config == {"ice_servers": [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]}
