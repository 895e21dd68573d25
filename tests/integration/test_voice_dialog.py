"""Spoken dialog rules with scripted engines: approval by client message and by voice (yes / no / unclear), and a
caller who hangs up mid-workflow being offered to continue when they call back."""

import json

import numpy as np
from pydantic import BaseModel

from examples.booking import booking_workflow, receptionist
from voiceserver.agent import Agent, create_tool
from voiceserver.client import VoiceClient
from voiceserver.session.speech_text import approval_question, classify_yes_no, speakable_result, workflow_prompt
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT
from voiceserver.testing.harness import voice_server


class Transfer(BaseModel):
    amount: int


def transfer_agent(calls: list):
    async def execute(input: Transfer, ctx) -> dict:
        calls.append(input.amount)
        return {"ok": True}

    tool = create_tool(id="transfer", description="Move money.", input_schema=Transfer, execute=execute,
                       require_approval=True)
    model = ScriptedChatModel([Reply(tool_calls=[("transfer", {"amount": 50})]), "Transferred.",
                               Reply(tool_calls=[("transfer", {"amount": 50})]), "Not transferred."])
    return Agent(name="Bank", instructions="Help.", model=model, tools={"transfer": tool}), model


def test_yes_no_classifier():
    for text in ("Yes.", "yeah sure", "Okay, go ahead", "Yes please do it", "That's right"):
        assert classify_yes_no(text) == "yes", text
    for text in ("No.", "nope", "Don't do that", "cancel it", "no thanks"):
        assert classify_yes_no(text) == "no", text
    for text in ("", "maybe", "what time is it", "yes no"):
        assert classify_yes_no(text) is None, text


def test_spoken_texts():
    question = approval_question(None, "book_table", {"people": 2})
    assert question == "Shall I book table with people 2? Please say yes or no."
    assert workflow_prompt({"prompt": " Which day? "}) == "Which day?" and workflow_prompt({"x": 1}) is None
    assert speakable_result("book-appointment", {"message": "Booked."}) == "Booked."
    assert speakable_result("book-appointment", {"id": 7}) == "Done. Book appointment: id 7."


async def test_client_message_approves():
    calls: list[int] = []
    agent, _ = transfer_agent(calls)
    async with voice_server(agent=agent) as vs, VoiceClient.connect(vs.ws_url) as client:
        ask = await client.ask_text("send fifty")
        approval = next(e for e in ask.events if e["type"] == "tool.approval")
        assert calls == []
        await client.send_json({"type": "tool.approve", "tool_call_id": approval["tool_call_id"]})
        done = await client.collect_turn(20)
        assert done.reply_text == "Transferred." and calls == [50]
        await client.send_json({"type": "tool.approve", "tool_call_id": approval["tool_call_id"]})
        error = await client.wait_for("error")
        assert error["code"] == "no_pending_approval", "a second approval never runs the tool twice"
    assert calls == [50]


