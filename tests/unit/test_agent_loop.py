"""The tool loop with the scripted model: tool calls, bad arguments, max_steps, tool_choice, callbacks, inputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from voiceserver.agent import Agent, AgentError, RunContext, ToolContext, create_tool, tool
from voiceserver.engines import NotConfiguredError, ProviderError
from voiceserver.llm.base import ChatMessage, ChatModel, ChatRequest, Finish, TextDelta, ToolCall, ToolCallChunk
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel


class Weather(BaseModel):
    location: str


def weather_tool(calls: list):
    async def get_weather(input: Weather, ctx: ToolContext) -> dict:
        calls.append(input)
        return {"location": input.location, "temperature_c": 18}

    return create_tool(id="weather", description="Current weather for a city.", input_schema=Weather,
                       execute=get_weather)


async def test_tool_loop_calls_tool_with_validated_args_and_feeds_the_result_back():
    calls: list = []
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "London"})]),
                               "It is 18 degrees in London."])
    agent = Agent(name="Assistant", instructions="Be brief.", model=model, tools={"weather": weather_tool(calls)})
    stream = agent.stream("What's the weather in London?")
    types = [chunk.type async for chunk in stream]
    result = await stream.result()

    assert calls == [Weather(location="London")]
    assert result.text == "It is 18 degrees in London."
    assert result.finish_reason == "stop"
    assert [(c.tool_name, c.args) for c in result.tool_calls] == [("weather", {"location": "London"})]
    assert result.tool_results[0].result == {"location": "London", "temperature_c": 18}
    assert result.tool_results[0].tool_call_id == result.tool_calls[0].tool_call_id
    assert result.usage.total_tokens > 0 and result.run_id == stream.run_id
    assert types[0] == "start" and types[-1] == "finish"
    assert types.index("tool-call") < types.index("tool-result") < types.index("text-delta")
    assert types.count("step-start") == 2 and types.count("step-finish") == 2
    # What the model saw the second time: system, user, assistant tool call, tool result.
    second = model.requests[1]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert second.messages[0].content == "Be brief."
    assert second.messages[3].content == '{"location": "London", "temperature_c": 18}'
    assert second.messages[3].tool_call_id == result.tool_calls[0].tool_call_id
    assert [t.name for t in model.requests[0].tools] == ["weather"]
    assert [m.role for m in result.response_messages] == ["assistant", "tool", "assistant"]


async def test_bad_arguments_go_back_as_tool_error_and_the_model_recovers():
    calls: list = []
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"city": "Paris"})]),
                               Reply(tool_calls=[("weather", {"location": "Paris"})]),
                               "Sunny in Paris."])
    agent = Agent(name="A", model=model, tools={"weather": weather_tool(calls)})
    stream = agent.stream("Weather in Paris?")
    errors = [c for c in [c async for c in stream] if c.type == "tool-error"]
    result = await stream.result()
    assert len(errors) == 1 and "location: Field required" in errors[0].payload["error"]
    assert "location: Field required" in model.requests[1].messages[-1].content
    assert calls == [Weather(location="Paris")]
    assert result.text == "Sunny in Paris." and result.finish_reason == "stop"
    assert [r.is_error for r in result.tool_results] == [True, False]


async def test_unknown_tool_and_failing_tool_are_tool_errors():
    async def broken(input, ctx):
        raise ValueError("no data")

    model = ScriptedChatModel([Reply(tool_calls=[("nope", {}), ("broken", {})]), "Sorry."])
    agent = Agent(name="A", model=model, tools={"broken": create_tool(id="broken", description="B.", execute=broken)})
    result = await agent.generate("hi")
    assert result.text == "Sorry."
    messages = {r.tool_name: r.result for r in result.tool_results}
    assert "unknown tool 'nope'" in messages["nope"] and "available tools: broken" in messages["nope"]
    assert "ValueError: no data" in messages["broken"]


async def test_max_steps_bounds_the_number_of_model_calls():
    calls: list = []
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "Rome"})])])  # repeats forever
    agent = Agent(name="A", model=model, tools={"weather": weather_tool(calls)})
    result = await agent.generate("loop", max_steps=3)
    assert model.calls == 3 and len(calls) == 3
    assert result.finish_reason == "max_steps"
    assert len(result.steps) == 3 and len({c.tool_call_id for c in result.tool_calls}) == 3
    with pytest.raises(AgentError, match="max_steps"):
        agent.stream("x", max_steps=0)


async def test_default_options_apply_and_explicit_options_win():
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "Rome"})])])
    agent = Agent(name="A", model=model, tools={"weather": weather_tool([])}, default_options={"max_steps": 2})
    assert (await agent.generate("x")).finish_reason == "max_steps" and model.calls == 2
    await agent.generate("x", max_steps=1)
    assert model.calls == 3


async def test_tool_choice_is_sent_for_the_first_step_then_auto():
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "Oslo"})]), "Cold."])
    agent = Agent(name="A", model=model, tools={"weather": weather_tool([])})
    await agent.generate("x", tool_choice="required")
    assert [r.tool_choice for r in model.requests] == ["required", "auto"]

    model2 = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "Oslo"})]), "Cold."])
    agent2 = Agent(name="A", model=model2, tools={"weather": weather_tool([])})
    await agent2.generate("x", tool_choice="weather")
    assert model2.requests[0].tool_choice == "weather"

    model3 = ScriptedChatModel(["No tools."])
    agent3 = Agent(name="A", model=model3, tools={"weather": weather_tool([])})
    await agent3.generate("x", tool_choice="none")
    assert model3.requests[0].tools == []

    with pytest.raises(AgentError, match="tool_choice 'teleport'"):
        agent3.stream("x", tool_choice="teleport")


async def test_tool_calls_despite_tool_choice_none_are_not_run():
    calls: list = []
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "Oslo"})]), "ok"])
    agent = Agent(name="A", model=model, tools={"weather": weather_tool(calls)})
    result = await agent.generate("x", tool_choice="none")
    assert calls == [] and "disabled" in result.tool_results[0].result


async def test_parallel_tool_calls_in_one_step_run_concurrently():
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    def make(name: str, other: str):
        async def execute(input, ctx):
            started[name].set()
            await started[other].wait()  # would wait forever (until the timeout) if the calls ran one by one
            return name

        return create_tool(id=name, description=f"Tool {name}.", execute=execute, timeout_s=10)

    model = ScriptedChatModel([Reply(tool_calls=[("a", {}), ("b", {})]), "done"])
    agent = Agent(name="A", model=model, tools={"a": make("a", "b"), "b": make("b", "a")})
    result = await agent.generate("go")
    assert sorted(r.result for r in result.tool_results) == ["a", "b"]
    # Results go back to the model in call order.
    assert [m.name for m in model.requests[1].messages if m.role == "tool"] == ["a", "b"]


async def test_callbacks_see_every_chunk_step_and_the_result():
    seen_chunks, steps, finished = [], [], []

    async def on_chunk(chunk):
        seen_chunks.append(chunk.type)

    def on_step(step):
        steps.append(step.step)
        raise RuntimeError("a broken callback must not break the run")

    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"location": "Oslo"})]), "Cold."])
    agent = Agent(name="A", model=model, tools={"weather": weather_tool([])})
    stream = agent.stream("x", on_chunk=on_chunk, on_step_finish=on_step, on_finish=finished.append)
    result = await stream.result()
    assert seen_chunks == [c.type for c in stream.chunks]
    assert steps == [1, 2]
    assert finished == [result] and result.text == "Cold."


async def test_instructions_string_list_callable_async_and_override():
    async def dynamic(ctx: RunContext) -> str:
        return f"Speak to {ctx.get('user')} in run {ctx.run_id[:4]}."

    model = ScriptedChatModel(["ok"])
    for instructions, expected in [
        ("Plain.", "Plain."),
        (["One.", "Two."], "One.\n\nTwo."),
        (lambda ctx: f"agent {ctx.agent_id}", "agent helper"),
        (lambda: "no-arg", "no-arg"),
        (dynamic, "Speak to Ada in run run_."),
    ]:
        agent = Agent(name="Helper", instructions=instructions, model=model)
        await agent.generate("hi", context={"user": "Ada"})
        assert model.requests[-1].messages[0] == ChatMessage("system", expected)
    agent = Agent(name="Helper", instructions="Default.", model=model)
    await agent.generate("hi", instructions="Override.")
    assert model.requests[-1].messages[0].content == "Override."


async def test_input_may_be_a_list_of_messages():
    model = ScriptedChatModel(["Fine."])
    agent = Agent(name="A", instructions="Sys.", model=model)
    history = [{"role": "user", "content": "Hi"}, ChatMessage("assistant", "Hello!"),
               {"role": "user", "content": [{"type": "text", "text": "How are you?"}]}]
    assert (await agent.generate(history)).text == "Fine."
    assert [(m.role, m.content) for m in model.requests[0].messages] == [
        ("system", "Sys."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "How are you?")]
    for bad in (42, [], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 5}]):
        with pytest.raises(AgentError) as info:
            agent.stream(bad)
        assert info.value.code == "invalid_input"


async def test_a_dangling_tool_call_in_the_input_history_is_dropped():
    model = ScriptedChatModel(["ok"])
    agent = Agent(name="A", model=model)
    history = [{"role": "user", "content": "book"},
               {"role": "assistant", "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
               {"role": "user", "content": "never mind"}]
    await agent.generate(history)
    assert [m.role for m in model.requests[0].messages] == ["user", "user"]


async def test_model_failure_is_an_error_chunk_and_result_raises():
    model = ScriptedChatModel([Reply(error=ProviderError("llm_unavailable", "down", retryable=True))])
    agent = Agent(name="A", model=model)
    stream = agent.stream("hi")
    chunks = [c async for c in stream]
    assert chunks[-1].type == "error" and chunks[-1].payload["code"] == "llm_unavailable"
    assert isinstance(chunks[-1].payload["error"], ProviderError)
    with pytest.raises(ProviderError):
        await stream.result()
    with pytest.raises(ProviderError):
        await agent.generate("again")


class RepeatingIdModel(ChatModel):
    """A model that (like some local ones) numbers its tool calls from 0 in every reply."""

    provider = "repeating"

    def __init__(self):
        super().__init__("repeating/test", retries=0)
        self.turn = 0

    async def _stream(self, request: ChatRequest) -> AsyncIterator:
        self.turn += 1
        if self.turn <= 2:
            yield ToolCallChunk(ToolCall("call_0", "weather", {"location": f"City{self.turn}"}))
            yield Finish("tool_calls")
        else:
            yield TextDelta("done")
            yield Finish()


async def test_a_reused_tool_call_id_is_still_executed_once_per_call():
    calls: list = []
    agent = Agent(name="A", model=RepeatingIdModel(), tools={"weather": weather_tool(calls)})
    result = await agent.generate("x")
    assert [c.location for c in calls] == ["City1", "City2"]
    ids = [c.tool_call_id for c in result.tool_calls]
    assert len(set(ids)) == 2 and ids[0] == "call_0"


async def test_text_stream_yields_only_text():
    agent = Agent(name="A", model=ScriptedChatModel(["Hello there friend."]))
    assert "".join([t async for t in agent.stream("hi").text_stream]) == "Hello there friend."


async def test_model_strings_resolve_lazily_through_the_registry():
    class Registry:
        def __init__(self):
            self.asked: list = []

        def resolve(self, spec):
            self.asked.append(spec)
            return ScriptedChatModel(["resolved"])

    registry = Registry()
    agent = Agent(name="A", model=["openai/gpt-4o-mini", "local/smollm2"], model_registry=registry)
    assert registry.asked == []  # nothing resolved at construction
    assert (await agent.generate("x")).text == "resolved"
    await agent.generate("y")
    assert registry.asked == [["openai/gpt-4o-mini", "local/smollm2"]]


async def test_decorated_tools_as_a_list_and_tool_definition_checks():
    @tool
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = ScriptedChatModel([Reply(tool_calls=[("add", {"a": 2, "b": "3"})]), "5"])
    agent = Agent(name="A", model=model, tools=[add])
    result = await agent.generate("2+3")
    assert result.tool_results[0].result == 5 and agent.list_tools() == ["add"]
    with pytest.raises(ValueError, match="not a Tool"):
        Agent(name="A", model=model, tools={"add": lambda a, b: a + b})


async def test_voice_without_a_provider_is_a_clear_error():
    agent = Agent(name="Quiet", model=ScriptedChatModel(["x"]))
    assert not agent.voice
    with pytest.raises(NotConfiguredError, match="No voice provider configured"):
        await agent.voice.speak("hello")
    with pytest.raises(NotConfiguredError, match="No voice provider configured"):
        await agent.voice.listen(b"")
    marker = object()
    assert Agent(name="Loud", model=ScriptedChatModel(["x"]), voice=marker).voice is marker
