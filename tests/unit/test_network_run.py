"""Network runs with scripted models: routing to each primitive type, completion, limits, memory, structured output.

The routing agent's model answers through ``Brain``: one queue of JSON answers per kind of call (routing decision,
completion check, input of a workflow or tool, final object), told apart by the title of the request's
response_schema. Memory is a small in-test fake with the two methods the network uses (prepare / save_messages).
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from voiceserver.agent.agent import Agent
from voiceserver.agent.tools import create_tool
from voiceserver.llm.base import ChatRequest
from voiceserver.network import NetworkError, run_network
from voiceserver.network.routing import COMPLETION_TITLE, ROUTING_TITLE
from voiceserver.runs.store import InMemoryRunStore
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.workflows import create_step, create_workflow

MEM = {"resource": "user-1", "thread": "thread-1"}


class FakeMemory:
    """prepare / save_messages over a list, per (resource, thread)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.prepared: list[dict[str, Any]] = []

    async def prepare(self, *, resource_id: str, thread_id: str, query: str) -> Any:
        self.prepared.append({"resource_id": resource_id, "thread_id": thread_id, "query": query})
        history = [m for m in self.messages if m["resource_id"] == resource_id and m["thread_id"] == thread_id]
        return SimpleNamespace(history=history, recalled=[], system_message=None, working_memory_tool=None)

    async def save_messages(self, messages: list[dict[str, Any]]) -> None:
        self.messages.extend(messages)


class Brain:
    """Scripted answers of the routing agent's model, per call kind; records which kinds were asked."""

    def __init__(self, routes: list[dict], completions: list[dict] | None = None,
                 inputs: list[dict] | None = None, final: list[Any] | None = None):
        self.routes, self.completions = list(routes), list(completions or [])
        self.inputs, self.final = list(inputs or []), list(final or [])
        self.asked: list[str] = []
        self.requests: list[ChatRequest] = []

    def respond(self, request: ChatRequest) -> str:
        self.requests.append(request)
        title = (request.response_schema or {}).get("title")
        if title == ROUTING_TITLE:
            self.asked.append("route")
            return json.dumps(self.routes.pop(0))
        if title == COMPLETION_TITLE:
            self.asked.append("complete")
            return json.dumps(self.completions.pop(0))
        if request.messages[0].content.startswith("You write the input"):
            self.asked.append("input")
            return json.dumps(self.inputs.pop(0))
        self.asked.append("final")
        value = self.final.pop(0)
        return value if isinstance(value, str) else json.dumps(value)

    def model(self) -> ScriptedChatModel:
        return ScriptedChatModel([Reply(respond=self.respond)])


def route(pid: str, ptype: str, prompt: str = "", reason: str = "fits") -> dict:
    return {"primitive_id": pid, "primitive_type": ptype, "prompt": prompt, "selection_reason": reason}


def done(result: str | None = None, complete: bool = True, reason: str = "answered") -> dict:
    return {"is_complete": complete, "final_result": result or "", "reason": reason}


class City(BaseModel):
    city: str


class Booking(BaseModel):
    name: str
    day: str


class Answer(BaseModel):
    city: str
    sky: str


def weather_tool(calls: list[str], **kwargs: Any):
    async def execute(input: City) -> dict:
        calls.append(input.city)
        return {"city": input.city, "sky": "sunny"}

    return create_tool(id="weather", description="Current weather for a city.", input_schema=City,
                       execute=execute, **kwargs)


def booking_workflow():
    async def book(ctx) -> dict:
        return {"confirmation": f"{ctx.input_data.name} on {ctx.input_data.day}"}

    step = create_step(id="book", input_schema=Booking, output_schema=None, execute=book)
    return create_workflow(id="booking", description="Books an appointment.", input_schema=Booking) \
        .then(step).commit()


def network_agent(brain: Brain, *, memory: Any = None, tools: dict | None = None, agents: dict | None = None,
                  workflows: dict | None = None, storage: Any = None) -> Agent:
    return Agent(name="Concierge", id="concierge", instructions="You help travellers.", model=brain.model(),
                 memory=memory if memory is not None else FakeMemory(), tools=tools, agents=agents,
                 workflows=workflows, storage=storage or InMemoryRunStore())


async def collect(stream) -> tuple[list, Any]:
    events = [e async for e in stream]
    return events, await stream.result()


