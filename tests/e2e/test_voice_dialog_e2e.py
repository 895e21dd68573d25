"""Spoken dialogs with the real speech models (faster-whisper in, Piper out) and a scripted model:
a tool approved by a spoken "yes", and the appointment-booking workflow driven entirely by voice."""

import json
import re

import pytest
import pytest_asyncio
from pydantic import BaseModel

from examples.booking import booking_workflow, receptionist
from voiceserver.agent import Agent, create_tool
from voiceserver.audio import rms_dbfs
from voiceserver.client import VoiceClient
from voiceserver.session.speech_text import classify_yes_no
from voiceserver.stt.faster_whisper import FasterWhisperSTT
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.harness import voice_server
from voiceserver.testing.speech import speak
from voiceserver.tts.piper import PiperTTS

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engines(models_dir):
    stt = FasterWhisperSTT(models_dir / "whisper-base")
    tts = PiperTTS(models_dir / "piper" / "en_US-joe-medium.onnx")
    await stt.load()
    await tts.load()

    def say_it(text: str) -> bytes:
        return speak(models_dir, text)

    yield stt, tts, say_it
    await stt.close()
    await tts.close()


async def say(client: VoiceClient, audio: bytes):
    """Speak in real time and collect the server's turn (transcript, reply, audio, other events)."""
    return await client.ask_audio(audio, realtime=True, timeout=120)


class TableBooking(BaseModel):
    people: int
    time: str


async def test_spoken_yes_approves_a_tool(engines):
    stt, tts, speak = engines
    booked: list[dict] = []

    async def book_table(input: TableBooking, ctx) -> dict:
        booked.append(input.model_dump())
        return {"booked": True}

    table = create_tool(id="book_table", description="Book a restaurant table.", input_schema=TableBooking,
                        execute=book_table, require_approval=True)
    table.approval_prompt = "Shall I book a table for {people} at {time}?"
    model = ScriptedChatModel([Reply(tool_calls=[("book_table", {"people": 2, "time": "seven"})]),
                               "Done, your table for two at seven is booked."])
    agent = Agent(name="Concierge", instructions="Book tables.", model=model, tools={"book_table": table})
    async with voice_server(agent=agent, stt=stt, tts=tts) as vs, VoiceClient.connect(vs.ws_url) as client:
        ask = await say(client, speak("Please book a table for two at seven."))
        approval = next(e for e in ask.events if e["type"] == "tool.approval")
        assert approval["tool_name"] == "book_table" and approval["args"] == {"people": 2, "time": "seven"}
        assert ask.reply_text == "Shall I book a table for 2 at seven?"
        assert rms_dbfs(ask.audio) > -40, "the question was spoken"
        assert booked == [], "nothing runs before the caller agrees"
        answer = await say(client, speak("Yes, go ahead."))
    assert classify_yes_no(answer.transcript) == "yes", answer.transcript
    assert booked == [{"people": 2, "time": "seven"}], "the tool ran exactly once"
    assert answer.reply_text == "Done, your table for two at seven is booked."
    assert rms_dbfs(answer.audio) > -40


def booking_model() -> ScriptedChatModel:
    """Routes a booking request to the workflow and shapes the caller's answers (what a real model would do)."""

    def respond(request):
        if request.response_schema:
            props = request.response_schema.get("properties", {})
            answer = request.messages[-1].content.split("Caller's answer:")[-1].strip()
            if "day" in props:
                day = next((d for d in WEEKDAYS if d in answer.lower()), None)
                return json.dumps({"day": day.capitalize()}) if day else "{}"
            if "time" in props:
                match = re.search(r"\b(\d{1,2}|one|two|three|four|five|ten|eleven)\b.*", answer.lower())
                return json.dumps({"time": match.group(0).strip(" .") if match else ""}) if match else "{}"
            if "confirmed" in props:
                return json.dumps({"confirmed": classify_yes_no(answer) == "yes"})
        last = request.messages[-1]
        if request.tools and last.role == "user" and "appointment" in (last.content or "").lower():
            return Reply(tool_calls=[("workflow-book-appointment", {"service": "appointment"})])
        return "Okay."

    return ScriptedChatModel([Reply(respond=respond)])


async def test_booking_workflow_driven_by_voice(engines):
    stt, tts, speak = engines
    workflow = booking_workflow()
    agent = receptionist(model=booking_model(), workflow=workflow)
    async with voice_server(agent=agent, stt=stt, tts=tts) as vs, \
            VoiceClient.connect(vs.ws_url, resource="caller-42") as client:
        start = await say(client, speak("Hello, I would like to book an appointment."))
        assert "appointment" in start.transcript.lower()
        assert start.reply_text.endswith("Which day would you like to come in?"), start.reply_text
        kinds = [e["event"]["type"] for e in start.events if e["type"] == "workflow.event"]
        assert "workflow-start" in kinds and "workflow-step-suspended" in kinds

        day = await say(client, speak("On Tuesday, please."))
        assert day.reply_text == "What time on Tuesday?", (day.transcript, day.reply_text)

        time_turn = await say(client, speak("At three in the afternoon."))
        assert time_turn.reply_text.startswith("So that is Tuesday at "), (time_turn.transcript,
                                                                          time_turn.reply_text)
        assert time_turn.reply_text.endswith("Shall I book it?")

        done = await say(client, speak("Yes, that's right."))
        assert done.reply_text.startswith("You are booked for Tuesday at "), (done.transcript, done.reply_text)
        finish = [e for e in done.events if e["type"] == "workflow.event"
                  and e["event"]["type"] == "workflow-finish"]
        assert finish, [e["event"]["type"] for e in done.events if e["type"] == "workflow.event"]
        for turn in (start, day, time_turn, done):
            assert rms_dbfs(turn.audio) > -40, "every answer was spoken"
    runs = await workflow.list_runs(resource_id="caller-42")
    assert len(runs) == 1 and runs[0].status == "success" and runs[0].result["booked"] is True
    assert runs[0].result["message"].startswith("You are booked for Tuesday")

