"""The Session driven by events with scripted engines, on a virtual clock: no server, no socket, no real sleeps.

Every scenario runs on :func:`voiceserver.testing.virtual_clock.run_virtual`, so delays of the scripted STT, model
and TTS happen in a fixed order and the asserts are exact (no "either of two outcomes").
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel

from voiceserver.agent import Agent, create_tool
from voiceserver.engines import ProviderError
from voiceserver.session.events import (
    CancelResponse,
    InputDtmf,
    InputText,
    ResponsePlayed,
    SessionConfig,
    ToolDecision,
)
from voiceserver.settings import LimitsConfig, TurnConfig
from voiceserver.stt.fallback import FallbackSTT
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.session_probe import SessionProbe, run_virtual
from voiceserver.tts.fallback import FallbackTTS

STORY = ("One two three four. Five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen twenty.")


def agent_with(*replies, **kwargs) -> tuple[Agent, ScriptedChatModel]:
    model = ScriptedChatModel(list(replies), **kwargs)
    return Agent(name="Assistant", instructions="Be brief.", model=model), model


class BrokenSTT(ScriptedSTT):
    provider = "broken-stt"

    async def _transcribe(self, audio, language):
        raise ProviderError("stt_unavailable", "down", retryable=True)


class BrokenTTS(ToneTTS):
    provider = "broken-tts"

    async def _synthesize(self, text, voice, speed):
        raise ProviderError("tts_unavailable", "down", retryable=True)
        yield  # pragma: no cover - an async generator that fails at once


def test_a_spoken_turn_in_order_with_its_metrics():
    async def scenario():
        agent, model = agent_with(Reply("Hello there. The weather is sunny today.", first_delay_s=0.1,
                                        chunk_delay_s=0.02))
        stt = ScriptedSTT(["what is the weather"], delay_s=0.3)
        async with SessionProbe(agent=agent, stt=stt, tts=ToneTTS(first_delay_s=0.05)) as p:
            await p.speak(800)
            await p.silence(1000)
            await p.wait_for("metrics")
            assert p.kinds() == ["session.started", "speech.started", "speech.stopped", "transcript",
                                 "response.started", "response.text.delta", "response.audio.started",
                                 "response.text.delta", "response.done", "metrics"]
            deltas = [e.delta for e in p.events("response.text.delta")]
            assert deltas == ["Hello there.", " The weather is sunny today."]
            metrics = p.events("metrics")[0]
            # The transcription started at the 200 ms pause finished before the 500 ms endpoint: stt_ms is 0.
            assert metrics.extra["stt_speculative"] == 1.0 and metrics.stt_ms == 0.0
            assert metrics.llm_first_token_ms == 100.0 and metrics.tts_first_audio_ms == 50.0
            assert metrics.extra["endpoint_ms"] == 500.0
            assert metrics.voice_to_voice_ms == metrics.extra["endpoint_ms"] + 100.0 + 50.0 + 20.0  # + chunker wait
            assert model.requests[0].messages[-1].content == "what is the weather"
            assert len(stt.calls) == 1

    run_virtual(scenario())


def test_barge_in_keeps_the_text_heard_up_to_played_ms():
    async def scenario():
        agent, model = agent_with(Reply(STORY, chunk_delay_s=0.01), "Okay, stopping.")
        tts = ToneTTS(ms_per_char=40)
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["tell me a story", "stop"]), tts=tts,
                                turn=TurnConfig(output_lead_ms=100)) as p:
            await p.speak(600)
            await p.silence(700)
            started = await p.wait_for("response.audio.started")
            first_phrase = p.events("response.text.delta")[0].delta
            # The client played the first phrase (40 ms a character) and half of the second.
            played = len(first_phrase) * 40 + 800
            await asyncio.sleep(played / 1000)  # the client reports what it played as it plays
            await p.send(ResponsePlayed(started.turn_id, played))
            await p.speak(1000)  # the caller talks over the reply
            cancelled = await p.wait_for("response.cancelled")
            done = p.events("response.done")[0]
            assert cancelled.turn_id == started.turn_id and cancelled.reason == "barge_in"
            assert done.interrupted and done.text == cancelled.heard_text
            heard = cancelled.heard_text.split()
            assert " ".join(heard[:4]) == "One two three four."
            assert 4 < len(heard) < len(STORY.split())  # part of the second phrase, not all of it
            # No reply audio of the old turn leaves after the cancel.
            cut = p.first("response.cancelled").at
            assert not [s for s in p.seen if s.kind == "audio" and s.at > cut and s.event.turn_id == started.turn_id]
            await p.silence(800)
            await p.wait_for("response.done", count=2)
            # The next request sees exactly what was heard.
            history = [(m.role, m.content) for m in model.requests[1].messages if m.role != "system"]
            assert history == [("user", "tell me a story"), ("assistant", cancelled.heard_text), ("user", "stop")]

    run_virtual(scenario())


def test_barge_in_without_played_ms_keeps_the_phrases_fully_sent():
    async def scenario():
        agent, _ = agent_with(Reply(STORY, chunk_delay_s=0.01))
        # The first phrase is the first sentence here (cut at 32 characters, not the default 16), so the sleep below
        # ends inside the second one.
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["go"]), tts=ToneTTS(ms_per_char=40),
                                turn=TurnConfig(output_lead_ms=100, first_phrase_max_chars=32)) as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("response.audio.started")
            first_phrase = p.events("response.text.delta")[0].delta
            await asyncio.sleep(len(first_phrase) * 0.04 + 0.3)  # the first phrase has been sent in full
            await p.send(CancelResponse())
            cancelled = await p.wait_for("response.cancelled")
            assert cancelled.reason == "client_cancel" and cancelled.heard_text == first_phrase

    run_virtual(scenario())


def test_words_said_before_the_answer_are_carried_into_the_next_turn():
    async def scenario():
        agent, model = agent_with("Sure.")
        # The first transcription is slow: the caller speaks again before any reply started.
        stt = ScriptedSTT(lambda audio: f"heard {len(audio)} bytes", delay_s=2.0)
        async with SessionProbe(agent=agent, stt=stt, turn=TurnConfig(speculative_stt=False)) as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("speech.stopped")
            await p.silence(300)
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("response.done")
            assert len(stt.calls) == 2 and stt.calls[1] > stt.calls[0]  # the second one heard both utterances
            assert model.requests[0].messages[-1].content == f"heard {stt.calls[1]} bytes"
            assert p.kinds().count("response.started") == 1

    run_virtual(scenario())


def test_a_transcription_started_at_a_pause_is_kept_or_thrown_away():
    async def scenario():
        agent, _ = agent_with("Fine.")
        stt = ScriptedSTT(lambda audio: f"{len(audio) // 32} ms", delay_s=0.1)
        async with SessionProbe(agent=agent, stt=stt) as p:
            await p.speak(600)
            await p.silence(300)  # a 200 ms pause starts a guess...
            await p.speak(400)  # ...and speech resumes: the guess is thrown away
            await p.silence(800)
            await p.wait_for("metrics")
            heard_ms = int(p.events("transcript")[0].text.split()[0])
            assert heard_ms >= 600 + 300 + 400  # the transcript is of the whole utterance, not the first guess
            metrics = p.events("metrics")[0]
            assert metrics.extra["stt_speculative"] == 1.0  # the guess at the final pause was kept
            assert len(stt.calls) == 1  # the first guess was cancelled before it ran; no transcription after it

    run_virtual(scenario())


def test_a_reply_stops_at_a_sentence_end_and_the_model_is_cancelled():
    async def scenario():
        long = "First sentence. Second sentence. Third sentence. Fourth sentence. Fifth sentence."
        agent, model = agent_with(Reply(long, chunk_delay_s=0.01), "Short answer.")
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["hi", "and then"]),
                                turn=TurnConfig(reply_max_sentences=2)) as p:
            await p.send(InputText("hi"))
            done = await p.wait_for("response.done")
            assert done.text == "First sentence. Second sentence."
            assert model.cancelled == 1
            await p.send(InputText("and then"))
            await p.wait_for("response.done", count=2)
            history = [(m.role, m.content) for m in model.requests[1].messages if m.role != "system"]
            assert history[1] == ("assistant", "First sentence. Second sentence.")  # memory = what was spoken

    run_virtual(scenario())


def test_a_story_may_run_longer():
    async def scenario():
        long = " ".join(f"Sentence number {i}." for i in range(1, 9))
        agent, model = agent_with(Reply(long))
        async with SessionProbe(agent=agent, turn=TurnConfig(reply_max_sentences=2, long_reply_max_tokens=500,
                                                             reply_max_tokens=60)) as p:
            await p.send(InputText("Tell me a story about a dragon."))
            done = await p.wait_for("response.done")
            assert done.text == long and model.cancelled == 0
            assert model.requests[0].max_tokens == 500

    run_virtual(scenario())


def test_max_reply_chars_cancels_the_stream_and_keeps_what_was_spoken():
    async def scenario():
        agent, model = agent_with(Reply("A" * 5 + " " + "word " * 200, chunk_delay_s=0.01), "Next.")
        async with SessionProbe(agent=agent, limits=LimitsConfig(max_reply_chars=40),
                                turn=TurnConfig(reply_max_sentences=0)) as p:
            await p.send(InputText("talk"))
            done = await p.wait_for("response.done")
            assert 0 < len(done.text) <= 40 and done.text.startswith("AAAAA word")
            assert model.cancelled == 1
            assert " ".join(p.tts.phrases) == done.text
            await p.send(InputText("more"))
            await p.wait_for("response.done", count=2)
            assert [m.content for m in model.requests[1].messages if m.role == "assistant"] == [done.text]

    run_virtual(scenario())


def test_max_turn_s_ends_a_turn_with_an_error():
    async def scenario():
        agent, _ = agent_with(Reply("Too late.", first_delay_s=30.0))
        async with SessionProbe(agent=agent, limits=LimitsConfig(max_turn_s=5.0)) as p:
            await p.send(InputText("hello"))
            error = await p.wait_for("error")
            assert error.code == "turn_timeout" and p.now >= 5.0

    run_virtual(scenario())


def test_max_utterance_s_force_ends_a_long_utterance():
    async def scenario():
        agent, _ = agent_with("Okay.")
        async with SessionProbe(agent=agent, limits=LimitsConfig(max_utterance_s=2.0)) as p:
            await p.speak(3000)
            stopped = await p.wait_for("speech.stopped")
            assert stopped.audio_ms <= 2000 + 40

    run_virtual(scenario())


class Booking(BaseModel):
    people: int


def booking_agent(*replies):
    async def book(input: Booking, ctx) -> dict:
        booked.append(input.people)
        return {"booked": input.people}

    booked: list[int] = []
    tool = create_tool(id="book", description="Book a table.", input_schema=Booking, execute=book,
                       require_approval=True)
    model = ScriptedChatModel(list(replies))
    return Agent(name="Assistant", instructions="Book.", model=model, tools={"book": tool}), booked


def test_approval_by_voice():
    async def scenario():
        agent, booked = booking_agent(Reply(tool_calls=[("book", {"people": 2})]), "Your table is booked.")
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["yes please"])) as p:
            await p.send(InputText("book a table for two"))
            approval = await p.wait_for("tool.approval")
            assert approval.tool_name == "book" and approval.args == {"people": 2}
            question = (await p.wait_for("response.done")).text
            assert question.startswith("Shall I book") and booked == []
            await p.speak(600)
            await p.silence(700)
            done = await p.wait_for("response.done", count=2)
            assert done.text == "Your table is booked." and booked == [2]

    run_virtual(scenario())


def test_approval_by_message_and_by_keypad():
    async def scenario(decide):
        agent, booked = booking_agent(Reply(tool_calls=[("book", {"people": 4})]), "Booked for four.")
        async with SessionProbe(agent=agent, config=SessionConfig(keypad=True)) as p:
            await p.send(InputText("a table for four"))
            approval = await p.wait_for("tool.approval")
            question = (await p.wait_for("response.done")).text
            assert "press 1 for yes" in question
            await p.send(decide(approval))
            done = await p.wait_for("response.done", count=2)
            return done.text, booked

    assert run_virtual(scenario(lambda a: ToolDecision(a.tool_call_id, True))) == ("Booked for four.", [4])
    assert run_virtual(scenario(lambda a: InputDtmf("1"))) == ("Booked for four.", [4])


def test_a_decision_with_nothing_pending_is_an_error():
    async def scenario():
        async with SessionProbe() as p:
            await p.send(ToolDecision("call_nope", True))
            error = await p.wait_for("error")
            assert error.code == "no_pending_approval"

    run_virtual(scenario())


def test_stt_failure_falls_back_to_the_next_engine():
    async def scenario():
        agent, _ = agent_with("Heard you.")
        stt = FallbackSTT([BrokenSTT(["x"]), ScriptedSTT(["from the fallback"])])
        async with SessionProbe(agent=agent, stt=stt, turn=TurnConfig(speculative_stt=False)) as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("response.done")
            assert p.events("transcript")[0].text == "from the fallback"
            assert "error" not in p.kinds()

    run_virtual(scenario())


def test_tts_failure_falls_back_and_the_caller_hears_the_reply():
    async def scenario():
        agent, _ = agent_with("Still speaking.")
        backup = ToneTTS()
        async with SessionProbe(agent=agent, tts=FallbackTTS([BrokenTTS(), backup])) as p:
            await p.send(InputText("hi"))
            await p.wait_for("response.done")
            assert backup.phrases == ["Still speaking."] and "audio" in p.kinds(audio=True)
            assert "error" not in p.kinds()

    run_virtual(scenario())


def test_a_model_failure_without_fallback_is_reported_and_apologised_for():
    async def scenario():
        agent, _ = agent_with(Reply(error=ProviderError("llm_unavailable", "model down")), "Back again.")
        tts = ToneTTS()
        async with SessionProbe(agent=agent, tts=tts) as p:
            await p.send(InputText("hello"))
            error = await p.wait_for("error")
            done = await p.wait_for("response.done")
            assert error.code == "llm_unavailable" and error.turn_id == done.turn_id
            assert done.text == TurnConfig().apology and tts.phrases
            # The session carries on: the next turn is answered, and the failed one is in the conversation.
            await p.send(InputText("are you there"))
            assert (await p.wait_for("response.done", count=2)).text == "Back again."
            assert list(p.session.ctx.history)[:2] == [{"role": "user", "content": "hello"},
                                                       {"role": "assistant", "content": TurnConfig().apology}]

    run_virtual(scenario())


def test_every_turn_logs_one_line_with_its_stages(caplog):
    async def scenario():
        agent, _ = agent_with(Reply("Logged.", first_delay_s=0.05))
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["log me"])) as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("metrics")

    with caplog.at_level(logging.DEBUG, logger="voiceserver.session"):
        run_virtual(scenario())
    lines = [r for r in caplog.records if r.getMessage() == "turn"]
    assert len(lines) == 1
    fields = lines[0].fields
    for name in ("turn_id", "outcome", "endpoint_ms", "stt_ms", "prompt_tokens", "llm_first_token_ms",
                 "tts_first_audio_ms", "voice_to_voice_ms", "resource", "thread"):
        assert name in fields, name
    assert fields["outcome"] == "ok" and fields["llm_first_token_ms"] == 50.0
    text = [r for r in caplog.records if r.getMessage() == "turn text"]
    assert text and text[0].fields == {"transcript": "log me", "reply": "Logged."}


def test_a_workflow_question_is_asked_again_when_the_answer_does_not_fit():
    import json

    from examples.booking import booking_workflow, receptionist

    def respond(request):
        if request.response_schema:  # shaping the caller's answer into the step's resume schema
            answer = request.messages[-1].content.split("Caller's answer:")[-1].strip().rstrip(".")
            return json.dumps({"day": answer}) if answer.istitle() else "not json"
        last = request.messages[-1]
        if request.tools and last.role == "user" and "appointment" in (last.content or ""):
            return Reply(tool_calls=[("workflow-book-appointment", {"service": "haircut"})])
        return "Okay."

    async def scenario():
        workflow = booking_workflow()
        agent = receptionist(model=ScriptedChatModel([Reply(respond=respond)]), workflow=workflow)
        async with SessionProbe(agent=agent, config=SessionConfig(resource="caller-1")) as p:
            await p.send(InputText("I need an appointment"))
            asked = await p.wait_for("response.done")
            assert asked.text.endswith("Which day would you like to come in?")
            assert "workflow.event" in p.kinds()
            await p.send(InputText("uh, whenever"))
            again = await p.wait_for("response.done", count=2)
            assert again.text == "Sorry, I didn't get that. Sure. Which day would you like to come in?"
            await p.send(InputText("Friday"))
            assert (await p.wait_for("response.done", count=3)).text == "What time on Friday?"
        (run,) = await workflow.list_runs(resource_id="caller-1", status="suspended")
        assert run.suspended == [["ask-time"]]

    run_virtual(scenario())


class SpeedTTS(ToneTTS):
    """A tone voice that records the speaker and speed it was asked for."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.asked: list[tuple[str | None, float]] = []

    async def _synthesize(self, text, voice, speed):
        self.asked.append((voice, speed))
        async for chunk in super()._synthesize(text, voice, speed):
            yield chunk