def types(events: list) -> list[str]:
    return [e.type for e in events]


def of(events: list, event_type: str) -> list[dict]:
    return [e.payload for e in events if e.type == event_type]


# --- routing to each primitive type ----------------------------------------------------------------------------------


async def test_routes_to_an_agent_and_forwards_its_stream():
    researcher = Agent(name="Researcher", description="Finds facts about places.",
                       model=ScriptedChatModel(["Paris is the capital of France."]))
    brain = Brain([route("researcher", "agent", "What is Paris?")],
                  [done("Paris is the capital of France.")])
    memory = FakeMemory()
    agent = network_agent(brain, memory=memory, agents={"researcher": researcher})
    events, result = await collect(run_network(agent, "Tell me about Paris", memory=MEM))

    assert types(events)[:3] == ["routing-agent-start", "routing-agent-end", "agent-execution-start"]
    assert types(events)[-2:] == ["network-execution-event-step-finish", "network-execution-event-finish"]
    end = of(events, "routing-agent-end")[0]
    assert (end["primitive_id"], end["primitive_type"], end["prompt"]) == ("researcher", "agent", "What is Paris?")
    start = of(events, "agent-execution-start")[0]
    assert start["agent_id"] == "researcher" and start["prompt"] == "What is Paris?"
    inner = [e for e in events if e.type.startswith("agent-execution-event-")]
    assert {"agent-execution-event-start", "agent-execution-event-text-delta",
            "agent-execution-event-finish"} <= set(types(inner))
    assert all(e.payload["agent_run_id"] == start["agent_run_id"] for e in inner)
    text = "".join(e.payload["text"] for e in inner if e.type == "agent-execution-event-text-delta")
    assert text == "Paris is the capital of France."
    assert of(events, "agent-execution-end")[0]["result"] == "Paris is the capital of France."
    assert of(events, "network-execution-event-step-finish") == [
        {"task": "Tell me about Paris", "result": "Paris is the capital of France.", "is_complete": True,
         "iteration": 1}]
    assert result.status == "success" and result.is_complete and result.iteration == 1
    assert result.result == "Paris is the capital of France."
    assert brain.asked == ["route", "complete"]
    # The routing agent saw the agent's description and the caller's task; memory got the turn.
    routing_request = brain.requests[0]
    assert "- researcher: Finds facts about places." in routing_request.messages[0].content
    assert routing_request.messages[0].content.startswith("You help travellers.")
    assert routing_request.response_schema["properties"]["primitive_id"]["enum"] == ["researcher", "none"]
    roles = [(m["role"], m["content"]) for m in memory.messages]
    assert roles[0] == ("user", "Tell me about Paris")
    assert roles[-1] == ("assistant", "Paris is the capital of France.")
    assert memory.prepared[0] == {"resource_id": "user-1", "thread_id": "thread-1", "query": "Tell me about Paris"}


async def test_routes_to_a_workflow_with_input_from_structured_output():
    brain = Brain([route("booking", "workflow", "Book Ann for Tuesday")],
                  [done("Booked: Ann on tuesday.")], inputs=[{"name": "Ann", "day": "tuesday"}])
    agent = network_agent(brain, workflows={"booking": booking_workflow()})
    events, result = await collect(run_network(agent, "Book an appointment for Ann on Tuesday", memory=MEM))

    assert brain.asked == ["route", "input", "complete"]
    input_request = brain.requests[1]
    assert input_request.response_schema["title"] == "Booking"
    assert set(input_request.response_schema["required"]) == {"name", "day"}
    start = of(events, "workflow-execution-start")[0]
    assert start["workflow_id"] == "booking" and start["input"] == {"name": "Ann", "day": "tuesday"}
    inner = [e.type for e in events if e.type.startswith("workflow-execution-event-")]
    assert inner[0] == "workflow-execution-event-workflow-start"
    assert "workflow-execution-event-workflow-step-start" in inner
    assert inner[-1] == "workflow-execution-event-workflow-finish"
    end = of(events, "workflow-execution-end")[0]
    assert end["status"] == "success" and end["result"] == {"confirmation": "Ann on tuesday"}
    assert end["workflow_run_id"] == start["workflow_run_id"]
    assert result.status == "success" and result.result == "Booked: Ann on tuesday."
    assert result.steps[0]["result"] == '{"confirmation": "Ann on tuesday"}'


