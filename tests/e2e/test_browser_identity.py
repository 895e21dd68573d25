"""The page with a caller token, in a real Chromium against a real server secured by a token secret (scripted
engines): ``/?token=...`` talks as the token's caller on both transports, and the page, served by this server, passes
the Origin allow-list; a page whose ids belong to someone else never reaches the server as them."""

import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from voiceserver.agent import Agent
from voiceserver.audio import write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.identity import issue_token
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import AuthConfig, Settings
from voiceserver.testing.browser import chromium
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.servers import serve_app
from voiceserver.testing.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "identity-page-secret-0123456789abcdef"


def microphone(models_dir: Path, folder: Path) -> Path:
    audio = speak(models_dir, "Hello there, can you help me?", lead_silence_ms=600) + bytes(2 * 16000 * 4)
    path = folder / "mic.wav"
    write_wav(path, AudioChunk(audio, 16000))
    return path


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_the_page_talks_as_the_tokens_caller(models_dir, tmp_path, transport):
    agent = Agent(name="Assistant", instructions="x", model=ScriptedChatModel(["Happy to help."]))
    server = build_server(Settings(auth=AuthConfig(token_secret=SECRET)), stt=ScriptedSTT(["hello there"]),
                          tts=ToneTTS(), agents={"Assistant": agent}, default_agent="Assistant")
    token = issue_token(SECRET, "alice", now=time.time(), ttl_s=600, agent="Assistant")
    mic = microphone(models_dir, tmp_path)
    async with serve_app(create_app(server)) as running, async_playwright() as p, \
            chromium(p, tmp_path / "profile", microphone=mic) as browser:
        page = await browser.new_page()
        # A caller id of another visitor is in this browser's storage: with a token it must not be used.
        await page.goto(f"{running.http_url}/healthz")
        await page.evaluate("localStorage.setItem('voiceserver.caller', 'bob')")
        await page.goto(f"{running.http_url}/?transport={transport}&token={token}")
        await page.wait_for_function("document.querySelector('[data-testid=status]').dataset.state === 'ready'",
                                     timeout=20000)
        shown = await page.inner_text("#caller-id")
        await page.click("[data-testid=talk]")
        await page.wait_for_function("window.voiceStats.state === 'connected' && window.voiceStats.sessionId",
                                     timeout=20000)
        session_id = await page.evaluate("window.voiceStats.sessionId")
        session = server.hub.sessions[session_id]
        await page.wait_for_function("window.voiceStats.turns >= 1", timeout=20000)
        stats = await page.evaluate("({...window.voiceStats})")
    assert shown == "alice"
    assert (session.config.resource, session.ctx.caller.role, session.agent_name) == ("alice", "token", "Assistant")
    assert stats["transport"] == transport and stats["turns"] >= 1
    metrics = server.metrics.render().decode()
    assert "forbidden_resource" not in metrics and "forbidden_origin" not in metrics
