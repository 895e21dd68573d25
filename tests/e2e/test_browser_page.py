"""The page's behaviour in a real Chromium against real servers with scripted engines (the browser, the page, the
transports and the server are real; the speech engines are scripted so each case is quick and exact): a server
restart with reconnection, the WebSocket fallback, a full server, the agent picker and approval buttons, and a
barge-in marking the reply and stopping its audio on both transports."""

import asyncio
import json
import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from pydantic import BaseModel

from voiceserver.agent import Agent, create_tool
from voiceserver.audio import write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.client import VoiceClient
from voiceserver.server.composition import build_server, create_app
from voiceserver.settings import LimitsConfig, Settings, TurnConfig, WebRtcConfig
from voiceserver.testing.browser import chromium
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.processes import free_port
from voiceserver.testing.servers import serve_app
from voiceserver.testing.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("VOICESERVER_TEST_ARTIFACTS") or REPO / "test-artifacts")
STORY = ("Once upon a time a small fox lived at the edge of a quiet forest, and every evening she walked down to the "
         "river to watch the light fade over the water while the owls began to call.")


def microphone(models_dir: Path, folder: Path, *, gap_s: float) -> Path:
    """A spoken request, then ``gap_s`` of silence; Chromium loops the file."""
    audio = speak(models_dir, "Hello there, can you help me?", lead_silence_ms=600) + bytes(int(2 * 16000 * gap_s))
    path = folder / "mic.wav"
    write_wav(path, AudioChunk(audio, 16000))
    return path


async def open_page(browser, url: str):
    page = await browser.new_page()
    await page.goto(url)
    await page.wait_for_function("document.querySelector('[data-testid=status]').dataset.state === 'ready'",
                                 timeout=20000)
    return page


async def state(page) -> str:
    return await page.evaluate("document.querySelector('[data-testid=status]').dataset.state")


async def snapshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


def scripted_app(settings: Settings | None = None, reply: str = "Happy to help."):
    agent = Agent(name="Assistant", instructions="x", model=ScriptedChatModel([reply]))
    server = build_server(settings or Settings(), stt=ScriptedSTT(["hello there can you help me"]), tts=ToneTTS(),
                          agents={"Assistant": agent}, default_agent="Assistant")
    return create_app(server)


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_a_server_restart_is_shown_and_the_page_reconnects(models_dir, tmp_path, transport):
    port = free_port()
    mic = microphone(models_dir, tmp_path, gap_s=3)
    async with async_playwright() as p, chromium(p, tmp_path / "profile", microphone=mic) as browser:
        async with serve_app(scripted_app(), port=port) as first:
            page = await open_page(browser, f"{first.http_url}/?transport={transport}")
            await page.click("[data-testid=talk]")
            await page.wait_for_function("window.voiceStats.state === 'connected' && window.voiceStats.sessionId")
            before = await page.evaluate("window.voiceStats.sessionId")
        # The server is gone: the page says so instead of pretending to listen.
        await page.wait_for_function("['reconnecting', 'unreachable'].includes(window.voiceStats.state)",
                                     timeout=10000)
        await page.wait_for_function("window.voiceStats.state === 'unreachable'", timeout=10000)
        gone_status = await page.inner_text("[data-testid=status]")
        gone_notice = await page.inner_text("#notice")
        await snapshot(page, f"browser-restart-{transport}.png")
        async with serve_app(scripted_app(), port=port):
            await page.wait_for_function("window.voiceStats.state === 'connected'", timeout=20000)
            after = await page.evaluate("window.voiceStats.sessionId")
            users = await page.locator(".line[data-role=user]").count()
            await page.wait_for_function(f"document.querySelectorAll('.line[data-role=user]').length > {users}",
                                         timeout=20000)  # the conversation goes on over the new connection
            stats = await page.evaluate("({...window.voiceStats})")
    assert gone_status == "Server unreachable" and ("restarting" in gone_notice or "retrying" in gone_notice)
    assert after and after != before and stats["reconnects"] >= 1 and stats["transport"] == transport