async def test_routes_to_a_tool_with_a_json_prompt_and_no_input_call():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')], [done("Sunny in Paris.")])
    agent = network_agent(brain, tools={"weather": weather_tool(calls)})
    events, result = await collect(run_network(agent, "Weather in Paris?", memory=MEM))

    assert calls == ["Paris"]
    assert brain.asked == ["route", "complete"]
    start, end = of(events, "tool-execution-start")[0], of(events, "tool-execution-end")[0]
    assert start["tool_name"] == "weather" and start["args"] == {"city": "Paris"}
    assert end["tool_call_id"] == start["tool_call_id"]
    assert end["result"] == {"city": "Paris", "sky": "sunny"} and end["is_error"] is False
    assert result.result == "Sunny in Paris."


async def test_tool_arguments_come_from_structured_output_when_the_prompt_is_text():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", "the weather in Oslo")], [done("Sunny in Oslo.")],
                  inputs=[{"town": "Oslo"}, {"city": "Oslo"}])  # the first answer is invalid: asked again
    agent = network_agent(brain, tools={"weather": weather_tool(calls)})
    _, result = await collect(run_network(agent, "Weather in Oslo?", memory=MEM))
    assert calls == ["Oslo"]
    assert brain.asked == ["route", "input", "input", "complete"]
    assert "city: Field required" in brain.requests[2].messages[1].content
    assert result.status == "success"


async def test_routing_to_none_answers_directly():
    brain = Brain([route("none", "none", "Hello! How can I help with your trip?", "a greeting")])
    memory = FakeMemory()
    agent = network_agent(brain, memory=memory, tools={"weather": weather_tool([])})
    events, result = await collect(run_network(agent, "Hi there", memory=MEM))
    assert types(events) == ["routing-agent-start", "routing-agent-end", "network-execution-event-step-finish",
                             "network-execution-event-finish"]
    assert of(events, "routing-agent-end")[0]["is_complete"] is True
    assert brain.asked == ["route"]  # no completion check for a direct answer
    assert result.status == "success" and result.result == "Hello! How can I help with your trip?"
    assert memory.messages[-1]["content"] == "Hello! How can I help with your trip?"


# --- stopping ------------------------------------------------------------------------------------------------------


async def test_completion_check_stops_the_loop_once_done():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", '{"city": "Paris"}'), route("weather", "tool", '{"city": "Rome"}'),
                   route("weather", "tool", '{"city": "Oslo"}')],
                  [done(complete=False, reason="Rome is missing"), done("Paris and Rome are sunny.")])
    agent = network_agent(brain, tools={"weather": weather_tool(calls)})
    events, result = await collect(run_network(agent, "Weather in Paris and Rome?", memory=MEM, max_steps=5))
    assert calls == ["Paris", "Rome"]
    assert [p["is_complete"] for p in of(events, "network-execution-event-step-finish")] == [False, True]
    assert result.status == "success" and result.iteration == 2 and result.result == "Paris and Rome are sunny."
    # The second routing decision saw the first step's result and why the task was not done yet.
    second_routing = [r for r in brain.requests if (r.response_schema or {}).get("title") == ROUTING_TITLE][1]
    shown = second_routing.messages[-1].content
    assert '1. tool weather (prompt: {"city": "Paris"}) -> result: {"city": "Paris", "sky": "sunny"}' in shown
    assert "Not done yet: Rome is missing" in shown


async def test_max_steps_stops_an_unfinished_task():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')] * 3, [done(complete=False, reason="more")] * 3)
    agent = network_agent(brain, tools={"weather": weather_tool(calls)})
    events, result = await collect(run_network(agent, "Weather everywhere", memory=MEM, max_steps=2))
    assert calls == ["Paris", "Paris"]
    assert len(of(events, "network-execution-event-step-finish")) == 2
    finish = of(events, "network-execution-event-finish")[0]
    assert finish["is_complete"] is False and finish["iteration"] == 2
    assert finish["reason"].startswith("max_steps (2) reached")
    assert result.status == "max_steps" and not result.is_complete
    assert result.result == '{"city": "Paris", "sky": "sunny"}'  # the last step's result


# --- memory --------------------------------------------------------------------------------------------------------


