"""The agent over real HTTP: the OpenAI-compatible provider against the loopback server speaking the documented
chat completions format (streaming, tool_calls, response_format), through the model registry and a fallback chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel

from voiceserver.agent import Agent, create_tool
from voiceserver.llm import ModelContext, ModelRegistry, OpenAICompatibleModel
from voiceserver.metrics import Metrics
from voiceserver.testing.fake_openai import FakeOpenAI
from voiceserver.testing.fake_openai.chat import chat_routes

KEY = "sk-test-0123456789"


class Weather(BaseModel):
    location: str


def weather_tool(seen: list):
    async def get_weather(input: Weather, ctx) -> dict:
        seen.append(input.location)
        return {"location": input.location, "conditions": "sunny"}

    return create_tool(id="weather", description="Current weather for a city.", input_schema=Weather,
                       execute=get_weather)


def chat_bodies(fake: FakeOpenAI) -> list[dict]:
    return [body for path, body in fake.requests if path == "/v1/chat/completions"]


async def test_tool_loop_over_http():
    seen: list = []
    routes = chat_routes([{"tool_calls": [{"name": "weather", "arguments": {"location": "Paris"}}]},
                          "It is sunny in Paris."])
    async with FakeOpenAI(routes, api_key=KEY) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        agent = Agent(name="A", instructions="Be brief.", model=model, tools={"weather": weather_tool(seen)})
        stream = agent.stream("Weather in Paris?")
        types = [c.type async for c in stream]
        result = await stream.result()
        await model.close()
    assert seen == ["Paris"] and result.text == "It is sunny in Paris."
    assert types.count("text-delta") > 1 and "tool-result" in types
    first, second = chat_bodies(fake)
    assert first["tools"][0]["function"]["name"] == "weather"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["location"]
    assistant = second["messages"][2]
    call_id = assistant["tool_calls"][0]["id"]
    assert assistant["tool_calls"][0]["function"]["name"] == "weather"
    assert second["messages"][3] == {"role": "tool", "tool_call_id": call_id,
                                     "content": '{"location": "Paris", "conditions": "sunny"}'}
    assert result.tool_calls[0].tool_call_id == call_id
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


async def test_bad_arguments_over_http_go_back_to_the_model():
    seen: list = []
    routes = chat_routes([{"tool_calls": [{"name": "weather", "arguments": "{\"city\": \"Paris\""}]},  # broken JSON
                          {"tool_calls": [{"name": "weather", "arguments": {"location": "Paris"}}]},
                          "Sunny."])
    async with FakeOpenAI(routes, api_key=KEY) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        agent = Agent(name="A", model=model, tools={"weather": weather_tool(seen)})
        result = await agent.generate("Weather in Paris?")
        await model.close()
    assert result.text == "Sunny." and seen == ["Paris"]
    assert result.tool_results[0].is_error
    assert chat_bodies(fake)[1]["messages"][-1]["content"].startswith("Error: invalid arguments")


async def test_model_string_through_the_registry_and_structured_output():
    class City(BaseModel):
        name: str
        country: str

    routes = chat_routes(['{"name": "Paris", "country": "France"}'])
    async with FakeOpenAI(routes, api_key=KEY) as fake:
        registry = ModelRegistry(ModelContext(models_dir=Path("models"), openai_api_key=KEY,
                                              openai_base_url=fake.base_url))
        agent = Agent(name="A", model="openai/gpt-4o-mini", model_registry=registry)
        result = await agent.generate("Capital of France?", structured_output={"schema": City})
        await registry.close()
    assert result.object == City(name="Paris", country="France")
    body = chat_bodies(fake)[0]
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["name", "country"]


async def test_fallback_chain_answers_when_the_first_provider_fails():
    metrics = Metrics.null()
    failing = chat_routes(["never"], fail_first=100, fail_status=503)
    working = chat_routes(["The backup model answered."])
    async with FakeOpenAI(failing, api_key=KEY) as primary, FakeOpenAI(working, api_key=KEY) as backup:
        registry = ModelRegistry(ModelContext(models_dir=Path("models"), openai_api_key=KEY,
                                              openai_base_url=primary.base_url,
                                              openai_compatible_base_url=backup.base_url,
                                              openai_compatible_api_key=KEY, metrics=metrics, retries=0))
        agent = Agent(name="A", model=["openai/gpt-4o-mini", "openai-compatible/llama-3"], model_registry=registry)
        result = await agent.generate("Hello?")
        await registry.close()
    assert result.text == "The backup model answered."
    assert failing.calls >= 1 and working.calls == 1
    assert metrics.provider_fallbacks.labels("llm")._value.get() >= 1


async def test_approval_over_http():
    seen: list = []
    routes = chat_routes([{"tool_calls": [{"name": "weather", "arguments": {"location": "Rome"}}]}, "Warm in Rome."])
    async with FakeOpenAI(routes, api_key=KEY) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        agent = Agent(name="A", model=model, tools={"weather": weather_tool(seen)})
        result = await agent.generate("Weather in Rome?", require_tool_approval=True)
        assert result.finish_reason == "suspended" and seen == []
        final = await (await agent.approve_tool_call(run_id=result.run_id)).result()
        await model.close()
    assert final.text == "Warm in Rome." and seen == ["Rome"] and routes.calls == 2


async def test_cancel_closes_the_http_stream():
    words = " ".join(f"word{i}" for i in range(200))
    routes = chat_routes([{"text": words, "chunk_delay_s": 0.02}])
    async with FakeOpenAI(routes, api_key=KEY) as fake:
        model = OpenAICompatibleModel("gpt-4o-mini", api_key=KEY, base_url=fake.base_url)
        agent = Agent(name="A", model=model)
        stream = agent.stream("Talk a lot")
        async for chunk in stream:
            if chunk.type == "text-delta":
                result = await stream.cancel(heard_text="word0")
        await asyncio.wait_for(routes.stream_aborted.wait(), timeout=10)
        await model.close()
    assert result.finish_reason == "aborted" and routes.aborted_streams == 1 and routes.completed_streams == 0
    assert len(fake.requests) == 1
