"""Structured output: JSON schema in the request, partial objects, the three error strategies, tools first."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from voiceserver.agent import Agent, AgentError, StructuredOutputError, create_tool
from voiceserver.runs.structured import parse_partial_json
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel


class Recipe(BaseModel):
    name: str
    minutes: int
    steps: list[str]


GOOD = '{"name": "Pasta", "minutes": 12, "steps": ["boil", "drain"]}'


async def test_structured_output_sends_the_schema_and_returns_the_object():
    model = ScriptedChatModel([GOOD])
    agent = Agent(name="Chef", model=model)
    stream = agent.stream("A quick recipe?", structured_output={"schema": Recipe})
    chunks = [c async for c in stream]
    result = await stream.result()
    assert result.object == Recipe(name="Pasta", minutes=12, steps=["boil", "drain"])
    assert model.requests[0].response_schema == Recipe.model_json_schema()
    objects = [c.payload["object"] for c in chunks if c.type == "object"]
    assert objects[0] == {} and objects[-1] == json.loads(GOOD)
    assert any(o.get("name") == "Pasta" and "steps" not in o for o in objects)  # partial objects along the way
    results = [c for c in chunks if c.type == "object-result"]
    assert len(results) == 1 and results[0].payload["object"] == json.loads(GOOD)
    assert chunks[-1].type == "finish" and chunks[-1].payload["object"] == json.loads(GOOD)


async def test_bare_model_class_and_json_fences_are_accepted():
    agent = Agent(name="Chef", model=ScriptedChatModel(["```json\n" + GOOD + "\n```"]))
    result = await agent.generate("x", structured_output=Recipe)
    assert result.object.name == "Pasta"


async def test_strict_strategy_fails_the_run_with_the_field_named():
    agent = Agent(name="Chef", model=ScriptedChatModel(['{"name": "Pasta", "minutes": "soon"}']))
    stream = agent.stream("x", structured_output={"schema": Recipe, "error_strategy": "strict"})
    chunks = [c async for c in stream]
    assert chunks[-1].type == "error" and chunks[-1].payload["code"] == "structured_output_invalid"
    with pytest.raises(StructuredOutputError) as info:
        await stream.result()
    assert "minutes" in info.value.message and "steps: Field required" in info.value.message
    assert info.value.result.finish_reason == "error"


async def test_strict_strategy_reports_invalid_json():
    agent = Agent(name="Chef", model=ScriptedChatModel(["I would rather not."]))
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        await agent.generate("x", structured_output={"schema": Recipe})


async def test_warn_strategy_logs_and_leaves_object_none(caplog):
    agent = Agent(name="Chef", model=ScriptedChatModel(["not json"]))
    with caplog.at_level("WARNING", logger="voiceserver.agent"):
        result = await agent.generate("x", structured_output={"schema": Recipe, "error_strategy": "warn"})
    assert result.object is None and result.finish_reason == "stop" and result.text == "not json"
    assert any("structured output did not validate" in r.getMessage() for r in caplog.records)


async def test_fallback_strategy_returns_the_fallback_value():
    fallback = Recipe(name="Toast", minutes=3, steps=["toast"])
    agent = Agent(name="Chef", model=ScriptedChatModel(['{"name": 1}']))
    stream = agent.stream("x", structured_output={"schema": Recipe, "error_strategy": "fallback",
                                                   "fallback_value": fallback})
    result = await stream.result()
    assert result.object is fallback and result.finish_reason == "stop"
    assert [c.payload["object"] for c in stream.chunks if c.type == "object-result"] == [fallback.model_dump()]


async def test_option_errors_are_clear():
    agent = Agent(name="Chef", model=ScriptedChatModel(["x"]))
    with pytest.raises(AgentError, match="error_strategy 'lenient'"):
        agent.stream("x", structured_output={"schema": Recipe, "error_strategy": "lenient"})
    with pytest.raises(AgentError, match="fallback_value"):
        agent.stream("x", structured_output={"schema": Recipe, "error_strategy": "fallback"})
    with pytest.raises(AgentError, match="pydantic model"):
        agent.stream("x", structured_output={"schema": 42})


async def test_tools_first_then_a_final_structured_call():
    async def lookup(input, ctx):
        return {"minutes": 12}

    model = ScriptedChatModel([Reply(tool_calls=[("lookup", {})]), "It takes 12 minutes.", GOOD])
    agent = Agent(name="Chef", model=model,
                  tools={"lookup": create_tool(id="lookup", description="Cooking times.", execute=lookup)})
    result = await agent.generate("x", structured_output={"schema": Recipe})
    assert result.object.minutes == 12
    # Tool steps run without the JSON constraint; the last call has it and no tools.
    assert [r.response_schema is not None for r in model.requests] == [False, False, True]
    assert model.requests[2].tools == []
    assert model.requests[2].messages[-1].role == "user"
    assert result.text == "It takes 12 minutes."  # the conversational text; the JSON is in result.object


async def test_tools_then_an_answer_that_already_is_the_object_needs_no_extra_call():
    async def lookup(input, ctx):
        return {"minutes": 12}

    model = ScriptedChatModel([Reply(tool_calls=[("lookup", {})]), GOOD])
    agent = Agent(name="Chef", model=model,
                  tools={"lookup": create_tool(id="lookup", description="Cooking times.", execute=lookup)})
    result = await agent.generate("x", structured_output={"schema": Recipe})
    assert result.object.name == "Pasta" and model.calls == 2


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
))
def test_partial_json_of_any_prefix_never_raises_and_the_whole_parses(value):
    text = json.dumps(value)
    assert parse_partial_json(text) == value
    for cut in range(len(text)):
        parse_partial_json(text[:cut])  # must not raise


def test_partial_json_examples():
    assert parse_partial_json('{"name": "Pa') == {"name": "Pa"}
    assert parse_partial_json('{"a": 1, "b') == {"a": 1}
    assert parse_partial_json('{"a": [1, 2') == {"a": [1, 2]}
    assert parse_partial_json('{"a": tr') == {}
    assert parse_partial_json("") is None