async def test_memory_is_required():
    brain = Brain([])
    no_memory = Agent(name="Bare", model=brain.model(), tools={"weather": weather_tool([])})
    with pytest.raises(NetworkError) as info:
        run_network(no_memory, "hi", memory=MEM)
    assert info.value.code == "memory_required" and "has no memory" in info.value.message
    agent = network_agent(brain)
    for bad in (None, {"resource": "user-1"}, {"thread": "t"}, "user-1"):
        with pytest.raises(NetworkError) as info:
            run_network(agent, "hi", memory=bad)
        assert info.value.code == "memory_required"
    with pytest.raises(NetworkError) as info:
        run_network(agent, "hi", memory={"resource": "user 1; drop", "thread": "t"})
    assert info.value.code == "invalid_id"
    assert brain.asked == []  # nothing ran


@pytest.mark.parametrize("kwargs,code", [
    ({"max_steps": 0}, "invalid_option"),
    ({"max_steps": 101}, "invalid_option"),
    ({"temperature": 1}, "invalid_option"),
    ({"context": "x"}, "invalid_option"),
])
async def test_bad_options_are_rejected_at_once(kwargs, code):
    agent = network_agent(Brain([]))
    with pytest.raises(NetworkError) as info:
        run_network(agent, "hi", memory=MEM, **kwargs)
    assert info.value.code == code


async def test_earlier_conversation_reaches_the_routing_agent():
    memory = FakeMemory()
    brain = Brain([route("none", "none", "Hi Ann.", "greeting"), route("none", "none", "You are Ann.", "recall")])
    agent = network_agent(brain, memory=memory)
    await collect(run_network(agent, "I am Ann", memory=MEM))
    await collect(run_network(agent, "Who am I?", memory=MEM))
    second = brain.requests[1].messages
    assert [(m.role, m.content) for m in second[1:3]] == [("user", "I am Ann"), ("assistant", "Hi Ann.")]


async def test_the_routing_prompt_has_the_agent_layout_working_memory_history_then_recall_last():
    class RecallingMemory(FakeMemory):
        async def prepare(self, *, resource_id, thread_id, query):
            context = await super().prepare(resource_id=resource_id, thread_id=thread_id, query=query)
            context.system_message = "Working memory: likes tea"
            context.recalled = [{"id": "old", "role": "user", "content": "I live in Oslo", "type": "text"}]
            return context

    memory = RecallingMemory()
    brain = Brain([route("none", "none", "Hi Ann.", "greeting"), route("none", "none", "Oslo.", "recall")])
    agent = network_agent(brain, memory=memory)
    await collect(run_network(agent, "I am Ann", memory=MEM))
    await collect(run_network(agent, "Where do I live?", memory=MEM))
    first = [(m.role, m.content) for m in brain.requests[0].messages]
    assert first[1] == ("system", "Working memory: likes tea")
    assert first[2][0] == "system" and "I live in Oslo" in first[2][1]  # recall, last before the task
    assert first[3][0] == "user" and "Task: I am Ann" in first[3][1]
    sent = [(m.role, m.content) for m in brain.requests[1].messages]
    assert sent[1] == ("system", "Working memory: likes tea")
    # Turn 1's recall stays where it was shown (so turn 2 reuses the whole cached prompt) and is not repeated.
    assert sent[2] == first[2]
    assert sent[3:5] == [("user", "I am Ann"), ("assistant", "Hi Ann.")]
    assert sent[5][0] == "user" and "Task: Where do I live?" in sent[5][1] and len(sent) == 6
    assert "likes tea" not in sent[0][1]  # the routing system prompt itself stays the same every turn


# --- failures and cancellation -------------------------------------------------------------------------------------


async def test_an_unusable_routing_answer_is_asked_again_then_fails_the_run():
    brain = Brain([route("stocks", "tool"), route("weather", "tool", '{"city": "Paris"}')], [done("ok")])
    agent = network_agent(brain, tools={"weather": weather_tool([])})
    _, result = await collect(run_network(agent, "Weather?", memory=MEM))
    assert result.status == "success"
    assert "there is no primitive 'stocks'" in brain.requests[1].messages[-1].content

    brain = Brain([route("stocks", "tool"), route("bonds", "tool")])
    agent = network_agent(brain, tools={"weather": weather_tool([])})
    stream = run_network(agent, "Weather?", memory=MEM)
    events = [e async for e in stream]
    assert events[-1].type == "error" and events[-1].payload["code"] == "invalid_routing_decision"
    with pytest.raises(NetworkError) as info:
        await stream.result()
    assert info.value.code == "invalid_routing_decision"
    record = await agent.storage.load_run("network", stream.run_id)
    assert record is not None and record.status == "failed"


