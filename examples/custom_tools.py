"""Custom tools for a voiceserver agent: a typed tool, a decorated function, approval, and a self-suspending tool.

Use them from Python (``python examples/custom_tools.py``) or from a settings file, by import path, without touching
the server code (see examples/agents.yaml):

    agents:
      - name: Concierge
        tools: ["examples.custom_tools:weather", "examples.custom_tools:book_table"]

The data here is made up so the example runs offline; a real tool would call an API (with its own timeout).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Literal

from pydantic import BaseModel, Field

from voiceserver.agent import Agent, ToolContext, create_tool, tool

_FORECASTS = {"london": ("light rain", 14), "paris": ("sunny", 21), "tokyo": ("cloudy", 18)}


# 1. create_tool: an explicit input schema (a pydantic model) and an async execute(input, ctx).
class WeatherInput(BaseModel):
    city: str = Field(description="The city name, for example 'London'.")


async def get_weather(input: WeatherInput, ctx: ToolContext) -> dict:
    conditions, temperature = _FORECASTS.get(input.city.strip().lower(), ("clear", 19))
    return {"city": input.city, "conditions": conditions, "temperature_c": temperature}


weather = create_tool(
    id="weather",
    description="Current weather for a city.",
    input_schema=WeatherInput,
    execute=get_weather,
    timeout_s=10,
)


# 2. @tool: the schema comes from the type hints, the description from the docstring.
@tool
def convert_temperature(celsius: float, to: Literal["fahrenheit", "kelvin"] = "fahrenheit") -> dict:
    """Convert a temperature in degrees Celsius.

    Args:
        celsius: The temperature in degrees Celsius.
        to: The unit to convert to.
    """
    value = celsius * 9 / 5 + 32 if to == "fahrenheit" else celsius + 273.15
    return {"value": round(value, 1), "unit": to}


# 3. A risky action: the run stops before it and waits for approve_tool_call / decline_tool_call. It is not cancelled
#    when the caller interrupts (a half-made booking is worse than a finished one); its result is still recorded.
BOOKINGS: list[dict] = []


@tool(require_approval=True, cancel_on_interrupt=False)
async def book_table(restaurant: str, people: int = Field(ge=1, le=20), time: str = "19:00") -> dict:
    """Book a restaurant table.

    Args:
        restaurant: The restaurant name.
        people: How many people.
        time: The time, HH:MM.
    """
    booking = {"restaurant": restaurant, "people": people, "time": time, "reference": f"BK{len(BOOKINGS) + 1:04d}"}
    BOOKINGS.append(booking)
    return booking


# 4. A tool that asks a question itself: ctx.suspend(payload) ends the run with tool-call-suspended; the app asks the
#    user and calls agent.resume_stream(data, run_id=...); execute then runs again from the top with ctx.resume_data.
class CancelAnswer(BaseModel):
    confirmed: bool


@tool(resume_schema=CancelAnswer)
async def cancel_booking(reference: str, ctx: ToolContext) -> dict:
    """Cancel a restaurant booking by its reference.

    Args:
        reference: The booking reference, for example BK0001.
    """
    if ctx.resume_data is None:
        await ctx.suspend({"question": f"Do you really want to cancel booking {reference}?"})
    if not ctx.resume_data.confirmed:
        return {"cancelled": False}
    BOOKINGS[:] = [b for b in BOOKINGS if b["reference"] != reference]
    return {"cancelled": True, "reference": reference}


def build_concierge(model: object = "local/smollm2") -> Agent:
    return Agent(
        name="Concierge",
        instructions="You are a concierge. Use the tools for weather and bookings. Answer in one short sentence.",
        model=model,
        tools=[weather, convert_temperature, book_table, cancel_booking],
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", nargs="?", default="Book a table for two at Luigi's at seven.")
    parser.add_argument("--model", default="local/smollm2")
    args = parser.parse_args()
    agent = build_concierge(args.model)
    result = await agent.generate(args.message)
    while result.finish_reason == "suspended":
        waiting = result.pending[0]
        if waiting.kind == "approval":
            answer = await asyncio.to_thread(input, f"Allow {waiting.tool_name}({waiting.args})? [y/N] ")
            if answer.strip().lower() == "y":
                stream = await agent.approve_tool_call(run_id=result.run_id, tool_call_id=waiting.tool_call_id)
            else:
                stream = await agent.decline_tool_call(run_id=result.run_id, tool_call_id=waiting.tool_call_id,
                                                       reason="the user said no")
        else:
            answer = await asyncio.to_thread(input, f"{waiting.suspend_payload.get('question')} [y/N] ")
            stream = await agent.resume_stream({"confirmed": answer.strip().lower() == "y"}, run_id=result.run_id)
        result = await stream.result()
    print(result.text)


if __name__ == "__main__":
    asyncio.run(main())
