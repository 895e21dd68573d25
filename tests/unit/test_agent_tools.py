"""Tools: create_tool, the @tool decorator, argument validation, timeouts, output validation, suspension."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from voiceserver.agent import ToolContext, ToolDefinitionError, create_tool, tool
from voiceserver.agent.tools import ToolOutcome, _parse_docstring


def ctx(name: str = "t") -> ToolContext:
    return ToolContext(run_id="run_1", tool_call_id="call_1", tool_name=name)


class Weather(BaseModel):
    location: str
    unit: Literal["c", "f"] = "c"


async def get_weather(input: Weather, ctx: ToolContext) -> dict:
    return {"location": input.location, "unit": input.unit, "call": ctx.tool_call_id}


async def test_create_tool_validates_and_executes():
    weather = create_tool(id="weather", description="Current weather for a city.", input_schema=Weather,
                          execute=get_weather)
    outcome = await weather.run({"location": "London"}, ctx("weather"))
    assert outcome == ToolOutcome("ok", {"location": "London", "unit": "c", "call": "call_1"})
    schema = weather.parameters_schema()
    assert schema["required"] == ["location"]
    assert schema["properties"]["unit"]["enum"] == ["c", "f"]


async def test_bad_arguments_are_an_error_naming_the_field():
    weather = create_tool(id="weather", description="Weather.", input_schema=Weather, execute=get_weather)
    outcome = await weather.run({"unit": "k"}, ctx("weather"))
    assert outcome.status == "error"
    assert "location: Field required" in outcome.value
    assert "unit:" in outcome.value
    assert (await weather.run("London", ctx("weather"))).status == "error"  # not an object


async def test_exception_and_timeout_become_tool_errors():
    async def boom(input, ctx):
        raise RuntimeError("backend down")

    async def slow(input, ctx):
        await asyncio.sleep(30)

    failing = create_tool(id="failing", description="Fails.", execute=boom)
    outcome = await failing.run({}, ctx("failing"))
    assert outcome.status == "error" and "RuntimeError: backend down" in outcome.value
    sleepy = create_tool(id="sleepy", description="Slow.", execute=slow, timeout_s=0.05)
    outcome = await sleepy.run({}, ctx("sleepy"))
    assert outcome.status == "error" and "timed out after 0.05s" in outcome.value


async def test_tool_raising_its_own_timeout_error_is_not_reported_as_our_timeout():
    async def raises_timeout(input, ctx):
        raise TimeoutError("upstream")

    t = create_tool(id="t", description="T.", execute=raises_timeout)
    outcome = await t.run({}, ctx())
    assert outcome.status == "error" and "timed out" not in outcome.value


async def test_output_schema_is_validated():
    class Out(BaseModel):
        temperature: float

    async def bad(input, ctx):
        return {"temp": 3}

    t = create_tool(id="t", description="T.", execute=bad, output_schema=Out)
    outcome = await t.run({}, ctx())
    assert outcome.status == "error" and "temperature: Field required" in outcome.value


async def test_one_argument_and_sync_execute():
    def sync_execute(input):
        return {"echo": input["x"]}

    t = create_tool(id="echo", description="Echo.", execute=sync_execute,
                    input_schema={"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]})
    assert (await t.run({"x": "hi"}, ctx())).value == {"echo": "hi"}
    assert "x: Field required" in (await t.run({}, ctx())).value


async def test_decorator_builds_schema_from_signature_and_docstring():
    @tool
    async def convert(celsius: float, to: Literal["fahrenheit", "kelvin"] = "fahrenheit",
                      precision: Annotated[int, Field(ge=0, le=3)] = 1) -> dict:
        """Convert a temperature.

        More detail on a second paragraph.

        Args:
            celsius: Degrees Celsius.
            to: Target unit, which is
                described on two lines.
            precision: Decimals.
        """
        value = celsius * 9 / 5 + 32 if to == "fahrenheit" else celsius + 273.15
        return {"value": round(value, precision)}

    assert convert.id == "convert"
    assert convert.description.startswith("Convert a temperature.")
    schema = convert.parameters_schema()
    assert schema["required"] == ["celsius"]
    assert schema["properties"]["celsius"]["description"] == "Degrees Celsius."
    assert schema["properties"]["to"]["description"] == "Target unit, which is described on two lines."
    assert schema["properties"]["precision"]["maximum"] == 3
    assert (await convert.run({"celsius": 100}, ctx())).value == {"value": 212.0}
    bad = await convert.run({"celsius": 1, "precision": 9}, ctx())
    assert bad.status == "error" and "precision" in bad.value


async def test_decorator_with_options_ctx_and_model_parameter():
    class Booking(BaseModel):
        restaurant: str
        people: int = Field(ge=1)

    @tool(id="book", require_approval=True, cancel_on_interrupt=False, timeout_s=5)
    async def book_table(booking: Booking, ctx: ToolContext) -> dict:
        """Book a table."""
        return {"ok": booking.restaurant, "run": ctx.run_id}

    assert book_table.require_approval and not book_table.cancel_on_interrupt and book_table.timeout_s == 5
    assert book_table.input_schema is Booking
    assert (await book_table.run({"restaurant": "Luigi", "people": 2}, ctx())).value == {"ok": "Luigi", "run": "run_1"}

    @tool
    def plain(x: int, ctx) -> int:
        """Sync tool with ctx."""
        return x + len(ctx.tool_name)

    assert (await plain.run({"x": 1}, ctx("abc"))).value == 4


def test_tool_definition_errors():
    with pytest.raises(ToolDefinitionError, match="description"):
        @tool
        def undocumented(x: int) -> int:
            return x
    with pytest.raises(ToolDefinitionError, match="args"):
        @tool
        def variadic(*args) -> None:
            """Doc."""
    with pytest.raises(ToolDefinitionError, match="tool id"):
        create_tool(id="bad id!", description="x", execute=get_weather)
    with pytest.raises(ToolDefinitionError, match="execute"):
        create_tool(id="x", description="x")


async def test_suspend_stops_the_tool_and_carries_a_validated_payload():
    class Question(BaseModel):
        question: str

    after = []

    @tool(suspend_schema=Question)
    async def ask(ctx: ToolContext) -> dict:
        """Ask first."""
        if ctx.resume_data is None:
            await ctx.suspend({"question": "Sure?"})
            after.append("ran on")  # never reached
        return {"answer": ctx.resume_data}

    outcome = await ask.run({}, ctx())
    assert outcome == ToolOutcome("suspended", suspend_payload={"question": "Sure?"})
    assert after == []
    resumed = ctx()
    resumed.resume_data = "yes"
    assert (await ask.run({}, resumed)).value == {"answer": "yes"}


async def test_a_tool_that_swallows_the_suspend_signal_is_still_suspended():
    @tool
    async def sneaky(ctx: ToolContext) -> str:
        """Catches everything."""
        try:
            await ctx.suspend({"q": 1})
        except Exception:  # noqa: BLE001 - the point of the test
            return "carried on"
        return "unreachable"

    assert (await sneaky.run({}, ctx())).status == "suspended"


def test_docstring_parser_handles_rest_style():
    summary, args = _parse_docstring("Do it.\n\n:param x: the x value\n:param str y: the y\n    continued\n")
    assert summary == "Do it."
    assert args == {"x": "the x value", "y": "the y continued"}
