"""How the local model plans a call (passes, grammars, budgets), without loading the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from voiceserver.engines import ProviderError
from voiceserver.llm import LlamaCppModel
from voiceserver.llm.base import ChatMessage, ChatRequest, ToolCall, ToolSpec

WEATHER = ToolSpec("weather", "Weather.", {"type": "object", "properties": {"location": {"type": "string"}},
                                           "required": ["location"]})
SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


@pytest.fixture
def model() -> LlamaCppModel:
    return LlamaCppModel(Path("/nonexistent.gguf"), max_tokens=100, structured_max_tokens=300, temperature=0.4)


def ask(**kwargs) -> ChatRequest:
    return ChatRequest([ChatMessage("user", "hi")], **kwargs)


def test_plain_text_is_one_unconstrained_pass(model):
    plan = model._plan(ask(temperature=0.0, stop=["\n"]))
    assert plan.decision is None and plan.answer and plan.answer_grammar is None
    assert (plan.budget, plan.temperature, plan.stop) == (100, 0.0, ["\n"])


def test_auto_tools_decide_then_answer(model):
    plan = model._plan(ask(tools=[WEATHER]))
    assert plan.decision is not None and plan.answer and plan.budget == 300
    assert plan.temperature == 0.4


def test_required_and_named_tools_never_answer_in_text(model):
    assert not model._plan(ask(tools=[WEATHER], tool_choice="required")).answer
    assert not model._plan(ask(tools=[WEATHER], tool_choice="weather")).answer


def test_tool_choice_none_ignores_the_tools(model):
    plan = model._plan(ask(tools=[WEATHER], tool_choice="none"))
    assert plan.decision is None and plan.answer and plan.budget == 100


def test_schema_constrains_the_answer_with_the_structured_budget(model):
    plan = model._plan(ask(response_schema=SCHEMA))
    assert plan.decision is None and plan.answer_grammar is not None and plan.budget == 300
    assert model._plan(ask(response_schema=SCHEMA, max_tokens=20)).budget == 20


def test_after_a_tool_result_auto_answers_directly(model):
    call = ToolCall("c1", "weather", {"location": "Rome"})
    messages = [ChatMessage("user", "Weather?"), ChatMessage("assistant", None, tool_calls=[call]),
                ChatMessage("tool", "sunny", tool_call_id="c1")]
    assert model._plan(ChatRequest(messages, tools=[WEATHER])).decision is None
    assert model._plan(ChatRequest(messages, tools=[WEATHER], tool_choice="required")).decision is not None
    chained = LlamaCppModel(Path("/nonexistent.gguf"), answer_after_tool_result=False)
    assert chained._plan(ChatRequest(messages, tools=[WEATHER])).decision is not None


def test_unknown_named_tool_is_rejected_before_any_work(model):
    with pytest.raises(ProviderError) as err:
        model._plan(ask(tools=[WEATHER], tool_choice="calendar"))
    assert err.value.code == "invalid_request"


async def test_missing_file_is_a_clear_error(model):
    with pytest.raises(ProviderError) as err:
        await model.complete(ask())
    assert err.value.code == "model_missing" and "voiceserver models fetch" in err.value.message


async def test_empty_request_is_rejected(model):
    with pytest.raises(ProviderError) as err:
        await model.complete(ChatRequest([]))
    assert err.value.code == "invalid_request"


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        LlamaCppModel(Path("x.gguf"), pool=0)


def test_amx_is_detected_from_the_cpu_flags():
    from voiceserver.llm.llama_cpp import cpu_has_amx

    assert cpu_has_amx("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n") is True
    assert cpu_has_amx("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n") is False
    assert cpu_has_amx("") is False
