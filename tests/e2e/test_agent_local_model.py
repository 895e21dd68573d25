"""The agent on the real local model (SmolLM2 135M through llama.cpp): valid tool calls and objects by grammar."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import BaseModel

from voiceserver.agent import Agent, create_tool
from voiceserver.llm import ModelContext, ModelRegistry

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


class Weather(BaseModel):
    location: str


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture
async def registry(models_dir):
    reg = ModelRegistry(ModelContext(models_dir=models_dir, threads=2, pool=1, max_tokens=60, temperature=0.0))
    yield reg
    await reg.close()


async def test_local_model_makes_a_valid_tool_call_and_answers(registry):
    seen: list[str] = []

    async def get_weather(input: Weather, ctx) -> dict:
        seen.append(input.location)
        return {"location": input.location, "conditions": "sunny", "temperature_c": 21}

    weather = create_tool(id="weather", description="Current weather for a city.", input_schema=Weather,
                          execute=get_weather)
    agent = Agent(name="Assistant", instructions="You are a helpful assistant. Use the weather tool.",
                  model="local/smollm2", tools={"weather": weather}, model_registry=registry)
    stream = agent.stream("What's the weather in Paris?", tool_choice="required")
    types = [c.type async for c in stream]
    result = await stream.result()
    # The grammar makes the call valid JSON of the schema: it ran with a validated location.
    assert len(seen) == 1 and isinstance(seen[0], str) and seen[0].strip()
    assert result.tool_results[0].is_error is False
    assert types.index("tool-call") < types.index("tool-result") < types.index("finish")
    assert result.finish_reason in ("stop", "length") and result.text.strip()


async def test_local_model_structured_output_validates(registry):
    agent = Agent(name="Extractor", instructions="Extract the person.", model="local/smollm2",
                  model_registry=registry)
    result = await agent.generate("Ada Lovelace was 36 years old.", structured_output={"schema": Person})
    assert isinstance(result.object, Person) and isinstance(result.object.age, int)


async def test_multi_agent_chain_example_on_the_local_model(registry, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    chain = importlib.import_module("examples.multi_agent_chain")
    stages = chain.build_chain("local/smollm2")
    for stage in stages:
        stage.agent.model_registry = registry
    outputs = await chain.run_chain("solar panels on city roofs", stages)
    assert list(outputs) == ["researcher", "analyst", "writer"]
    assert all(text.strip() for text in outputs.values())
