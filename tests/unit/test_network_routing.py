"""The network's pure decision functions: primitives, prompts, schemas and parsing of the model's answers."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from voiceserver.agent.agent import Agent
from voiceserver.agent.tools import create_tool
from voiceserver.llm.base import ChatMessage
from voiceserver.network.routing import (
    COMPLETION_TITLE,
    ROUTING_TITLE,
    DecisionError,
    StepRecord,
    completion_messages,
    completion_schema,
    direct_input,
    find_primitive,
    format_steps,
    input_messages,
    list_primitives,
    parse_completion,
    parse_input,
    parse_routing_decision,
    routing_messages,
    routing_schema,
    routing_system_prompt,
)
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.workflows import create_step, create_workflow


class City(BaseModel):
    city: str


class Booking(BaseModel):
    name: str
    day: str


async def _weather(input: City) -> dict:
    return {"city": input.city, "sky": "sunny"}


async def _book(ctx) -> dict:
    return {"booked": True}


def _agent() -> Agent:
    model = ScriptedChatModel(["ok"])
    researcher = Agent(name="Researcher", description="Finds facts about places.", model=model)
    weather = create_tool(id="weather", description="Current weather for a city.", input_schema=City,
                          execute=_weather)
    ping = create_tool(id="ping", description="Checks the service is up.", execute=lambda _input: "pong")
    step = create_step(id="book", input_schema=Booking, output_schema=None, execute=_book)
    booking = create_workflow(id="booking", description="Books an appointment.", input_schema=Booking) \
        .then(step).commit()
    return Agent(name="Router", instructions="Be brief.", model=model, agents={"researcher": researcher},
                 workflows={"booking": booking}, tools={"weather": weather, "ping": ping})


def test_primitives_list_each_kind_with_descriptions_and_schemas():
    prims = list_primitives(_agent())
    kinds = {(p.type, p.id) for p in prims}
    assert kinds == {("agent", "researcher"), ("workflow", "booking"), ("tool", "weather"), ("tool", "ping")}
    researcher = find_primitive(prims, "agent", "researcher")
    assert researcher is not None and researcher.description == "Finds facts about places."
    assert researcher.input_schema is None
    booking = find_primitive(prims, "workflow", "booking")
    assert booking is not None and set(booking.input_schema["required"]) == {"name", "day"}
    weather = find_primitive(prims, "tool", "weather")
    assert weather is not None and weather.input_schema["properties"]["city"]["type"] == "string"
    assert find_primitive(prims, "tool", "researcher") is None


def test_routing_schema_enumerates_real_ids_and_types():
    prims = list_primitives(_agent())
    schema = routing_schema(prims)
    assert schema["title"] == ROUTING_TITLE
    assert schema["properties"]["primitive_id"]["enum"] == ["booking", "ping", "researcher", "weather", "none"]
    assert schema["properties"]["primitive_type"]["enum"] == ["agent", "workflow", "tool", "none"]
    assert set(schema["required"]) == set(schema["properties"])  # strict-mode friendly
    assert schema["additionalProperties"] is False
    empty = routing_schema([])
    assert empty["properties"]["primitive_id"]["enum"] == ["none"]
    assert empty["properties"]["primitive_type"]["enum"] == ["none"]


def test_routing_prompt_carries_instructions_descriptions_schemas_and_steps():
    prims = list_primitives(_agent())
    system = routing_system_prompt("Be brief.", prims)
    assert system.startswith("Be brief.")
    assert "- researcher: Finds facts about places." in system
    assert '- weather: Current weather for a city. Input schema: {"properties":{"city":{"type":"string"}}' in system
    assert '"title"' not in system  # titles only repeat names
    steps = [StepRecord(1, "tool", "weather", '{"city": "Paris"}', '{"sky": "sunny"}')]
    messages = routing_messages(system, [], "Weather in Paris?", steps, feedback="the user also wants clothes")
    assert [m.role for m in messages] == ["system", "user"]
    # Working memory and history follow the system prompt; recall comes last, just before the task.
    prefix = [ChatMessage("system", "Working memory: likes tea"), ChatMessage("user", "hi"),
              ChatMessage("assistant", "hello")]
    laid = routing_messages(system, prefix, "Weather in Paris?", steps, recall=[ChatMessage("system", "recalled")])
    assert [m.content for m in laid[1:4]] == ["Working memory: likes tea", "hi", "hello"]
    assert laid[4].content == "recalled" and laid[5].role == "user"
    user = messages[-1].content
    assert "Task: Weather in Paris?" in user
    assert '1. tool weather (prompt: {"city": "Paris"}) -> result: {"sky": "sunny"}' in user
    assert "Not done yet: the user also wants clothes" in user


def test_format_steps_marks_failures_and_clips_long_results():
    long = "x" * 10_000
    text = format_steps([StepRecord(1, "workflow", "booking", "p", long, is_error=True)])
    assert "-> failed: " in text
    assert len(text) < 5000 and text.endswith("...")
    assert format_steps([]) == "Steps so far: none."


@pytest.mark.parametrize("answer,expected", [
    ({"primitive_id": "weather", "primitive_type": "tool", "prompt": "{}", "selection_reason": "r"},
     ("weather", "tool")),
    ({"primitiveId": "researcher", "primitiveType": "agent", "prompt": "hi", "selectionReason": "r"},
     ("researcher", "agent")),
    ({"primitive_id": "booking", "primitive_type": "tool", "prompt": "{}", "selection_reason": "wrong type"},
     ("booking", "workflow")),  # a type that contradicts an unambiguous id is corrected
    ({"primitive_id": "none", "primitive_type": "none", "prompt": "Hello!", "selection_reason": "chat"},
     ("none", "none")),
    ({"primitive_id": "", "primitive_type": "agent", "prompt": "x", "selection_reason": ""}, ("none", "none")),
])
def test_parse_routing_decision_accepts_usable_answers(answer, expected):
    decision = parse_routing_decision("```json\n" + json.dumps(answer) + "\n```", list_primitives(_agent()))
    assert (decision.primitive_id, decision.primitive_type) == expected
    assert decision.is_none == (expected[1] == "none")


def test_parse_routing_decision_keeps_a_json_prompt_as_text():
    answer = {"primitive_id": "weather", "primitive_type": "tool", "prompt": {"city": "Oslo"},
              "selection_reason": "r"}
    decision = parse_routing_decision(json.dumps(answer), list_primitives(_agent()))
    assert json.loads(decision.prompt) == {"city": "Oslo"}


@pytest.mark.parametrize("text,fragment", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"primitive_id": "stocks", "primitive_type": "tool", "prompt": "", "selection_reason": ""}),
     "there is no primitive 'stocks'"),
])
def test_parse_routing_decision_rejects_unusable_answers(text, fragment):
    with pytest.raises(DecisionError) as info:
        parse_routing_decision(text, list_primitives(_agent()))
    assert fragment in str(info.value)


def test_parse_routing_decision_asks_which_when_an_id_is_two_kinds():
    agent = _agent()
    agent.tools["researcher"] = agent.tools["weather"]
    prims = list_primitives(agent)
    with pytest.raises(DecisionError, match="agent or tool"):
        parse_routing_decision(json.dumps({"primitive_id": "researcher", "primitive_type": "workflow",
                                           "prompt": "", "selection_reason": ""}), prims)


def test_completion_schema_and_parsing():
    schema = completion_schema()
    assert schema["title"] == COMPLETION_TITLE
    assert schema["properties"]["is_complete"]["type"] == "boolean"
    check = parse_completion('{"is_complete": true, "final_result": "Done.", "reason": "answered"}')
    assert (check.is_complete, check.final_result, check.reason) == (True, "Done.", "answered")
    check = parse_completion('{"isComplete": "false", "completionReason": "needs more"}')
    assert (check.is_complete, check.final_result, check.reason) == (False, None, "needs more")
    with pytest.raises(DecisionError, match="is_complete"):
        parse_completion('{"reason": "?"}')
    messages = completion_messages("Be brief.", [], "Task?", [StepRecord(1, "agent", "researcher", "p", "r")])
    assert "The agent researcher has just run" in messages[-1].content


def test_direct_input_uses_a_prompt_that_already_fits_the_schema():
    prims = list_primitives(_agent())
    weather = find_primitive(prims, "tool", "weather")
    booking = find_primitive(prims, "workflow", "booking")
    ping = find_primitive(prims, "tool", "ping")
    assert direct_input(weather, '{"city": "Rome"}') == (True, {"city": "Rome"})
    assert direct_input(weather, "weather in Rome please") == (False, None)
    assert direct_input(weather, '{"town": "Rome"}') == (False, None)
    assert direct_input(booking, '{"name": "Ann", "day": "mon"}') == (True, {"name": "Ann", "day": "mon"})
    assert direct_input(ping, "anything") == (True, {})  # no arguments: no model call needed


def test_parse_input_names_the_bad_field():
    booking = find_primitive(list_primitives(_agent()), "workflow", "booking")
    assert parse_input(booking, '{"name": "Ann", "day": "tue"}') == {"name": "Ann", "day": "tue"}
    with pytest.raises(ValueError, match="day: Field required"):
        parse_input(booking, '{"name": "Ann"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_input(booking, "Ann on Tuesday")
    messages = input_messages(booking, "Book Ann", "Ann, Tuesday", error="day: Field required")
    assert "workflow \"booking\"" in messages[0].content and "Field required" in messages[1].content


def test_format_steps_keeps_the_newest_steps_within_the_budget():
    steps = [StepRecord(i, "tool", "weather", "p", f"result-{i} " + "y" * 3000) for i in range(1, 11)]
    text = format_steps(steps)
    assert "10. tool weather" in text and "1. tool weather" not in text
    assert "earlier steps not shown" in text
    assert len(text) < 13_000
