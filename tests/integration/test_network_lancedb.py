"""Network runs with the real Memory on LanceDB (temp directory): the conversation across runs, and suspended
network runs (a tool approval, a workflow suspension) continued by new Agent, Memory and store objects."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from voiceserver.agent import Agent, create_tool
from voiceserver.llm.base import ChatRequest
from voiceserver.memory import LanceDBStore, Memory
from voiceserver.network import approve_network_tool_call, list_network_runs, resume_network, run_network
from voiceserver.network.routing import COMPLETION_TITLE, ROUTING_TITLE
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.workflows import create_step, create_workflow

MEM = {"resource": "caller-1", "thread": "call-1"}


class City(BaseModel):
    city: str


class Booking(BaseModel):
    name: str


class Day(BaseModel):
    day: str


def make_memory(path) -> Memory:
    return Memory(storage=LanceDBStore(uri=path / "memory"), embedder=None,
                  options={"last_messages": 20, "working_memory": {"enabled": False}})


def scripted(answers: dict[str, list[dict]], requests: list[ChatRequest] | None = None) -> ScriptedChatModel:
    """A model answering routing and completion calls from per-kind queues (by the response schema's title)."""

    def respond(request: ChatRequest) -> str:
        if requests is not None:
            requests.append(request)
        title = (request.response_schema or {}).get("title")
        kind = {ROUTING_TITLE: "route", COMPLETION_TITLE: "complete"}.get(title, "other")
        return json.dumps(answers[kind].pop(0))

    return ScriptedChatModel([Reply(respond=respond)])


def weather_tool(calls: list[str]):
    async def execute(input: City) -> dict:
        calls.append(input.city)
        return {"city": input.city, "sky": "sunny"}

    return create_tool(id="weather", description="Current weather for a city.", input_schema=City,
                       execute=execute, require_approval=True)


def booking_workflow(store: LanceDBStore):
    async def ask_day(ctx) -> dict:
        if ctx.resume_data is None:
            ctx.suspend({"prompt": "Which day?"})
        return {"confirmation": f"{ctx.input_data.name} on {ctx.resume_data.day}"}

    step = create_step(id="ask-day", input_schema=Booking, output_schema=None, resume_schema=Day, execute=ask_day)
    return create_workflow(id="booking", description="Books an appointment.", input_schema=Booking,
                           storage=store).then(step).commit()


async def test_network_conversation_is_kept_in_lancedb_memory(tmp_path):
    memory = make_memory(tmp_path)
    await memory.open()
    try:
        requests: list[ChatRequest] = []
        answers = {"route": [{"primitive_id": "none", "primitive_type": "none", "prompt": "Hello Ann.",
                              "selection_reason": "greeting"},
                             {"primitive_id": "none", "primitive_type": "none", "prompt": "You are Ann.",
                              "selection_reason": "from the conversation"}]}
        agent = Agent(name="Concierge", instructions="Help.", model=scripted(answers, requests), memory=memory)
        first = await run_network(agent, "My name is Ann", memory=MEM).result()
        second = await run_network(agent, "What is my name?", memory=MEM).result()
        assert (first.result, second.result) == ("Hello Ann.", "You are Ann.")
        saved = (await memory.recall("call-1", resource_id="caller-1")).messages
        assert [(m.role, m.content) for m in saved] == [
            ("user", "My name is Ann"), ("assistant", "Hello Ann."),
            ("user", "What is my name?"), ("assistant", "You are Ann.")]
        assert saved[1].metadata["network"]["final"] is True
        shown = [(m.role, m.content) for m in requests[1].messages if m.role != "system"]
        assert shown[:2] == [("user", "My name is Ann"), ("assistant", "Hello Ann.")]
        # Finished runs are kept in LanceDB too (kind "network"); none is waiting.
        record = await memory.storage.load_run("network", second.run_id)
        assert record is not None and record.status == "success" and record.thread_id == "call-1"
        assert await list_network_runs(agent) == []
    finally:
        await memory.close()


async def test_tool_approval_survives_new_agent_memory_and_store_objects(tmp_path):
    memory = make_memory(tmp_path)
    await memory.open()
    calls: list[str] = []
    answers: dict[str, list[dict]] = {"route": [{"primitive_id": "weather", "primitive_type": "tool",
                                                 "prompt": '{"city": "Paris"}', "selection_reason": "weather"}]}
    agent = Agent(name="Concierge", id="concierge", model=scripted(answers), memory=memory,
                  tools={"weather": weather_tool(calls)})
    result = await run_network(agent, "Weather in Paris?", memory=MEM).result()
    assert result.status == "suspended" and calls == []
    await memory.close()

    memory2 = make_memory(tmp_path)
    await memory2.open()
    try:
        answers2: dict[str, list[dict]] = {"complete": [{"is_complete": True, "final_result": "Sunny in Paris.",
                                                         "reason": "answered"}]}
        agent2 = Agent(name="Concierge", id="concierge", model=scripted(answers2), memory=memory2,
                       tools={"weather": weather_tool(calls)})
        waiting = await list_network_runs(agent2, resource_id="caller-1")
        assert [r.run_id for r in waiting] == [result.run_id]
        stream = await approve_network_tool_call(agent2, run_id=result.run_id)
        events = [e.type async for e in stream]
        final = await stream.result()
        assert calls == ["Paris"]
        assert events[:2] == ["tool-execution-start", "tool-execution-end"]
        assert final.status == "success" and final.result == "Sunny in Paris."
        saved = (await memory2.recall("call-1", resource_id="caller-1")).messages
        assert [m.content for m in saved][0] == "Weather in Paris?"
        assert saved[1].content.startswith("[tool weather] ") and saved[1].metadata["network"]["iteration"] == 1
        assert saved[-1].content == "Sunny in Paris."
        assert (await memory2.storage.load_run("network", result.run_id)).status == "success"
    finally:
        await memory2.close()


async def test_suspended_workflow_resumes_from_new_objects(tmp_path):
    memory = make_memory(tmp_path)
    await memory.open()
    route = {"primitive_id": "booking", "primitive_type": "workflow", "prompt": '{"name": "Ann"}',
             "selection_reason": "booking"}
    agent = Agent(name="Concierge", id="concierge", model=scripted({"route": [route]}), memory=memory,
                  workflows={"booking": booking_workflow(memory.storage)})
    stream = run_network(agent, "Book Ann", memory=MEM)
    events: list[Any] = [e async for e in stream]
    result = await stream.result()
    assert result.status == "suspended"
    suspended = [e.payload for e in events if e.type == "workflow-execution-suspended"][0]
    assert suspended["suspend_payload"] == {"prompt": "Which day?"}
    await memory.close()

    memory2 = make_memory(tmp_path)
    await memory2.open()
    try:
        done = {"is_complete": True, "final_result": "Ann is booked on Friday.", "reason": "booked"}
        agent2 = Agent(name="Concierge", id="concierge", model=scripted({"complete": [done]}), memory=memory2,
                       workflows={"booking": booking_workflow(memory2.storage)})
        stream = await resume_network(agent2, {"day": "friday"}, run_id=result.run_id)
        events = [e async for e in stream]
        final = await stream.result()
        end = [e.payload for e in events if e.type == "workflow-execution-end"][0]
        assert end["status"] == "success" and end["result"] == {"confirmation": "Ann on friday"}
        assert end["workflow_run_id"] == suspended["workflow_run_id"]
        assert final.status == "success" and final.result == "Ann is booked on Friday."
    finally:
        await memory2.close()