async def test_the_page_falls_back_to_websocket_when_webrtc_fails(models_dir, tmp_path):
    settings = Settings(webrtc=WebRtcConfig(enabled=False))  # /v1/webrtc/offer answers 404
    mic = microphone(models_dir, tmp_path, gap_s=6)
    async with serve_app(scripted_app(settings)) as server, async_playwright() as p, \
            chromium(p, tmp_path / "profile", microphone=mic) as browser:
        page = await open_page(browser, server.http_url)
        await page.click("[data-testid=talk]")
        await page.wait_for_function("window.voiceStats.turns >= 1 && window.voiceStats.audioFramesPlayed >= 5",
                                     timeout=20000)
        stats = await page.evaluate("({...window.voiceStats})")
        via = await page.inner_text("#transport")
        notice = await page.inner_text("#notice")
    assert stats["transport"] == "websocket" and via == "WebSocket" and "WebSocket" in notice
    assert stats["audioFramesPlayed"] >= 5 and stats["audioFramesReceived"] >= 5


async def test_a_full_server_is_explained(tmp_path):
    settings = Settings(limits=LimitsConfig(max_sessions=1))
    async with voice_server(settings=settings) as vs, VoiceClient.connect(vs.ws_url), async_playwright() as p, \
            chromium(p, tmp_path / "profile", microphone=None) as browser:
        page = await open_page(browser, vs.http_url)
        await page.click("[data-testid=talk]")
        await page.wait_for_function("window.voiceStats.state === 'busy'", timeout=15000)
        notice = await page.inner_text("#notice")
        talk = await page.inner_text("[data-testid=talk]")
    assert "busy" in notice and talk == "Talk"


class Transfer(BaseModel):
    amount: int


async def test_agent_picker_and_approval_buttons(models_dir, tmp_path):
    calls = []

    async def transfer(input: Transfer, ctx) -> dict:
        calls.append(input.amount)
        return {"ok": True}

    tool = create_tool(id="transfer", description="Move money.", input_schema=Transfer, execute=transfer,
                       require_approval=True)
    bank = Agent(name="Bank", instructions="x", tools={"transfer": tool},
                 model=ScriptedChatModel([Reply(tool_calls=[("transfer", {"amount": 50})]), "Transferred."]))
    helper = Agent(name="Helper", instructions="x", model=ScriptedChatModel(["Hi."]))
    mic = microphone(models_dir, tmp_path, gap_s=30)
    async with voice_server(agents={"Helper": helper, "Bank": bank}, stt=ScriptedSTT(["send fifty"])) as vs, \
            async_playwright() as p, chromium(p, tmp_path / "profile", microphone=mic) as browser:
        page = await open_page(browser, vs.http_url)
        options = await page.eval_on_selector_all("#agent option", "nodes => nodes.map(n => n.value)")
        assert await page.is_visible("#agent") and options == ["Helper", "Bank"]
        await page.select_option("#agent", "Bank")
        await page.click("[data-testid=talk]")
        await page.wait_for_selector("[data-testid=approve]", timeout=20000)
        title = await page.inner_text(".card.approval .card-title")
        await page.click("[data-testid=approve]")
        await page.wait_for_function(
            "[...document.querySelectorAll('.line[data-role=assistant]')]"
            ".some(n => n.innerText.includes('Transferred'))",
            timeout=20000)
        await snapshot(page, "browser-approval.png")
    assert "transfer" in title and calls == [50]


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_barge_in_marks_the_reply_and_its_audio_stops(models_dir, tmp_path, transport):
    """The looping microphone asks again while the long reply plays: the reply is cut, marked, and no more of its
    audio plays (WebRTC: the server drops it from the track; WebSocket: the page clears its playback buffer)."""
    # The words that cut the reply get an empty answer: any reply audio after the cut would be the old reply's.
    model = ScriptedChatModel([Reply(text=STORY, chunk_delay_s=0.01), Reply(text="")])
    agent = Agent(name="Assistant", instructions="x", model=model)
    settings = Settings(turn=TurnConfig(reply_max_sentences=0))
    mic = microphone(models_dir, tmp_path, gap_s=1.0)
    async with voice_server(agent=agent, settings=settings, stt=ScriptedSTT(["tell me a story"]),
                            tts=ToneTTS(ms_per_char=60)) as vs, async_playwright() as p, \
            chromium(p, tmp_path / "profile", microphone=mic) as browser:
        page = await open_page(browser, f"{vs.http_url}/?transport={transport}")
        await page.click("[data-testid=talk]")
        await page.wait_for_selector(".line[data-role=assistant][data-interrupted=true]", timeout=30000)
        await asyncio.sleep(0.4)  # what was already in the browser's own jitter buffer plays out
        played_after_cut = await page.evaluate("window.voiceStats.audioFramesPlayed")
        await asyncio.sleep(0.8)
        played_later = await page.evaluate("window.voiceStats.audioFramesPlayed")
        line = page.locator(".line[data-role=assistant][data-interrupted=true]").first
        heard, tag = await line.locator(".text").inner_text(), await line.locator(".tag").text_content()
        await snapshot(page, f"browser-barge-in-{transport}.png")
    assert played_after_cut > 0 and played_later == played_after_cut, "no reply audio after the cut"
    assert tag == "interrupted" and heard and len(heard) < len(STORY) and STORY.startswith(heard.rstrip("…"))


