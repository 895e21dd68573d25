"""The OpenAI-compatible provider over real HTTP against the loopback server speaking the documented format."""

from __future__ import annotations

import asyncio
import contextlib
import json

import openai
import pytest

from voiceserver.engines import ProviderError
from voiceserver.llm import ModelContext, ModelRegistry, OpenAICompatibleModel
from voiceserver.llm.base import ChatMessage, ChatRequest, Finish, TextDelta, ToolCallChunk, ToolSpec
from voiceserver.llm.openai_compatible import RAW_ARGUMENTS_KEY
from voiceserver.metrics import Metrics
from voiceserver.testing.fake_openai import FakeOpenAI
from voiceserver.testing.fake_openai.chat import chat_routes

KEY = "sk-test-0123456789"
WEATHER = ToolSpec("weather", "Current weather for a city.",
                   {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]})


def question(text: str = "What's the weather in Paris?", **kwargs) -> ChatRequest:
    return ChatRequest([ChatMessage("system", "Be brief."), ChatMessage("user", text)], **kwargs)


def chat_bodies(fake: FakeOpenAI) -> list[dict]:
    return [body for path, body in fake.requests if path == "/v1/chat/completions"]


async def test_streams_text_with_usage():
    routes = chat_routes(["Paris is sunny today, with a light breeze."])
    async with FakeOpenAI(routes, api_key=KEY) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        chunks = [c async for c in model.stream(question())]
        await model.close()
    deltas = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert len(deltas) > 3  # it really streamed, piece by piece
    assert "".join(deltas) == "Paris is sunny today, with a light breeze."
    finish = chunks[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop"
    assert finish.usage.prompt_tokens == 7 and finish.usage.completion_tokens == len(deltas)
    body = chat_bodies(fake)[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][1] == {"role": "user", "content": "What's the weather in Paris?"}
    assert routes.completed_streams == 1


async def test_tool_calls_are_assembled_from_fragments():
    script = [{"tool_calls": [{"name": "weather", "arguments": {"location": "Paris, France"}},
                              {"name": "weather", "arguments": {"location": "Lyon"}}], "fragments": 5}]
    async with FakeOpenAI(chat_routes(script)) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        chunks = [c async for c in model.stream(question(tools=[WEATHER], tool_choice="required"))]
        await model.close()
    calls = [c.call for c in chunks if isinstance(c, ToolCallChunk)]
    assert [(c.name, c.arguments) for c in calls] == [("weather", {"location": "Paris, France"}),
                                                      ("weather", {"location": "Lyon"})]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
    assert isinstance(chunks[-1], Finish) and chunks[-1].reason == "tool_calls"
    body = chat_bodies(fake)[0]
    assert body["tools"] == [WEATHER.to_openai()] and body["tool_choice"] == "required"


async def test_invalid_tool_arguments_reach_the_caller_raw():
    script = [{"tool_calls": [{"name": "weather", "arguments": '{"location": "Par'}]}]
    async with FakeOpenAI(chat_routes(script)) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        result = await model.complete(question(tools=[WEATHER]))
        await model.close()
    assert result.tool_calls[0].arguments == {RAW_ARGUMENTS_KEY: '{"location": "Par'}


async def test_response_format_is_sent_for_a_schema():
    schema = {"title": "Forecast", "type": "object", "properties": {"sky": {"type": "string"}}, "required": ["sky"],
              "additionalProperties": False}
    async with FakeOpenAI(chat_routes(['{"sky": "clear"}'])) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        result = await model.complete(question(response_schema=schema))
        await model.close()
    assert json.loads(result.text) == {"sky": "clear"}
    assert chat_bodies(fake)[0]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Forecast", "schema": schema, "strict": True}}


async def test_a_500_is_retried_before_the_first_chunk():
    metrics = Metrics()
    async with FakeOpenAI(chat_routes(["Recovered."], fail_first=1)) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url, retries=1,
                                      metrics=metrics)
        result = await model.complete(question())
        await model.close()
    assert result.text == "Recovered."
    assert len(chat_bodies(fake)) == 2  # one failure, one retry; the SDK's own retries are off
    assert metrics.registry.get_sample_value("voiceserver_provider_calls_total",
                                             {"provider": "openai", "operation": "chat",
                                              "outcome": "llm_unavailable"}) == 1


async def test_persistent_500s_give_a_retryable_error_after_the_retries():
    async with FakeOpenAI(chat_routes(["never"], fail_first=10)) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url, retries=2)
        with pytest.raises(ProviderError) as err:
            await model.complete(question())
        await model.close()
    assert err.value.code == "llm_unavailable" and err.value.retryable
    assert len(chat_bodies(fake)) == 3


