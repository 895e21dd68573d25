"""Prompt rendering for the local model: tools in the system prompt, tool calls and results, stop strings."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from voiceserver.llm.base import ChatMessage, ToolCall, ToolSpec
from voiceserver.llm.chat_format import (
    ChatTemplate,
    StopMatcher,
    describe_schema,
    to_template_messages,
    tool_section,
)

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WEATHER = ToolSpec("weather", "Current weather for a city.",
                   {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]})


def test_describe_schema_is_short_and_marks_optional_fields():
    schema = {"type": "object", "title": "Booking",
              "properties": {"people": {"type": "integer"}, "time": {"type": "string"},
                             "kind": {"enum": ["indoor", "outdoor"]}, "tags": {"type": "array",
                                                                              "items": {"type": "string"}}},
              "required": ["people", "time"]}
    text = describe_schema(schema)
    assert text == ('{"people": integer, "time": string, "kind": "indoor" | "outdoor" (optional), '
                    '"tags": [string, ...] (optional)}')


def test_describe_schema_follows_refs_of_nested_models():
    schema = {"$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}},
                                 "required": ["name"]}},
              "type": "object", "properties": {"city": {"$ref": "#/$defs/City"}}, "required": ["city"]}
    assert describe_schema(schema) == '{"city": {"name": string}}'


def test_tool_section_names_every_tool_and_the_reply_format():
    auto = tool_section([WEATHER], "auto")
    assert '- weather: Current weather for a city. Arguments: {"location": string}' in auto
    assert '{"tool": "none"}' in auto
    assert '{"tool": "none"}' not in tool_section([WEATHER], "required")
    assert '"tool": "weather"' in tool_section([WEATHER], "weather")


def test_tools_go_at_the_end_of_the_existing_system_prompt():
    msgs = [ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Rome?")]
    out = to_template_messages(msgs, tools=[WEATHER], tool_choice="auto")
    assert [m["role"] for m in out] == ["system", "user"]
    assert out[0]["content"].startswith("Be brief.\n\nYou can call these tools:")
    # tool_choice "none": the tools are not described at all
    assert to_template_messages(msgs, tools=[WEATHER], tool_choice="none")[0]["content"] == "Be brief."


def test_a_system_prompt_is_created_for_tools_when_there_is_none():
    out = to_template_messages([ChatMessage("user", "hi")], tools=[WEATHER], tool_choice="required")
    assert out[0]["role"] == "system" and "weather" in out[0]["content"]


def test_tool_calls_and_results_are_rendered_for_the_model():
    call = ToolCall("call_1", "weather", {"location": "Rome"})
    msgs = [ChatMessage("user", "Weather in Rome?"), ChatMessage("assistant", None, tool_calls=[call]),
            ChatMessage("tool", '{"temp_c": 21}', tool_call_id="call_1")]
    out = to_template_messages(msgs)
    assert json.loads(out[1]["content"]) == {"tool": "weather", "arguments": {"location": "Rome"}}
    assert out[2] == {"role": "tool", "content": '{"temp_c": 21}'}
    as_user = to_template_messages(msgs, tool_role=False)
    assert as_user[2] == {"role": "user", "content": 'Result of tool weather: {"temp_c": 21}'}


def test_response_schema_is_announced_in_the_system_prompt():
    out = to_template_messages([ChatMessage("system", "S"), ChatMessage("user", "u")],
                               response_schema={"type": "object", "title": "X", "properties": {}})
    assert "matching this JSON schema" in out[0]["content"] and '"title"' not in out[0]["content"]


def test_smollm2_template_renders_chatml_with_a_stable_system_prefix():
    template = ChatTemplate(SMOLLM2_TEMPLATE, bos_token="<|im_start|>", eos_token="<|im_end|>")
    system = ChatMessage("system", "Be brief.")
    turn1 = template.render([system, ChatMessage("user", "Hello")], tools=[WEATHER])
    turn2 = template.render([system, ChatMessage("user", "Hello"), ChatMessage("assistant", "Hi."),
                             ChatMessage("user", "Weather?")], tools=[WEATHER])
    assert turn1.startswith("<|im_start|>system\nBe brief.\n\nYou can call these tools:")
    assert turn1.endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    # the second turn extends the first one's prompt (minus the generation prompt): the KV cache is reused
    assert turn2.startswith(turn1.removesuffix("<|im_start|>assistant\n"))


def test_template_without_tool_role_falls_back_to_user_messages():
    strict = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
              "{{ raise_exception('unknown role') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    template = ChatTemplate(strict)
    msgs = [ChatMessage("user", "q"), ChatMessage("assistant", None, tool_calls=[ToolCall("c", "weather", {})]),
            ChatMessage("tool", "sunny", tool_call_id="c")]
    assert "[user]Result of tool weather: sunny" in template.render(msgs)


def test_missing_template_means_chatml():
    assert ChatTemplate(None).render([ChatMessage("user", "x")]) == (
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n")


def test_stop_matcher_cuts_at_a_stop_string_split_across_pieces():
    stopper = StopMatcher(["\nUser:"])
    out = [stopper.feed(p) for p in ["Hello", " there\nUs", "er: more"]]
    assert "".join(out) + stopper.flush() == "Hello there"
    assert stopper.stopped
    assert stopper.feed("ignored") == ""


def test_stop_matcher_releases_a_false_alarm_at_the_end():
    stopper = StopMatcher(["###"])
    assert stopper.feed("a#") == "a"
    assert stopper.feed("#") == ""
    assert stopper.flush() == "##"


@given(st.lists(st.text(alphabet="ab#\n", max_size=6), max_size=8), st.sampled_from(["##", "a#b", "\n\n"]))
def test_stop_matcher_output_equals_the_text_before_the_first_stop(pieces, stop):
    stopper = StopMatcher([stop])
    out = "".join(stopper.feed(p) for p in pieces) + stopper.flush()
    text = "".join(pieces)
    expected = text[: text.find(stop)] if stop in text else text
    assert out == expected