class SlowLoadingSTT(ScriptedSTT):
    """Scripted transcripts behind a load that takes a while, like real weights."""

    async def load(self) -> None:
        await asyncio.sleep(3)


async def test_readiness_while_models_load_then_the_caller_is_remembered(tmp_path):
    agent = Agent(name="Assistant", instructions="x", model=ScriptedChatModel(["Hi."]))
    server = build_server(Settings(), stt=SlowLoadingSTT(["hello"]), tts=ToneTTS(), agents={"Assistant": agent},
                          default_agent="Assistant")
    async with serve_app(create_app(server)) as running, async_playwright() as p, \
            chromium(p, tmp_path / "profile", viewport={"width": 390, "height": 800}, is_mobile=True,
                     has_touch=True, device_scale_factor=2) as browser:
        page = await browser.new_page()
        await page.goto(running.http_url)
        await page.wait_for_function("window.voiceStats.state === 'loading'", timeout=5000)
        loading = await page.inner_text("[data-testid=status]")
        disabled = await page.is_disabled("[data-testid=talk]")
        await page.wait_for_function("window.voiceStats.state === 'ready'", timeout=20000)
        ids = await page.evaluate("['caller', 'thread'].map(k => localStorage.getItem('voiceserver.' + k))")
        shown = await page.inner_text("#caller-id")
        await page.click("[data-testid=talk]")  # a phone: tap to talk
        await page.wait_for_function("window.voiceStats.state === 'connected'", timeout=15000)
        session = server.hub.sessions[await page.evaluate("window.voiceStats.sessionId")]
        await snapshot(page, "browser-phone.png")
        await page.reload()
        await page.wait_for_function("window.voiceStats.state === 'ready'", timeout=20000)
        again = await page.inner_text("#caller-id")
        fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert loading.startswith("Loading models") and "stt" in loading and disabled
    assert ids[0].startswith("caller-") and ids[1].startswith("conv-") and shown == ids[0] == again
    assert (session.config.resource, session.config.thread) == (ids[0], ids[1]), "the server knows the caller"
    assert fits, "nothing wider than a phone screen"


def booking_model() -> ScriptedChatModel:
    """Starts the booking workflow when asked for an appointment and shapes the caller's answers."""

    def respond(request):
        if request.response_schema:
            answer = request.messages[-1].content.split("Caller's answer:")[-1].strip().rstrip(".")
            return json.dumps({"day": answer})
        last = request.messages[-1]
        if request.tools and last.role == "user" and "appointment" in (last.content or ""):
            return Reply(tool_calls=[("workflow-book-appointment", {"service": "haircut"})])
        return "Okay."

    return ScriptedChatModel([Reply(respond=respond)])


async def test_workflow_progress_is_shown(tmp_path):
    from examples.booking import booking_workflow, receptionist

    silence = tmp_path / "silence.wav"
    write_wav(silence, AudioChunk(bytes(2 * 16000 * 5), 16000))
    agent = receptionist(model=booking_model(), workflow=booking_workflow())
    async with voice_server(agent=agent, tts=ToneTTS(ms_per_char=5)) as vs, async_playwright() as p, \
            chromium(p, tmp_path / "profile", microphone=silence) as browser:
        page = await open_page(browser, vs.http_url)
        await page.click("[data-testid=talk]")
        await page.wait_for_function("window.voiceStats.state === 'connected'", timeout=15000)
        await page.fill("#text-input", "I need an appointment")
        await page.press("#text-input", "Enter")
        await page.wait_for_selector(".card.workflow [data-step='ask-day'][data-state='waiting for you']",
                                     timeout=15000)
        await page.fill("#text-input", "Friday")
        await page.press("#text-input", "Enter")
        await page.wait_for_selector(".card.workflow [data-step='ask-time'][data-state='waiting for you']",
                                     timeout=15000)
        steps = await page.eval_on_selector_all(".card.workflow li", "nodes => nodes.map(n => n.textContent)")
        title = await page.inner_text(".card.workflow .card-title")
        await snapshot(page, "browser-workflow.png")
    assert "book-appointment" in title
    assert steps[0] == "ask-day: done" and steps[-1] == "ask-time: waiting for you", steps
