"""Pure parts of the OpenAI-compatible provider: tool-call assembly, argument parsing, request building."""

from __future__ import annotations

from voiceserver.llm.base import ChatMessage, ChatRequest, ToolCall, ToolSpec
from voiceserver.llm.openai_compatible import (
    RAW_ARGUMENTS_KEY,
    OpenAICompatibleModel,
    ToolCallAssembler,
    is_strict_schema,
    parse_arguments,
    schema_name,
    tool_choice_param,
)

WEATHER = ToolSpec("weather", "Weather.", {"type": "object", "properties": {"location": {"type": "string"}},
                                           "required": ["location"]})


def test_fragments_are_joined_by_index_even_interleaved():
    asm = ToolCallAssembler()
    asm.add(0, "call_a", "weather", "")
    asm.add(1, "call_b", "time", '{"zo')
    asm.add(0, None, None, '{"location"')
    asm.add(0, None, None, ': "Paris"}')
    asm.add(1, None, None, 'ne": "CET"}')
    calls = asm.finish()
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_a", "weather", {"location": "Paris"}), ("call_b", "time", {"zone": "CET"})]
    assert not asm  # finish() forgets


def test_missing_index_falls_back_to_ids_then_the_last_call():
    asm = ToolCallAssembler()
    asm.add(None, "c1", "a", '{"x":')
    asm.add(None, None, None, " 1}")
    asm.add(None, "c2", "b", "{}")
    calls = asm.finish()
    assert [(c.name, c.arguments) for c in calls] == [("a", {"x": 1}), ("b", {})]


def test_repeated_names_are_not_doubled():
    asm = ToolCallAssembler()
    asm.add(0, "c", "weather", '{"location": ')
    asm.add(0, None, "weather", '"Oslo"}')
    assert asm.finish()[0].name == "weather"


def test_missing_id_gets_one():
    asm = ToolCallAssembler()
    asm.add(0, None, "x", "{}")
    assert asm.finish()[0].id.startswith("call_")


def test_arguments_that_are_not_an_object_are_kept_raw():
    assert parse_arguments("") == {}
    assert parse_arguments('{"a": 1}') == {"a": 1}
    assert parse_arguments('{"a": 1') == {RAW_ARGUMENTS_KEY: '{"a": 1'}
    assert parse_arguments("[1, 2]") == {RAW_ARGUMENTS_KEY: "[1, 2]"}


def test_strict_schema_detection():
    closed = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    assert is_strict_schema(closed)
    assert not is_strict_schema({**closed, "required": []})
    assert not is_strict_schema({k: v for k, v in closed.items() if k != "additionalProperties"})
    nested_open = {**closed, "properties": {"a": {"type": "object", "properties": {}}}}
    assert not is_strict_schema(nested_open)


def test_tool_choice_mapping():
    assert tool_choice_param("auto") == "auto"
    assert tool_choice_param("required") == "required"
    assert tool_choice_param("none") == "none"
    assert tool_choice_param("weather") == {"type": "function", "function": {"name": "weather"}}


def test_schema_names_are_sanitised():
    assert schema_name({"title": "My Answer!"}) == "My_Answer_"
    assert schema_name({}) == "response"


def test_build_params_maps_the_request():
    model = OpenAICompatibleModel("gpt-4o-mini", api_key="k", max_tokens=100, temperature=0.2)
    request = ChatRequest(
        [ChatMessage("system", "s"), ChatMessage("user", "u"),
         ChatMessage("assistant", None, tool_calls=[ToolCall("c1", "weather", {"location": "Rome"})]),
         ChatMessage("tool", "sunny", tool_call_id="c1")],
        tools=[WEATHER], tool_choice="weather", stop=["\n\n"])
    params = model.build_params(request)
    assert params["model"] == "gpt-4o-mini" and params["stream"] is True
    assert params["stream_options"] == {"include_usage": True}
    assert params["tools"][0]["function"]["name"] == "weather"
    assert params["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert params["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"location": "Rome"}'
    assert params["messages"][3] == {"role": "tool", "content": "sunny", "tool_call_id": "c1"}
    assert params["max_completion_tokens"] == 1024  # tools: the structured budget
    assert params["temperature"] == 0.2 and params["stop"] == ["\n\n"]
    assert model.id == "openai/gpt-4o-mini"


def test_build_params_response_format_and_max_tokens_name():
    model = OpenAICompatibleModel("llama3", api_key=None, provider="openai-compatible", max_tokens=50)
    schema = {"title": "Answer", "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"],
              "additionalProperties": False}
    params = model.build_params(ChatRequest([ChatMessage("user", "u")], response_schema=schema, max_tokens=30))
    assert params["response_format"] == {"type": "json_schema", "json_schema": {"name": "Answer", "schema": schema,
                                                                                "strict": True}}
    assert params["max_tokens"] == 30 and "max_completion_tokens" not in params
    assert "tools" not in params and "tool_choice" not in params
    plain = model.build_params(ChatRequest([ChatMessage("user", "u")]))
    assert plain["max_tokens"] == 50 and "temperature" not in plain
    forced = OpenAICompatibleModel("m", api_key="k", strict=False).build_params(
        ChatRequest([ChatMessage("user", "u")], response_schema=schema))
    assert forced["response_format"]["json_schema"]["strict"] is False
