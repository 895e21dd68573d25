"""The open-mic caller (voiceserver.testing.caller) against a real server on 127.0.0.1 with scripted engines.

"Speech" is a 440 Hz tone, which webrtcvad classifies as voiced; silence is zeros.
"""

import math
import time

import numpy as np
import pytest

from voiceserver.agent import Agent
from voiceserver.testing.caller import OpenMicCaller, Utterance, native_link
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server

RATE = 16000


def spoken(text: str, ms: int = 700) -> Utterance:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    voice = (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()
    return Utterance.from_pcm(text, b"\x00\x00" * (RATE * 300 // 1000) + voice)


async def test_two_questions_on_one_open_mic_call():
    model = ScriptedChatModel(["Your name is Ada.", "Paris is the capital of France."])
    agent = Agent(name="Assistant", instructions="Be brief.", model=model)
    stt = ScriptedSTT(["what is my name", "what is the capital of france"])
    async with voice_server(agent=agent, stt=stt, tts=ToneTTS(ms_per_char=10)) as vs, \
            native_link(vs.ws_url, resource="ada", thread="call-1") as link:
        assert link.session["resource"] == "ada" and link.session["thread"] == "call-1"
        started = time.perf_counter()
        async with OpenMicCaller(link, gap_s=0.2) as caller:
            first = await caller.say(spoken("What is my name?"))
            await caller.listen(first)
            second = await caller.say(spoken("What is the capital of France?"))
            await caller.listen(second)
            mic_ms = caller.sent_ms
        elapsed_ms = (time.perf_counter() - started) * 1000
        await link.end()
    assert first.failure is None and second.failure is None, (first.failure, second.failure)
    assert first.transcript == "what is my name" and first.reply_text == "Your name is Ada."
    assert second.transcript == "what is the capital of france"
    assert second.reply_text == "Paris is the capital of France."
    assert first.turn_id != second.turn_id
    # 10 ms of tone per character of the reply; the caller heard all of it.
    assert abs(first.audio_ms - 10 * len(first.reply_text)) < 60
    assert first.playout_end_at >= first.first_audio_at + first.audio_ms / 1000 - 0.001
    # The reply cannot come before the server's endpoint (500 ms of silence after the voice).
    assert first.voice_to_voice_ms > 400 and second.voice_to_voice_ms > 400
    assert {"stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms"} <= set(second.metrics)
    # The mic kept streaming through both replies and the gaps, not only while a question was said.
    assert mic_ms >= (second.playout_end_at - started) * 1000
    assert mic_ms <= elapsed_ms + 100
    assert len(model.requests) == 2


@pytest.mark.slow
async def test_a_turn_without_a_reply_is_a_failure_and_the_call_goes_on():
    model = ScriptedChatModel([Reply(text="Too late.", first_delay_s=2.5), "On time."])
    agent = Agent(name="Assistant", instructions="Be brief.", model=model)
    stt = ScriptedSTT(["first", "", "third"])
    async with voice_server(agent=agent, stt=stt, tts=ToneTTS(ms_per_char=5)) as vs, \
            native_link(vs.ws_url, resource="ada", thread="call-2") as link, \
            OpenMicCaller(link, reply_timeout_s=1.5, gap_s=0.1) as caller:
        slow = await caller.say(spoken("First?"))
        await caller.listen(slow)
        await caller.pause(2.0)  # the late reply arrives now: its events must not count for the next question
        empty = await caller.say(spoken("Second?"))
        await caller.listen(empty)
        third = await caller.say(spoken("Third?"))
    assert slow.failure == "no reply in 1.5 s" and slow.voice_to_voice_ms is None
    assert empty.failure == "nothing heard (empty transcript)" and empty.reply_text == ""
    assert third.failure is None and third.transcript == "third" and third.reply_text == "On time."
    assert third.voice_to_voice_ms > 400


async def test_a_reply_that_started_in_time_may_take_longer_to_play_out():
    reply = "This is a long story told slowly, with enough words to last a few seconds of audio."
    agent = Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel([reply]))
    async with voice_server(agent=agent, stt=ScriptedSTT(["tell me a story"]), tts=ToneTTS(ms_per_char=30)) as vs, \
            native_link(vs.ws_url, resource="ada", thread="call-3") as link, \
            OpenMicCaller(link, reply_timeout_s=1.5, gap_s=0.1) as caller:
        heard = await caller.say(spoken("Tell me a story."))
    # About 2.5 s of audio, paced in real time: response.done comes well after the 1.5 s reply timeout.
    assert heard.failure is None and heard.reply_text == reply
    assert heard.audio_ms > 2000 and heard.done_at - heard.speech_end_at > 1.5