def test_a_session_speaks_with_its_agents_own_voice():
    from voiceserver.voice import CompositeVoice

    async def scenario():
        own = SpeedTTS(sample_rate=24000)
        server_default = ToneTTS()
        agent = Agent(name="Own", instructions="x", model=ScriptedChatModel(["In my own voice."]),
                      voice=CompositeVoice(output=own, speaker="tone", speed=1.5))
        async with SessionProbe(agent=agent, tts=server_default) as p:
            await p.send(InputText("hi"))
            await p.wait_for("response.done")
        assert own.phrases == ["In my own voice."] and own.asked == [("tone", 1.5)]
        assert server_default.phrases == []

    run_virtual(scenario())


def test_voice_app_and_settings_voices_reach_the_session():
    from voiceserver.server.composition import build_server
    from voiceserver.settings import Settings
    from voiceserver.voice import CompositeVoice
    from voiceserver.voice_app import VoiceApp

    app_voice = CompositeVoice(output=ToneTTS(), speaker="tone", speed=0.8)
    app = VoiceApp(agents={"A": Agent(name="A", instructions="x", model=ScriptedChatModel(["ok"]))}, voice=app_voice)
    server = build_server(Settings(preload=False), app=app, stt=ScriptedSTT(["x"]), tts=ToneTTS())
    voice = server.hub.deps.agents["A"].voice()
    assert voice is not None and voice.tts is app_voice.talker() and (voice.speaker, voice.speed) == ("tone", 0.8)

    settings = Settings(preload=False, agent={"name": "Fast", "voice": {"speed": 1.4}, "memory": {"type": "none"}})
    server = build_server(settings, stt=ScriptedSTT(["x"]), tts=ToneTTS())
    voice = server.hub.deps.agents["Fast"].voice()
    assert voice is not None and voice.speed == 1.4 and voice.tts is server.tts