async def test_a_wrong_key_is_provider_auth_and_not_retried():
    async with FakeOpenAI(chat_routes(["hi"]), api_key=KEY) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key="sk-wrong-key-999", base_url=fake.base_url, retries=3)
        with pytest.raises(ProviderError) as err:
            await model.complete(question())
        await model.close()
    assert err.value.code == "provider_auth"
    assert "sk-wrong-key-999" not in str(err.value)
    assert len(chat_bodies(fake)) == 1


async def test_closing_the_consumer_mid_stream_closes_the_http_stream():
    long_text = " ".join(f"word{i}" for i in range(200))
    routes = chat_routes([{"text": long_text, "chunk_delay_s": 0.02}])
    async with FakeOpenAI(routes) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        received = []
        async with contextlib.aclosing(model.stream(question())) as stream:
            async for chunk in stream:
                received.append(chunk)
                if len(received) == 3:
                    break
        async with asyncio.timeout(20):  # a hang guard, not a timing assertion
            await routes.stream_aborted.wait()
        await model.close()
    assert routes.aborted_streams == 1 and routes.completed_streams == 0
    assert len(received) == 3


async def test_cancelling_the_consuming_task_closes_the_http_stream():
    routes = chat_routes([{"text": " ".join(["la"] * 300), "chunk_delay_s": 0.02}])
    async with FakeOpenAI(routes) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        first = asyncio.Event()

        async def consume():
            async for _ in model.stream(question()):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(20):
            await routes.stream_aborted.wait()
        await model.close()
    assert routes.aborted_streams == 1


async def test_registry_prefixes_reach_their_servers():
    async with FakeOpenAI(chat_routes(["from google"]), api_key="g-key") as google, \
            FakeOpenAI(chat_routes(["from vllm"])) as vllm, \
            FakeOpenAI(chat_routes(["from openai"]), api_key=KEY) as oai:
        registry = ModelRegistry(ModelContext(
            models_dir=None, openai_api_key=KEY, openai_base_url=oai.base_url, google_ai_api_key="g-key",
            google_base_url=google.base_url, openai_compatible_base_url=vllm.base_url))  # type: ignore[arg-type]
        texts = [(await registry.resolve(spec).complete(question())).text
                 for spec in ("google/gemini-2.0-flash", "openai-compatible/qwen2.5", "openai/gpt-4o-mini")]
        await registry.close()
    assert texts == ["from google", "from vllm", "from openai"]
    assert chat_bodies(google)[0]["model"] == "gemini-2.0-flash"
    assert chat_bodies(vllm)[0]["model"] == "qwen2.5"
    assert "max_tokens" in chat_bodies(vllm)[0] and "max_completion_tokens" in chat_bodies(oai)[0]


async def test_fallback_chain_over_http_switches_on_a_dead_server():
    metrics = Metrics()
    async with FakeOpenAI(chat_routes(["backup answer"])) as backup, \
            FakeOpenAI(chat_routes(["never"], fail_first=100)) as broken:
        registry = ModelRegistry(ModelContext(models_dir=None, openai_api_key=KEY,  # type: ignore[arg-type]
                                              openai_base_url=broken.base_url,
                                              openai_compatible_base_url=backup.base_url, retries=0,
                                              metrics=metrics))
        chain = registry.resolve(["openai/gpt-4o-mini", "openai-compatible/backup"])
        result = await chain.complete(question())
        await registry.close()
    assert result.text == "backup answer"
    assert metrics.registry.get_sample_value("voiceserver_provider_fallbacks_total", {"operation": "llm"}) == 1


async def test_fake_server_speaks_the_documented_non_streaming_format_and_model_list():
    script = ["plain answer", {"tool_calls": [{"name": "weather", "arguments": {"location": "Rome"}}]}]
    async with FakeOpenAI(chat_routes(script), api_key=KEY) as fake:
        client = openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
        first = await client.chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": "hi"}])
        second = await client.chat.completions.create(model="gpt-4o-mini",
                                                      messages=[{"role": "user", "content": "hi"}])
        models = await client.models.list()
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=[])
        await client.close()
    assert first.choices[0].message.content == "plain answer" and first.choices[0].finish_reason == "stop"
    assert first.usage is not None and first.usage.completion_tokens == 2
    call = second.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", {"location": "Rome"})
    assert second.choices[0].finish_reason == "tool_calls"
    assert [m.id for m in models.data] == ["gpt-4o-mini", "gpt-4o"]
