"""The local model end to end: the real SmolLM2 GGUF through llama.cpp in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from voiceserver.llm import LlamaCppModel, ModelContext, ModelRegistry
from voiceserver.llm.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    PromptRead,
    TextDelta,
    ToolCall,
    ToolCallChunk,
    ToolSpec,
)
from voiceserver.testing.loop import LoopTicker

pytestmark = pytest.mark.e2e

SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer in one or two short spoken sentences.")


class Weather(BaseModel):
    location: str


class Person(BaseModel):
    name: str
    age: int


WEATHER = ToolSpec("weather", "Current weather for a city.", Weather.model_json_schema())
# Forces a long generation whatever the model would like to say: 60 integers at least (120+ tokens).
LONG_ARRAY = {"type": "array", "items": {"type": "integer"}, "minItems": 60}
# Generous limits: other test runs share the two cores, and these tests assert on behaviour, never on speed.
TIMEOUT_S = 240.0


@pytest.fixture
def gguf(models_dir: Path) -> Path:
    return models_dir / "llm" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
async def model(gguf):
    m = LlamaCppModel(gguf, threads=2, pool=1, seed=7, timeout_s=TIMEOUT_S)
    yield m
    await m.close()


async def test_streams_non_empty_text_with_usage(model):
    request = ChatRequest([SYSTEM, ChatMessage("user", "What is the capital of France?")])
    chunks = [c async for c in model.stream(request)]
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text.strip()
    assert sum(isinstance(c, TextDelta) for c in chunks) > 1  # streamed, not in one piece
    finish = chunks[-1]
    assert isinstance(finish, Finish) and finish.reason in ("stop", "length")
    assert finish.usage.prompt_tokens > 20 and finish.usage.completion_tokens > 0


async def test_concurrent_loads_load_once(gguf):
    model = LlamaCppModel(gguf, pool=2, timeout_s=TIMEOUT_S)
    await asyncio.gather(model.load(), model.load(), model.load())
    assert len(model._contexts) == 2 and model.free_contexts == 2
    await model.close()
    assert not model.loaded


async def wait_context_back(model) -> None:
    """Closing returns at once; the worker thread stops within a token and gives its context back (bounded wait)."""
    for _ in range(500):
        if model.free_contexts == 1 and model.gate.busy == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the llama.cpp context was never given back")


async def test_closing_the_stream_stops_generation_and_frees_the_context(model):
    request = ChatRequest([SYSTEM, ChatMessage("user", "List numbers.")], response_schema=LONG_ARRAY,
                          max_tokens=1000)
    received = 0
    async with contextlib.aclosing(model.stream(request)) as stream:
        async for chunk in stream:
            if isinstance(chunk, PromptRead):  # the prompt's size and cache reuse, before the first token
                assert chunk.usage.prompt_tokens > 0
                continue
            assert isinstance(chunk, TextDelta)
            received += 1
            if received == 3:
                break
    await wait_context_back(model)
    ctx = model._contexts[0]
    prompt_tokens = len(ctx.tokenize(model._template.render(request.messages, response_schema=LONG_ARRAY).encode(),
                                     add_bos=False, special=True))
    # At most the queue (16) plus a token or two beyond what the consumer took; the schema forces 120+ tokens.
    assert ctx.n_tokens - prompt_tokens <= received + 16 + 2
    # the context is reusable at once
    result = await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "Say hello.")], max_tokens=8))
    assert result.text.strip()


async def test_cancelling_the_consuming_task_frees_the_context(model):
    request = ChatRequest([SYSTEM, ChatMessage("user", "List numbers.")], response_schema=LONG_ARRAY,
                          max_tokens=1000)
    first = asyncio.Event()
    count = 0

    async def consume():
        nonlocal count
        async for _ in model.stream(request):
            count += 1
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await wait_context_back(model)
    assert count < 100  # it did not run to the end of the forced 120-token answer
    result = await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "Say hi.")], max_tokens=8))
    assert result.finish_reason in ("stop", "length")


async def test_required_tool_choice_gives_a_valid_tool_call(model):
    request = ChatRequest([SYSTEM, ChatMessage("user", "What's the weather like in London today?")],
                          tools=[WEATHER], tool_choice="required")
    chunks = [c async for c in model.stream(request)]
    calls = [c.call for c in chunks if isinstance(c, ToolCallChunk)]
    assert len(calls) == 1 and calls[0].name == "weather"
    Weather.model_validate(calls[0].arguments)  # always valid for the schema, thanks to the grammar
    assert isinstance(chunks[-1], Finish) and chunks[-1].reason == "tool_calls"
    assert not any(isinstance(c, TextDelta) for c in chunks)


async def test_named_tool_choice_picks_that_tool(model):
    other = ToolSpec("time", "Current time in a timezone.",
                     {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]})
    result = await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "Hello there!")],
                                              tools=[WEATHER, other], tool_choice="time"))
    assert [c.name for c in result.tool_calls] == ["time"]
    assert isinstance(result.tool_calls[0].arguments["zone"], str)


async def test_auto_tool_choice_answers_or_calls_validly(model):
    for text in ("What's the weather in Paris?", "Tell me a joke."):
        result = await model.complete(ChatRequest([SYSTEM, ChatMessage("user", text)], tools=[WEATHER]))
        if result.tool_calls:
            Weather.model_validate(result.tool_calls[0].arguments)
            assert result.finish_reason == "tool_calls"
        else:
            assert result.text.strip() and not result.text.lstrip().startswith('{"tool"')


async def test_tool_results_are_seen_and_answered_in_text(model):
    call = ToolCall("call_1", "weather", {"location": "London"})
    request = ChatRequest([SYSTEM, ChatMessage("user", "What's the weather in London?"),
                           ChatMessage("assistant", None, tool_calls=[call]),
                           ChatMessage("tool", '{"temperature_c": 12, "sky": "cloudy"}', tool_call_id="call_1")],
                          tools=[WEATHER])
    result = await model.complete(request)
    prompt = model._template.render(request.messages, tools=request.tools)
    assert '<|im_start|>tool\n{"temperature_c": 12, "sky": "cloudy"}<|im_end|>' in prompt
    assert not result.tool_calls and result.text.strip()


async def test_response_schema_output_parses_as_the_schema(model):
    result = await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "Invent a person with a name and age.")],
                                              response_schema=Person.model_json_schema()))
    person = Person.model_validate(json.loads(result.text))
    assert isinstance(person.age, int)


async def test_the_event_loop_keeps_running_during_generation(model):
    async with LoopTicker() as ticker:
        chunks = [c async for c in model.stream(ChatRequest([SYSTEM, ChatMessage("user", "Count.")],
                                                            response_schema=LONG_ARRAY, max_tokens=150))]
    ticks = ticker.ticks
    produced = sum(isinstance(c, TextDelta) for c in chunks)
    assert produced >= 60
    # Generation on the loop would starve the ticker (a tick or two in all); in a thread it ticks throughout.
    assert ticks >= 10


async def test_two_contexts_serve_two_calls_at_once(gguf):
    model = LlamaCppModel(gguf, pool=2, threads=1, timeout_s=TIMEOUT_S)
    requests = [ChatRequest([SYSTEM, ChatMessage("user", q)], max_tokens=12) for q in ("Say hi.", "Say bye.")]
    results = await asyncio.gather(*(model.complete(r) for r in requests))
    assert all(r.text.strip() for r in results)
    assert model.free_contexts == 2
    await model.close()


async def test_registry_loads_the_local_model_once(models_dir):
    registry = ModelRegistry(ModelContext(models_dir=models_dir, timeout_s=TIMEOUT_S))
    model = registry.resolve("local/smollm2")
    result = await registry.resolve(["local/smollm2"]).complete(ChatRequest([ChatMessage("user", "Hi!")],
                                                                            max_tokens=8))
    assert result.text.strip() and registry.resolve("local/smollm2") is model and model.loaded
    await registry.close()
    assert not model.loaded


async def test_long_history_is_trimmed_to_fit_the_context(gguf):
    model = LlamaCppModel(gguf, context=256, max_tokens=16, timeout_s=TIMEOUT_S)
    history = []
    for i in range(30):
        history += [ChatMessage("user", f"Remember the number {i} please."), ChatMessage("assistant", "Done.")]
    result = await model.complete(ChatRequest([SYSTEM, *history, ChatMessage("user", "Say hi.")]))
    assert result.text.strip()
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= 256
    await model.close()


async def test_a_prompt_that_cannot_fit_is_a_clear_error(gguf):
    from voiceserver.engines import ProviderError

    model = LlamaCppModel(gguf, context=128, timeout_s=TIMEOUT_S)
    with pytest.raises(ProviderError) as err:
        await model.complete(ChatRequest([ChatMessage("user", "word " * 400)]))
    assert err.value.code == "llm_context_overflow"
    assert model.free_contexts == 1
    await model.close()


async def test_a_second_call_sharing_the_prefix_is_served_from_the_prompt_cache(model):
    history = [SYSTEM, ChatMessage("user", "Hi, are you open tonight?"),
               ChatMessage("assistant", "Yes, we are open from seven to eleven tonight.")]
    first = await model.complete(ChatRequest([*history, ChatMessage("user", "Can I bring my dog?")], max_tokens=8))
    assert first.usage.cached_tokens == 0 and first.usage.prompt_tokens > 30  # a fresh context: nothing cached
    second = await model.complete(ChatRequest([*history, ChatMessage("user", "Do you take cards?")], max_tokens=8))
    shared = model.count_tokens(model._template.render(history))  # the conversation up to the new question
    assert second.usage.prompt_tokens > shared
    assert shared - 4 <= second.usage.cached_tokens < second.usage.prompt_tokens
    again = await model.complete(ChatRequest([*history, ChatMessage("user", "Do you take cards?")], max_tokens=8,
                                             tools=[WEATHER], tool_choice="none"))
    assert again.usage.cached_tokens >= shared - 4  # tools off: the same prompt, the cache still holds it


async def test_count_tokens_is_the_prompt_the_model_reads(gguf):
    model = LlamaCppModel(gguf, timeout_s=TIMEOUT_S)
    text = "Hello there! My name is Ada, and my favourite colour is green. What's the weather in Lyon?"
    before = await model.count_tokens_async(text)  # the vocabulary alone, weights not loaded yet
    assert not model.loaded
    request = ChatRequest([SYSTEM, ChatMessage("user", text)], max_tokens=4)
    result = await model.complete(request)
    assert model.count_tokens(text) == before and 15 < before < len(text) // 2
    assert model.count_tokens(model._template.render(request.messages)) == result.usage.prompt_tokens
    await model.close()


async def test_a_background_call_waits_for_live_work_and_still_answers(gguf):
    from voiceserver.engines import LiveActivity

    activity = LiveActivity()
    model = LlamaCppModel(gguf, pool=2, timeout_s=TIMEOUT_S, live_activity=activity)
    await model.load()
    order: list[str] = []

    async def background() -> None:
        request = ChatRequest([SYSTEM, ChatMessage("user", "Say hello.")], max_tokens=8, priority="background")
        async for chunk in model.stream(request):
            if isinstance(chunk, TextDelta) and "background text" not in order:
                order.append("background text")
        order.append("background done")

    activity.begin()  # a transcription runs
    task = asyncio.create_task(background())
    live = await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "Say hi.")], max_tokens=8))
    order.append("live done")
    await asyncio.sleep(0.2)
    order.append("transcription done")
    activity.end()
    await task
    assert live.text.strip()
    assert order == ["live done", "transcription done", "background text", "background done"]
    await model.close()


async def test_every_generation_frees_its_native_sampler_without_the_collector(model, monkeypatch):
    """llama-cpp-python's sampler sits in a reference cycle of its own and holds a vocabulary-sized buffer; each
    generation must free it when it ends (answer, tool decision, closed stream), not at the next full collection."""
    from llama_cpp import _internals

    made = []
    original_init = _internals.LlamaSampler.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(_internals.LlamaSampler, "__init__", recording_init)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # only reference counting and explicit closes may free anything in here
    try:
        await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "Say hello.")], max_tokens=8))
        await model.complete(ChatRequest([SYSTEM, ChatMessage("user", "What's the weather in Paris?")],
                                         tools=[WEATHER], tool_choice="required", max_tokens=40))
        request = ChatRequest([SYSTEM, ChatMessage("user", "List numbers.")], response_schema=LONG_ARRAY,
                              max_tokens=1000)
        async with contextlib.aclosing(model.stream(request)) as stream:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    break
        await wait_context_back(model)
    finally:
        if gc_was_enabled:
            gc.enable()
    assert len(made) >= 3
    assert [s.sampler for s in made] == [None] * len(made)  # every native chain freed