def test_a_complete_sentence_ends_the_turn_sooner_and_a_trailing_one_later():
    async def scenario(transcript):
        agent, _ = agent_with("Okay.")
        async with SessionProbe(agent=agent, stt=ScriptedSTT([transcript], delay_s=0.05),
                                turn=TurnConfig(complete_endpoint_ms=300, incomplete_endpoint_ms=900)) as p:
            await p.speak(600)
            await p.silence(1200)
            metrics = await p.wait_for("metrics")
            return metrics.extra["endpoint_ms"]

    assert run_virtual(scenario("What time is it?")) == 300.0
    assert run_virtual(scenario("I would like to book a table for")) == 900.0
    assert run_virtual(scenario("what is the weather")) == 500.0  # no punctuation: the client's silence_ms


def long_reply_session(stt_texts, **turn):
    agent, model = agent_with(Reply(STORY, chunk_delay_s=0.01), "Okay, stopping.")
    return SessionProbe(agent=agent, stt=ScriptedSTT(stt_texts), tts=ToneTTS(ms_per_char=40),
                        turn=TurnConfig(output_lead_ms=100, **turn)), model


def test_a_mm_hmm_pauses_the_reply_and_it_goes_on():
    async def scenario():
        probe, _ = long_reply_session(["tell me a story", "mm-hmm"])
        async with probe as p:
            await p.speak(600)
            await p.silence(700)
            started = await p.wait_for("response.audio.started")
            await asyncio.sleep(1.0)
            onset = p.now
            await p.speak(260)  # a short "mm-hmm" over the reply
            await p.silence(1500)
            await p.wait_for("response.resumed")
            done = await p.wait_for("response.done")
            assert "response.cancelled" not in p.kinds() and not done.interrupted
            assert done.text == STORY
            assert p.kinds().count("response.started") == 1  # the "mm-hmm" did not become a turn
            paused = p.first("response.paused").at
            assert paused - onset <= 0.08  # paused at the first voiced frames (60 ms), not at confirmation
            frames = [s.at for s in p.seen if s.kind == "audio" and s.event.turn_id == started.turn_id]
            assert not [t for t in frames if paused < t < p.first("response.resumed").at]
            assert p.metrics.backchannels._value.get() == 1
            # It went on at the first pause in the "mm-hmm" (its transcription said so), not at the endpoint.
            assert p.first("response.resumed").at < p.last("speech.stopped").at

    run_virtual(scenario())


