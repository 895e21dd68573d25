"""The page at / in a real Chromium against a real server with the real models: the fake microphone plays a
question spoken by Piper (then silence; Chromium loops the file), over WebRTC and over the WebSocket fallback.
Each test saves a screenshot as an artifact (test-artifacts/, or VOICESERVER_TEST_ARTIFACTS)."""

import asyncio
import os
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from voiceserver.audio import write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import MemoryConfig, Settings, TurnConfig
from voiceserver.testing.browser import chromium
from voiceserver.testing.servers import serve_app
from voiceserver.testing.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]
QUESTION = "Tell me something about the moon."
ARTIFACTS = Path(os.environ.get("VOICESERVER_TEST_ARTIFACTS") or REPO / "test-artifacts")


@pytest.fixture(scope="module")
def microphone(models_dir, tmp_path_factory) -> Path:
    """One question, then 15 s of silence: Chromium loops the file, so one turn ends before it asks again.
    (Through the browser's audio processing Whisper base hears "capital of friends" for Piper's "capital of
    France", on both transports alike; this question comes through intact.)"""
    audio = speak(models_dir, QUESTION, lead_silence_ms=600) + bytes(2 * 16000 * 15)
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    write_wav(path, AudioChunk(audio, 16000))
    return path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(models_dir, tmp_path_factory):
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path_factory.mktemp("memory")),
                        turn=TurnConfig(reply_max_sentences=1))
    settings.agent.memory = MemoryConfig(type="none")
    async with serve_app(create_app(build_server(settings))) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            for _ in range(600):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
        yield server


async def snapshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


async def lines(page, role: str) -> list[str]:
    return await page.eval_on_selector_all(f"[data-testid=transcript] .line[data-role={role}]",
                                           "nodes => nodes.map(n => n.innerText.trim())")


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_a_spoken_question_gets_a_spoken_answer(running, microphone, tmp_path, transport):
    async with async_playwright() as p, chromium(p, tmp_path / "profile", microphone=microphone) as browser:
        page = await browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{running.http_url}/?transport={transport}")
        await page.wait_for_function("document.querySelector('[data-testid=status]').dataset.state === 'ready'",
                                     timeout=30000)
        await page.click("[data-testid=talk]")
        await page.wait_for_function("window.voiceStats.turns >= 1", timeout=90000)
        await page.wait_for_function("window.voiceStats.audioFramesPlayed >= 25", timeout=30000)
        await page.wait_for_function("/^[0-9]+$/.test(document.querySelector('[data-testid=latency]').textContent)",
                                     timeout=30000)  # the metrics event follows response.done
        stats = await page.evaluate("({...window.voiceStats})")
        users, replies = await lines(page, "user"), await lines(page, "assistant")
        status = await page.inner_text("[data-testid=status]")
        latency = await page.inner_text("[data-testid=latency]")
        await snapshot(page, f"browser-{transport}.png")
    assert not errors, errors
    assert stats["transport"] == transport and status == "Connected"
    words = users[0].lower()
    assert "something" in words and "moon" in words, users
    assert replies and replies[0], "an assistant line appeared"
    assert stats["audioFramesReceived"] > 0 and stats["audioFramesPlayed"] >= 25, stats  # 0.5 s of reply played
    if transport == "webrtc":
        assert stats["audioEnergy"] > 0, "getStats: the reply track carried sound"
    assert latency.isdigit() and int(latency) > 0, latency
    assert (ARTIFACTS / f"browser-{transport}.png").stat().st_size > 10000


async def test_a_blocked_microphone_is_explained(running, tmp_path):
    async with async_playwright() as p, chromium(p, tmp_path / "profile", deny_microphone=True) as browser:
        page = await browser.new_page()
        await page.goto(running.http_url)
        await page.wait_for_function("document.querySelector('[data-testid=status]').dataset.state === 'ready'",
                                     timeout=30000)
        await page.click("[data-testid=talk]")
        await page.wait_for_function("document.querySelector('#notice').dataset.code === 'mic_denied'",
                                     timeout=15000)
        notice = await page.inner_text("#notice")
        status = await page.inner_text("[data-testid=status]")
        talk = await page.inner_text("[data-testid=talk]")
        await snapshot(page, "browser-mic-denied.png")
    assert "Allow the microphone" in notice and status == "Microphone blocked" and talk == "Talk"
