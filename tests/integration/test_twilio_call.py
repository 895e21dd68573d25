"""Phone calls through the Twilio bridge, against a real server, with a fake Twilio written from Twilio's documented
messages: the caller's voice as mu-law 8 kHz media paced in real time, reply media played in real time, marks
echoed when played (and at once after a clear). Memory is real LanceDB."""

import asyncio
import base64
import math
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import BaseModel

from voiceserver.agent import Agent, create_tool
from voiceserver.audio import mulaw_decode, rms_dbfs
from voiceserver.settings import Settings
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_twilio import FakeTwilioCall, to_mulaw_8k
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.speech import speak

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))
import memory_app  # noqa: E402

ALICE = "+15551230001"


def tone(ms: int, rate: int = 16000) -> bytes:
    """webrtcvad hears a tone as voice."""
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


@pytest.fixture
def app(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("LANCEDB_URI", str(tmp_path / "memory"))
    monkeypatch.setenv("VOICESERVER_MODELS_DIR", str(models_dir))
    return memory_app.build()


async def messages(vs, resource: str, thread: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=vs.http_url) as http:
        answer = await http.get(f"/v1/memory/threads/{thread}/messages", params={"resource": resource})
    assert answer.status_code == 200, answer.text
    return [m for m in answer.json()["messages"] if m["type"] == "text"]


class Transfer(BaseModel):
    amount: int


def played_marks(call: FakeTwilioCall) -> list[str]:
    return [m.name for m in call.record.marks_echoed if m.played]


@pytest.mark.slow
async def test_a_full_call_heard_by_whisper_and_answered_in_frames_with_marks(app, models_dir):
    agent = app.get_agent("Assistant")
    agent.model = ScriptedChatModel(["Paris is the capital of France, and a lovely city to visit."])
    agent._resolved_model = None
    settings = Settings(models_dir=models_dir)
    question = to_mulaw_8k(speak(models_dir, "What is the capital of France?"))
    async with voice_server(agent=agent, memory=app.memory, settings=settings, engines_from_settings=True) as vs:
        async with FakeTwilioCall.dial(vs.http_url, from_number=ALICE) as call:
            await call.say(question)
            await call.wait_for(lambda c: c.record.marks_sent, timeout=60)
            await call.wait_until_played(quiet_s=1.0)
            record = call.record
            media = call.events("media")
            assert record.media_stream_sids == {call.stream_sid}, "every frame names the call's stream"
            payloads = [len(base64.b64decode(m["media"]["payload"])) for m in media]
            assert payloads and set(payloads) == {160}, "20 ms mu-law frames"
            assert len(record.marks_sent) >= 2, "a mark after each phrase"
            assert played_marks(call) == record.marks_sent, "each echoed once its audio played, in order"
            assert call.played_ms == pytest.approx(len(media) * 20)
            assert call.played_ms > 1500 and rms_dbfs(mulaw_decode(bytes(record.played))) > -40, "Piper speech"
        said = await messages(vs, "tel:15551230001", "tel:15551230001:phone")
        words = said[0]["content"].lower()
        assert said[0]["role"] == "user" and "capital" in words and "france" in words, said
        assert said[1] == {**said[1], "role": "assistant",
                       "content": "Paris is the capital of France, and a lovely city to visit."}


async def test_barge_in_clears_and_memory_keeps_what_the_marks_say_was_heard(app):
    agent = app.get_agent("Assistant")
    first, second = "Alpha beta gamma delta.", "Epsilon zeta eta theta iota kappa."
    agent.model = ScriptedChatModel([Reply(text=f"{first} {second} Lambda mu nu xi omicron pi rho sigma.",
                                           chunk_delay_s=0.01)])
    agent._resolved_model = None
    tts = ToneTTS(ms_per_char=40)
    stt = ScriptedSTT(["tell me the alphabet", ""])  # the interruption is noise: nothing answers it
    async with voice_server(agent=agent, memory=app.memory, tts=tts, stt=stt) as vs:
        async with FakeTwilioCall.dial(vs.http_url, from_number=ALICE) as call:
            await call.say(to_mulaw_8k(tone(700)))
            await call.wait_for(lambda c: played_marks(c), timeout=20)
            await asyncio.sleep(0.6)  # into the second phrase
            await call.say(to_mulaw_8k(tone(700)), wait=False)
            cleared_at, played_at_clear = (await call.wait_for(lambda c: c.record.clears, timeout=10))[0]
            await asyncio.sleep(1.5)
            after = [r for r in call.record.received if r.at > cleared_at and r.message["event"] == "media"]
            assert after == [], "nothing of the cut reply is sent after the clear"
            assert played_marks(call) == call.record.marks_sent[:1], "only the first phrase played to its mark"
            assert [m.played for m in call.record.marks_echoed[1:]] == [False] * (len(call.record.marks_echoed) - 1)
        said = await messages(vs, "tel:15551230001", "tel:15551230001:phone")
        heard = said[1]
        assert heard["role"] == "assistant" and heard["metadata"].get("interrupted") is True
        assert heard["content"].startswith(first + " "), heard
        rest = heard["content"][len(first) + 1:].split()
        assert rest == second.split()[:len(rest)], "then the start of the phrase being played"
        first_ms = len(first) * 40
        expected = (played_at_clear - first_ms) / (len(second) * 40) * len(second.split())
        assert abs(len(rest) - expected) <= 1.5, (rest, played_at_clear)
        assert "Lambda" not in heard["content"]


async def test_a_mm_hmm_pauses_the_reply_without_a_clear_and_it_plays_to_the_end(app):
    agent = app.get_agent("Assistant")
    reply = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa. Lambda mu nu xi omicron pi rho sigma."
    agent.model = ScriptedChatModel([Reply(text=reply, chunk_delay_s=0.01)])
    agent._resolved_model = None
    tts = ToneTTS(ms_per_char=30)
    stt = ScriptedSTT(["tell me the alphabet", "mm-hmm"])
    async with voice_server(agent=agent, memory=app.memory, tts=tts, stt=stt) as vs:
        async with FakeTwilioCall.dial(vs.http_url, from_number=ALICE) as call:
            await call.say(to_mulaw_8k(tone(700)))
            await call.wait_for(lambda c: played_marks(c), timeout=20)
            await call.say(to_mulaw_8k(tone(300)))  # a listening noise over the reply
            await call.wait_for(lambda c: len(c.record.marks_sent) == 3, timeout=20)
            await call.wait_until_played(quiet_s=1.0)
            assert call.record.clears == [], "a pause is not a clear: nothing of the reply was thrown away"
            assert played_marks(call) == call.record.marks_sent, "every phrase played to its mark"
            media = [r.at for r in call.record.received if r.message["event"] == "media"]
            assert max(b - a for a, b in zip(media, media[1:], strict=False)) > 0.4, "sending paused meanwhile"
            assert call.played_ms == pytest.approx(sum(len(p) * 30 for p in tts.phrases), abs=80)
        said = await messages(vs, "tel:15551230001", "tel:15551230001:phone")
    assert said[1]["content"] == reply and not said[1]["metadata"].get("interrupted")


async def test_a_keypad_press_answers_an_approval():
    calls: list[int] = []

    async def execute(input: Transfer, ctx) -> dict:
        calls.append(input.amount)
        return {"ok": True}

    tool = create_tool(id="transfer", description="Move money.", input_schema=Transfer, execute=execute,
                       require_approval=True)
    model = ScriptedChatModel([Reply(tool_calls=[("transfer", {"amount": 50})]), "Transferred."])
    agent = Agent(name="Bank", instructions="Help.", model=model, tools={"transfer": tool})
    tts = ToneTTS(ms_per_char=10)
    async with voice_server(agent=agent, stt=ScriptedSTT(["send fifty dollars"]), tts=tts) as vs, \
            FakeTwilioCall.dial(vs.http_url) as call:
        await call.say(to_mulaw_8k(tone(700)))
        await call.wait_for(lambda c: c.record.marks_sent, timeout=20)
        await call.wait_until_played()
        assert "press 1 for yes or 2 for no" in " ".join(tts.phrases), "a phone caller is told the keys"
        assert calls == []
        await call.press("1")
        await call.wait_for(lambda c: "Transferred." in tts.phrases, timeout=20)
        assert calls == [50]


async def test_a_second_call_from_the_same_number_is_remembered(app):
    agent = app.get_agent("Assistant")
    tts = ToneTTS(ms_per_char=10)
    stt = ScriptedSTT(["Hi, my name is Alice.", "Do you know me?", "Hello?"])
    async with voice_server(agent=agent, memory=app.memory, tts=tts, stt=stt) as vs:
        for number in (ALICE, ALICE, "+15557770002"):
            async with FakeTwilioCall.dial(vs.http_url, from_number=number) as call:
                await call.say(to_mulaw_8k(tone(700)))
                await call.wait_for(lambda c: c.record.marks_sent, timeout=20)
                await call.wait_until_played()
        assert vs.server.hub.sessions == {}, "each hang-up ended its session"
        said = await messages(vs, "tel:15551230001", "tel:15551230001:phone")
    assert [m["content"] for m in said if m["role"] == "user"] == ["Hi, my name is Alice.", "Do you know me?"]
    replies = " ".join(tts.phrases)
    assert "Nice to meet you." in replies
    assert "Welcome back, Alice!" in replies, "the same number, a new call: remembered"
    assert "Hello, who is this?" in replies, "another number is someone else"


async def test_a_dropped_socket_ends_the_call_and_memory_is_saved(app):
    agent = app.get_agent("Assistant")
    agent.model = ScriptedChatModel([Reply(text="One two three four five six seven eight nine ten.",
                                           chunk_delay_s=0.01)])
    agent._resolved_model = None
    tts = ToneTTS(ms_per_char=60)
    async with voice_server(agent=agent, memory=app.memory, tts=tts, stt=ScriptedSTT(["count"])) as vs:
        async with FakeTwilioCall.dial(vs.http_url, from_number=ALICE) as call:
            await call.say(to_mulaw_8k(tone(700)))
            await call.wait_for(lambda c: c.played_ms > 600, timeout=20)
            await call.ws.close()  # no stop message: the line just drops
            for _ in range(100):
                if not vs.server.hub.sessions:
                    break
                await asyncio.sleep(0.05)
            assert vs.server.hub.sessions == {}
        said = await messages(vs, "tel:15551230001", "tel:15551230001:phone")
        assert said[0]["content"] == "count" and said[1]["metadata"].get("interrupted") is True
        assert said[1]["content"].startswith("One") and "ten" not in said[1]["content"]