async def test_a_failing_tool_is_a_step_result_not_a_crash():
    async def broken(input: City) -> dict:
        raise RuntimeError("service down")

    tool = create_tool(id="weather", description="Weather.", input_schema=City, execute=broken)
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')], [done("Sorry, the service is down.")])
    agent = network_agent(brain, tools={"weather": tool})
    events, result = await collect(run_network(agent, "Weather?", memory=MEM))
    end = of(events, "tool-execution-end")[0]
    assert end["is_error"] is True and "service down" in end["result"]
    assert result.steps[0]["is_error"] is True and result.status == "success"


async def test_cancel_stops_the_running_primitive():
    started = asyncio.Event()
    stopped: list[bool] = []

    async def slow(input: City) -> dict:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(True)
            raise
        return {}

    tool = create_tool(id="weather", description="Weather.", input_schema=City, execute=slow, timeout_s=None)
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')])
    agent = network_agent(brain, tools={"weather": tool})
    stream = run_network(agent, "Weather?", memory=MEM)
    await started.wait()
    result = await stream.cancel()
    assert result.status == "aborted" and stopped == [True]
    assert "tool-execution-start" in types(stream.events)
    assert "network-execution-event-finish" not in types(stream.events)


# --- structured output ---------------------------------------------------------------------------------------------


async def test_structured_output_produces_network_object_events():
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')], [done("Sunny in Paris.")],
                  final=['{"city": "Paris", "sky": "sunny"}'])
    agent = network_agent(brain, tools={"weather": weather_tool([])})
    events, result = await collect(run_network(agent, "Weather in Paris?", memory=MEM, structured_output=Answer))
    partials = of(events, "network-object")
    assert partials and partials[-1]["object"] == {"city": "Paris", "sky": "sunny"}
    assert len(partials) >= 2  # the object grew as the answer streamed
    assert of(events, "network-object-result") == [{"object": {"city": "Paris", "sky": "sunny"}}]
    assert types(events).index("network-object-result") < types(events).index("network-execution-event-finish")
    assert of(events, "network-execution-event-finish")[0]["object"] == {"city": "Paris", "sky": "sunny"}
    assert isinstance(result.object, Answer) and result.object.sky == "sunny"
    final_request = brain.requests[-1]
    assert final_request.response_schema["title"] == "Answer"
    assert "Final result: Sunny in Paris." in final_request.messages[-1].content


async def test_structured_output_that_does_not_fit_fails_strictly_or_falls_back():
    brain = Brain([route("none", "none", "Paris", "direct")], final=['{"city": "Paris"}'])
    agent = network_agent(brain)
    stream = run_network(agent, "Weather?", memory=MEM, structured_output=Answer)
    with pytest.raises(NetworkError) as info:
        await stream.result()
    assert info.value.code == "structured_output_invalid" and "sky" in info.value.message

    brain = Brain([route("none", "none", "Paris", "direct")], final=['{"city": "Paris"}'])
    agent = network_agent(brain)
    fallback = Answer(city="?", sky="?")
    _, result = await collect(run_network(agent, "Weather?", memory=MEM, structured_output={
        "schema": Answer, "error_strategy": "fallback", "fallback_value": fallback}))
    assert result.object == fallback


async def test_a_sub_agent_with_memory_uses_its_own_thread_and_default_memory_option_applies():
    sub_memory = FakeMemory()
    researcher = Agent(name="Researcher", description="Facts.", memory=sub_memory,
                       model=ScriptedChatModel(["Paris is in France."]))
    brain = Brain([route("researcher", "agent", "Where is Paris?")], [done("In France.")])
    agent = Agent(name="Concierge", id="concierge", model=brain.model(), memory=FakeMemory(),
                  agents={"researcher": researcher}, default_options={"memory": MEM})
    _, result = await collect(run_network(agent, "Where is Paris?"))
    await researcher.flush()
    assert result.status == "success"
    assert sub_memory.prepared[0]["thread_id"] == "thread-1-researcher"
    assert sub_memory.prepared[0]["resource_id"] == "user-1"
    assert [m["content"] for m in sub_memory.messages] == ["Where is Paris?", "Paris is in France."]