def test_a_short_word_over_the_reply_interrupts_it_and_is_answered():
    async def scenario():
        probe, model = long_reply_session(["tell me a story", "stop"])
        async with probe as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("response.audio.started")
            await asyncio.sleep(1.0)
            await p.speak(260)
            await p.silence(1500)
            cancelled = await p.wait_for("response.cancelled")
            second = await p.wait_for("response.done", count=2)
            assert cancelled.reason == "barge_in" and second.text == "Okay, stopping."
            assert model.requests[1].messages[-1].content == "stop"  # the short word was not lost

    run_virtual(scenario())


def test_a_click_pauses_and_resumes_without_a_turn():
    async def scenario():
        probe, _ = long_reply_session(["tell me a story"])
        async with probe as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("response.audio.started")
            await asyncio.sleep(1.0)
            await p.speak(100)  # too short to be confirmed as speech
            await p.silence(600)
            await p.wait_for("response.resumed")
            await p.wait_for("response.done")
            assert p.kinds().count("speech.started") == 1 and "response.cancelled" not in p.kinds()

    run_virtual(scenario())


def test_real_speech_over_the_reply_stops_its_audio_at_once_and_interrupts_it():
    async def scenario():
        probe, _ = long_reply_session(["tell me a story", "wait a moment please"])
        async with probe as p:
            await p.speak(600)
            await p.silence(700)
            started = await p.wait_for("response.audio.started")
            await asyncio.sleep(1.0)
            onset = p.now
            await p.speak(900)
            cancelled = await p.wait_for("response.cancelled")
            frames = [s.at for s in p.seen if s.kind == "audio" and s.event.turn_id == started.turn_id]
            assert max(frames) - onset <= 0.08  # no reply audio after the first voiced frames
            # Interrupted once the speech outlasted interrupt_after_ms past its confirmation (200 ms of voice).
            assert abs(p.first("response.cancelled").at - onset - (0.2 + 0.5)) <= 0.06
            assert cancelled.reason == "barge_in"

    run_virtual(scenario())


def test_a_reply_cut_at_its_limit_still_reports_its_prompt():
    from voiceserver.session.agent_port import TurnStats, translate_agent_chunk

    actions = translate_agent_chunk("prompt-read", {"usage": {"prompt_tokens": 240, "cached_tokens": 200}}, "r",
                                    question_for=lambda n, a: "", schema_for=lambda w, s: None,
                                    known_workflows=frozenset())
    assert actions == [TurnStats({"prompt_tokens": 240.0, "cached_tokens": 200.0})]


def test_a_short_first_phrase_setting_speaks_the_first_words_first():
    """turn.first_phrase_max_chars 16: synthesis of an unpunctuated sentence starts after three or four words,
    not at its end; the rest of the sentence is the next phrase."""
    async def scenario():
        agent, _ = agent_with(Reply("The capital of France is Paris. It is lovely.", chunk_delay_s=0.01))
        tts = ToneTTS()
        async with SessionProbe(agent=agent, stt=ScriptedSTT(["capital of France"]), tts=tts,
                                turn=TurnConfig(first_phrase_max_chars=16)) as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("response.done")
            assert tts.phrases[:2] == ["The capital of", "France is Paris."]

    run_virtual(scenario())