async def test_spoken_no_declines_and_unclear_asks_again():
    calls: list[int] = []
    agent, model = transfer_agent(calls)
    stt = ScriptedSTT(["send fifty", "hmm what", "no"])
    model.script = model.script[2:]  # start with the second tool call, then "Not transferred."
    t = np.arange(9600) / 16000
    tone = (0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()  # webrtcvad hears a tone as voice
    async with voice_server(agent=agent, stt=stt) as vs, VoiceClient.connect(vs.ws_url) as client:
        first = await client.ask_audio(tone, realtime=False)
        assert first.reply_text == "Shall I transfer with amount 50? Please say yes or no."
        unclear = await client.ask_audio(tone, realtime=False)
        assert unclear.transcript == "hmm what"
        assert unclear.reply_text.startswith("Sorry, I need a yes or a no.")
        declined = await client.ask_audio(tone, realtime=False)
        assert declined.transcript == "no"
        assert declined.reply_text == "Not transferred."
    assert calls == [], "declined: the tool never ran"
    denied = [m for m in model.requests[-1].messages if m.role == "tool"]
    assert denied and "declined" in (denied[-1].content or "").lower() or "said no" in (denied[-1].content or "")


def shaping_model() -> ScriptedChatModel:
    def respond(request):
        if request.response_schema:
            props = request.response_schema.get("properties", {})
            answer = request.messages[-1].content.split("Caller's answer:")[-1].strip().rstrip(".")
            if "day" in props:
                return json.dumps({"day": answer}) if answer.istitle() else "not json"
            if "time" in props:
                return json.dumps({"time": answer})
            return json.dumps({"confirmed": classify_yes_no(answer) == "yes"})
        last = request.messages[-1]
        if request.tools and last.role == "user" and "appointment" in (last.content or ""):
            return Reply(tool_calls=[("workflow-book-appointment", {"service": "haircut"})])
        return "Okay."

    return ScriptedChatModel([Reply(respond=respond)])


async def test_hang_up_mid_workflow_then_call_back():
    workflow = booking_workflow()
    agent = receptionist(model=shaping_model(), workflow=workflow)
    async with voice_server(agent=agent) as vs:
        async with VoiceClient.connect(vs.ws_url, resource="caller-9") as client:
            first = await client.ask_text("I need an appointment")
            assert first.reply_text.endswith("Which day would you like to come in?")
            retry = await client.ask_text("uh, whenever")
            assert retry.reply_text == "Sorry, I didn't get that. Sure. Which day would you like to come in?"
            second = await client.ask_text("Friday")
            assert second.reply_text == "What time on Friday?"
        # hung up: the run waits in storage for this caller
        (waiting,) = await workflow.list_runs(resource_id="caller-9", status="suspended")
        assert waiting.suspended == [["ask-time"]]
        async with VoiceClient.connect(vs.ws_url, resource="caller-9") as client:
            offer = await client.collect_turn(20)
            assert offer.reply_text.startswith("Welcome back.") and "Book an appointment" in offer.reply_text
            again = await client.ask_text("yes please")
            assert again.reply_text == "What time on Friday?"
            confirm = await client.ask_text("10 am")
            assert confirm.reply_text == "So that is Friday at 10 am. Shall I book it?"
            done = await client.ask_text("yes")
            assert done.reply_text.startswith("You are booked for Friday at 10 am.")
        async with VoiceClient.connect(vs.ws_url, resource="caller-other") as client:
            hello = await client.ask_text("what is the weather")
            assert hello.reply_text == "Okay.", "another caller is not offered someone else's run"
    (run,) = await workflow.list_runs(resource_id="caller-9")
    assert run.status == "success"


async def test_call_back_and_decline_cancels_the_run():
    workflow = booking_workflow()
    agent = receptionist(model=shaping_model(), workflow=workflow)
    async with voice_server(agent=agent) as vs:
        async with VoiceClient.connect(vs.ws_url, resource="caller-3") as client:
            await client.ask_text("book an appointment")
        async with VoiceClient.connect(vs.ws_url, resource="caller-3") as client:
            offer = await client.collect_turn(20)
            assert offer.reply_text.startswith("Welcome back.")
            cancelled = await client.ask_text("no thanks")
            assert cancelled.reply_text == "Okay, I have cancelled it."
    (run,) = await workflow.list_runs(resource_id="caller-3")
    assert run.status == "canceled"


def network_brain(calls: list[str]):
    """A scripted routing model: routes a booking request to the workflow, shapes answers, says when it is done."""
    from voiceserver.network.routing import COMPLETION_TITLE, ROUTING_TITLE

    def respond(request):
        title = (request.response_schema or {}).get("title")
        if title == ROUTING_TITLE:
            calls.append("route")
            return json.dumps({"primitive_id": "book-appointment", "primitive_type": "workflow",
                               "prompt": json.dumps({"service": "checkup"}), "selection_reason": "a booking"})
        if title == COMPLETION_TITLE:
            calls.append("complete")
            return json.dumps({"is_complete": True, "final_result": "", "reason": "booked"})
        if request.response_schema:  # shaping the caller's answer to a step's question
            props = request.response_schema.get("properties", {})
            answer = request.messages[-1].content.split("Caller's answer:")[-1].strip().rstrip(".")
            if "day" in props:
                return json.dumps({"day": answer})
            if "time" in props:
                return json.dumps({"time": answer})
            return json.dumps({"confirmed": classify_yes_no(answer) == "yes"})
        return "Okay."

    return ScriptedChatModel([Reply(respond=respond)])


async def test_network_mode_routes_a_spoken_request_to_a_workflow(tmp_path):
    from voiceserver.memory import LanceDBStore, Memory

    calls: list[str] = []
    memory = Memory(LanceDBStore(str(tmp_path / "mem")), embedder=None)
    workflow = booking_workflow()
    agent = receptionist(model=network_brain(calls), workflow=workflow)
    agent.memory = memory
    agent.voice_mode = "network"
    async with voice_server(agent=agent, memory=memory) as vs, \
            VoiceClient.connect(vs.ws_url, resource="caller-n") as client:
        first = await client.ask_text("I would like an appointment")
        assert first.reply_text == "Sure. Which day would you like to come in?"
        kinds = [e["event"]["type"] for e in first.events if e["type"] == "workflow.event"]
        assert "workflow-start" in kinds and "workflow-step-suspended" in kinds
        assert (await client.ask_text("Monday")).reply_text == "What time on Monday?"
        assert (await client.ask_text("9 am")).reply_text == "So that is Monday at 9 am. Shall I book it?"
        done = await client.ask_text("yes")
    assert done.reply_text.startswith("You are booked for Monday at 9 am."), done.reply_text
    assert calls[0] == "route" and "complete" in calls
    (run,) = await workflow.list_runs()
    assert run.status == "success"
