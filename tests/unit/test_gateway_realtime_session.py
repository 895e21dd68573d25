"""The generic session seams the Realtime gateway maps onto, driven without sockets on a virtual clock:
``auto_respond`` off (utterances transcribed, not answered), ``barge_in`` off (a reply is not interrupted; the
utterance that ended during it is answered after it), ``UpdateSession`` (new VAD / answering settings while running,
the stream clock going on), ``ClearInput`` (an utterance in progress forgotten), and ``TurnRequest.turn_id``."""

from __future__ import annotations

import asyncio

from voiceserver.agent import Agent
from voiceserver.session.agent_adapter import AgentAdapter
from voiceserver.session.events import CancelResponse, ClearInput, InputText, SessionConfig, UpdateSession
from voiceserver.settings import TurnConfig
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.session_probe import SessionProbe, run_virtual

LONG = "One two three four five six. Seven eight nine ten eleven twelve."


def agent_with(*replies) -> tuple[Agent, ScriptedChatModel]:
    model = ScriptedChatModel(list(replies))
    return Agent(name="Assistant", instructions="Be brief.", model=model), model


def test_auto_respond_off_transcribes_each_utterance_and_answers_only_when_asked():
    async def scenario():
        agent, model = agent_with("Sure.")
        stt = ScriptedSTT(["first words", "second words"], delay_s=0.4)
        async with SessionProbe(agent=agent, stt=stt, config=SessionConfig(auto_respond=False),
                                turn=TurnConfig(speculative_stt=False)) as p:
            await p.speak(500)
            await p.silence(700)
            await p.speak(500)  # speaks again while the first is being transcribed: not joined to it
            await p.silence(700)
            await p.wait_for("transcript", count=2)
            await asyncio.sleep(1.0)
            assert [e.text for e in p.events("transcript")] == ["first words", "second words"]
            stopped = [e.turn_id for e in p.events("speech.stopped")]
            assert [e.turn_id for e in p.events("transcript")] == stopped  # each utterance its own transcript
            assert p.events("response.started") == [] and model.calls == 0
            await p.send(InputText("first words second words"))
            done = await p.wait_for("response.done")
            assert done.text == "Sure." and model.calls == 1

    run_virtual(scenario())


def test_barge_in_off_keeps_the_reply_and_answers_the_held_utterance_after_it():
    async def scenario():
        agent, model = agent_with(LONG, "Second answer.")
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["tell me", "and then"]),
                                tts=ToneTTS(ms_per_char=30), config=SessionConfig(barge_in=False),
                                turn=TurnConfig(output_lead_ms=100)) as p:
            await p.speak(500)
            await p.silence(700)
            first = await p.wait_for("response.audio.started")
            await p.speak(500)  # talks over the reply
            await p.silence(700)
            assert p.events("response.cancelled") == []
            await p.wait_for("response.done", count=2, timeout=30)
            dones = p.events("response.done")
            assert dones[0].turn_id == first.turn_id and not dones[0].interrupted
            assert dones[0].text == LONG and dones[1].text == "Second answer."
            starts = [s.at for s in p.seen if s.kind == "response.started"]
            assert starts[1] >= p.first("response.done").at  # the held utterance waited for the reply
            assert model.requests[1].messages[-1].content == "and then"

    run_virtual(scenario())


def test_barge_in_off_a_client_cancel_answers_the_held_utterance_at_once():
    async def scenario():
        agent, _ = agent_with(LONG, "Now.")
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["tell me", "stop that"]),
                                tts=ToneTTS(ms_per_char=30), config=SessionConfig(barge_in=False),
                                turn=TurnConfig(output_lead_ms=100)) as p:
            await p.speak(500)
            await p.silence(700)
            await p.wait_for("response.audio.started")
            await p.speak(500)
            await p.silence(700)
            await p.send(CancelResponse())
            cancelled = await p.wait_for("response.cancelled")
            assert cancelled.reason == "client_cancel"
            second = await p.wait_for("response.done", count=2, timeout=30)
            assert second.text == "Now."

    run_virtual(scenario())


def test_update_session_changes_answering_and_vad_and_the_stream_clock_goes_on():
    async def scenario():
        agent, model = agent_with("Okay.")
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["one", "two"]),
                                turn=TurnConfig(speculative_stt=False)) as p:
            await p.speak(500)
            await p.silence(700)
            await p.wait_for("response.done")
            first_stop = p.events("speech.stopped")[0].audio_ms
            await p.send(UpdateSession(SessionConfig(auto_respond=False, vad_silence_ms=1200)))
            await p.speak(500)
            await p.silence(800)  # under the new 1200 ms endpoint: still speaking
            assert len(p.events("speech.stopped")) == 1
            await p.silence(700)
            await p.wait_for("transcript", count=2)
            started, stopped = p.events("speech.started")[1], p.events("speech.stopped")[1]
            assert started.audio_ms > first_stop  # the same stream clock, not restarted at 0
            assert stopped.audio_ms - started.audio_ms >= 500 + 1200
            await asyncio.sleep(0.5)
            assert len(p.events("response.started")) == 1 and model.calls == 1  # not answered

    run_virtual(scenario())


def test_clear_input_forgets_an_utterance_in_progress():
    async def scenario():
        agent, _ = agent_with("Hi.")
        stt = ScriptedSTT(["kept"])
        async with SessionProbe(agent=agent, stt=stt, turn=TurnConfig(speculative_stt=False)) as p:
            await p.speak(500)
            await p.wait_for("speech.started")
            await p.send(ClearInput())
            await p.silence(1000)
            assert p.events("speech.stopped") == [] and stt.calls == []
            await p.speak(400)
            await p.silence(700)
            stopped = await p.wait_for("speech.stopped")
            await p.wait_for("response.done")
            assert stopped.audio_ms > 1500 and len(stt.calls) == 1
            assert stt.calls[0] < 16000 * 2 * 1.5  # only the second utterance (0.4 s, pre-roll and end silence)

    run_virtual(scenario())


def test_turn_requests_carry_the_turn_id_of_their_events():
    seen: list[str | None] = []

    class Recording(AgentAdapter):
        async def open_turn(self, request):
            seen.append(request.turn_id)
            return await super().open_turn(request)

    async def scenario():
        agent, _ = agent_with("Hello.")
        async with SessionProbe(agents={"Assistant": Recording(agent, key="Assistant")}) as p:
            await p.send(InputText("hi"))
            done = await p.wait_for("response.done")
            await p.speak(500)
            await p.silence(700)
            spoken = await p.wait_for("response.done", count=2)
            assert seen == [done.turn_id, spoken.turn_id]

    run_virtual(scenario())
