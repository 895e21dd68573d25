"""Step construction (plain, from an agent, from a tool, from a workflow) and schema validation errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from voiceserver.ids import InvalidIdError
from voiceserver.workflows import SchemaValidationError, create_step, create_workflow


class In(BaseModel):
    input: str


class Out(BaseModel):
    output: str


class Num(BaseModel):
    value: int


async def test_run_input_is_validated_before_start_naming_the_field():
    wf = create_workflow(id="v", input_schema=In).then(
        create_step(id="s", input_schema=In, execute=lambda ctx: {"output": ctx.input_data.input})).commit()
    run = await wf.create_run()
    with pytest.raises(SchemaValidationError) as err:
        await run.start(input_data={"inptu": "x"})
    assert err.value.code == "invalid_input"
    assert [f["field"] for f in err.value.fields] == ["input"]
    assert "input: Field required" in str(err.value)
    assert run.status == "pending" and await wf.get_run(run.run_id) is None
    with pytest.raises(SchemaValidationError):
        run.stream(input_data={"input": 3})  # checked when the stream is made, before any event


async def test_step_output_and_next_input_errors_name_step_and_field():
    wrong_output = create_step(id="wrong-out", input_schema=In, output_schema=Out,
                               execute=lambda ctx: {"outptu": "x"})
    wf = create_workflow(id="v-out", input_schema=In).then(wrong_output).commit()
    result = await (await wf.create_run()).start(input_data={"input": "a"})
    assert result.status == "failed"
    assert result.error["step_id"] == "wrong-out" and result.error["code"] == "invalid_output"
    assert result.error["fields"][0]["field"] == "output"
    assert "output of step 'wrong-out'" in result.error["message"]

    produce = create_step(id="produce", execute=lambda ctx: {"value": "not a number"})
    consume = create_step(id="consume", input_schema=Num, execute=lambda ctx: ctx.input_data)
    wf2 = create_workflow(id="v-in").then(produce).then(consume).commit()
    result2 = await (await wf2.create_run()).start(input_data=None)
    assert result2.status == "failed"
    assert result2.error["step_id"] == "consume" and result2.error["code"] == "invalid_input"
    assert result2.error["fields"][0]["field"] == "value"
    assert result2.steps["consume"].status == "failed" and result2.steps["produce"].status == "success"


async def test_workflow_output_schema_checked_at_the_end():
    wf = create_workflow(id="v-wf-out", output_schema=Out).then(
        create_step(id="s", execute=lambda ctx: {"other": 1})).commit()
    result = await (await wf.create_run()).start(input_data=None)
    assert result.status == "failed"
    assert result.error["code"] == "invalid_output" and result.error["fields"][0]["field"] == "output"
    assert result.error["step_id"] is None


async def test_non_json_output_without_schema_fails_clearly():
    wf = create_workflow(id="v-json").then(create_step(id="s", execute=lambda ctx: object())).commit()
    result = await (await wf.create_run()).start(input_data=None)
    assert result.status == "failed" and "not JSON-serialisable" in result.error["message"]


async def test_suspend_payload_is_validated():
    class Ask(BaseModel):
        prompt: str

    step = create_step(id="s", suspend_schema=Ask, execute=lambda ctx: ctx.suspend({"promt": "typo"}))
    wf = create_workflow(id="v-susp").then(step).commit()
    result = await (await wf.create_run()).start(input_data=None)
    assert result.status == "failed" and result.error["fields"][0]["field"] == "prompt"


def test_create_step_argument_errors():
    with pytest.raises(TypeError, match="needs id"):
        create_step(execute=lambda ctx: None)
    with pytest.raises(TypeError, match="callable execute"):
        create_step(id="x")
    with pytest.raises(InvalidIdError):
        create_step(id="bad id!", execute=lambda ctx: None)
    with pytest.raises(ValueError, match="retries"):
        create_step(id="x", execute=lambda ctx: None, retries=-1)
    with pytest.raises(TypeError, match="cannot make a step"):
        create_step(42)


@dataclass
class FakeAgentResult:
    text: str
    object: Any = None


class FakeAgent:
    """Duck-typed like voiceserver.agent.Agent: async generate(prompt, ...) -> result with .text / .object."""

    def __init__(self, name: str):
        self.name = name
        self.description = "Answers questions."
        self.calls: list[tuple[str, dict]] = []

    async def generate(self, prompt: str, **options: Any) -> FakeAgentResult:
        self.calls.append((prompt, options))
        if "structured_output" in options:
            return FakeAgentResult(text="{}", object={"output": prompt.upper()})
        return FakeAgentResult(text=f"answer to {prompt}")


async def test_agent_step_takes_prompt_and_returns_text():
    agent = FakeAgent("Research Agent")
    step = create_step(agent)
    assert step.id == "Research-Agent" and step.kind == "agent" and step.description == "Answers questions."
    wf = (create_workflow(id="agent-wf", input_schema=In)
          .map(lambda ctx: {"prompt": f"tell me about {ctx.input_data.input}"})
          .then(step).commit())
    result = await (await wf.create_run()).start(input_data={"input": "London"})
    assert result.status == "success", result.error
    assert result.result == {"text": "answer to tell me about London"}
    assert agent.calls == [("tell me about London", {})]

    structured = create_step(agent, id="structured", output_schema=Out)
    wf2 = create_workflow(id="agent-wf2").then(structured).commit()
    result2 = await (await wf2.create_run()).start(input_data={"prompt": "hi"})
    assert result2.result == {"output": "HI"}
    assert agent.calls[-1][1]["structured_output"] == {"schema": Out}


class Weather(BaseModel):
    location: str


class WeatherOut(BaseModel):
    temperature: float


class FakeTool:
    """Duck-typed like a voiceserver tool: id, schemas and async execute(input, ctx)."""

    id = "weather"
    description = "Current weather."
    input_schema = Weather
    output_schema = WeatherOut

    def __init__(self):
        self.seen: list[Any] = []

    async def execute(self, input: Weather, ctx: Any) -> dict:
        self.seen.append((input, ctx.run_id))
        return {"temperature": 21.5 if input.location == "London" else 30}


async def test_tool_step_uses_the_tool_schemas():
    tool = FakeTool()
    step = create_step(tool)
    assert step.id == "weather" and step.input_schema is Weather and step.kind == "tool"
    wf = create_workflow(id="tool-wf").then(step).commit()
    run = await wf.create_run()
    result = await run.start(input_data={"location": "London"})
    assert result.result == {"temperature": 21.5}
    assert tool.seen == [(Weather(location="London"), run.run_id)]
    bad = await (await wf.create_run()).start(input_data={"city": "London"})
    assert bad.status == "failed" and bad.error["fields"][0]["field"] == "location"


def test_create_step_from_a_workflow_returns_it():
    inner = create_workflow(id="inner").then(create_step(id="s", execute=lambda ctx: 1)).commit()
    assert create_step(inner) is inner
    assert inner.describe()["graph"] == [{"type": "step", "step": "s"}]
