"""Network approval and suspension: approve / decline a tool call, a sub-agent's approval, tool and workflow
suspensions resumed with data, and continuing from a new Agent object that shares the storage."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from test_network_run import (
    MEM,
    Booking,
    Brain,
    City,
    FakeMemory,
    collect,
    done,
    network_agent,
    of,
    route,
    types,
    weather_tool,
)

from voiceserver.agent.agent import Agent
from voiceserver.agent.tools import ToolContext, create_tool
from voiceserver.network import (
    NetworkError,
    approve_network_tool_call,
    decline_network_tool_call,
    list_network_runs,
    resume_network,
    run_network,
)
from voiceserver.runs.store import InMemoryRunStore
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.workflows import create_step, create_workflow


class Confirm(BaseModel):
    confirmed: bool


class Day(BaseModel):
    day: str


async def _suspended_on_weather(agent: Agent) -> tuple[list, Any]:
    events, result = await collect(run_network(agent, "Weather in Paris?", memory=MEM))
    assert result.status == "suspended"
    return events, result


# --- a tool that requires approval ---------------------------------------------------------------------------------


async def test_tool_approval_suspends_then_approve_runs_the_tool():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')], [done("Sunny in Paris.")])
    agent = network_agent(brain, tools={"weather": weather_tool(calls, require_approval=True)})
    events, result = await _suspended_on_weather(agent)

    assert calls == []
    assert types(events)[-1] == "tool-execution-approval"
    assert "tool-execution-start" not in types(events)
    approval = of(events, "tool-execution-approval")[0]
    assert approval["tool_name"] == "weather" and approval["args"] == {"city": "Paris"}
    assert result.pending["kind"] == "tool-approval"
    record = await agent.storage.load_run("network", result.run_id)
    assert record.status == "suspended" and record.owner_id == "concierge"
    assert [r.run_id for r in await list_network_runs(agent)] == [result.run_id]

    stream = await approve_network_tool_call(agent, run_id=result.run_id, tool_call_id=approval["tool_call_id"])
    events, final = await collect(stream)
    assert calls == ["Paris"]
    assert types(events)[:2] == ["tool-execution-start", "tool-execution-end"]
    assert of(events, "tool-execution-start")[0]["tool_call_id"] == approval["tool_call_id"]
    assert of(events, "network-execution-event-step-finish")[0]["is_complete"] is True
    assert final.status == "success" and final.result == "Sunny in Paris." and final.iteration == 1
    assert (await agent.storage.load_run("network", result.run_id)).status == "success"
    assert await list_network_runs(agent) == []


async def test_decline_skips_the_tool_and_the_network_goes_on():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')],
                  [done("I could not check the weather: you declined.")])
    agent = network_agent(brain, tools={"weather": weather_tool(calls, require_approval=True)})
    _, result = await _suspended_on_weather(agent)

    stream = await decline_network_tool_call(agent, run_id=result.run_id, reason="no location sharing")
    events, final = await collect(stream)
    assert calls == []
    end = of(events, "tool-execution-end")[0]
    assert end["declined"] is True and end["reason"] == "no location sharing"
    assert "tool-execution-start" not in types(events)
    assert final.status == "success" and final.steps[0]["result"].startswith("The user declined")
    completion_request = brain.requests[-1]
    assert "declined the call of tool 'weather'" in completion_request.messages[-1].content
    assert "no location sharing" in completion_request.messages[-1].content


async def test_require_tool_approval_option_covers_every_tool():
    calls: list[str] = []
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')], [done("ok")])
    agent = network_agent(brain, tools={"weather": weather_tool(calls)})
    _, result = await collect(run_network(agent, "Weather?", memory=MEM, require_tool_approval=True))
    assert result.status == "suspended" and result.pending["kind"] == "tool-approval" and calls == []


async def test_continuing_a_run_checks_what_it_waits_for():
    brain = Brain([route("weather", "tool", '{"city": "Paris"}')], [done("ok")])
    agent = network_agent(brain, tools={"weather": weather_tool([], require_approval=True)})
    _, result = await _suspended_on_weather(agent)

    cases = [
        (resume_network(agent, {"x": 1}, run_id=result.run_id), "not_suspended"),
        (approve_network_tool_call(agent, run_id="net_missing"), "run_not_found"),
        (approve_network_tool_call(agent, run_id=result.run_id, tool_call_id="call_other"), "unknown_tool_call"),
        (approve_network_tool_call(agent, run_id="bad id!"), "invalid_id"),
        (approve_network_tool_call(agent, run_id=result.run_id, temperature=0), "invalid_option"),
    ]
    for call, code in cases:
        with pytest.raises(NetworkError) as info:
            await call
        assert info.value.code == code
    other = Agent(name="Other", model=brain.model(), memory=FakeMemory(), storage=agent.storage)
    with pytest.raises(NetworkError) as info:
        await approve_network_tool_call(other, run_id=result.run_id)
    assert info.value.code == "run_not_owned"

    stream = await approve_network_tool_call(agent, run_id=result.run_id)  # still waiting after the bad calls
    with pytest.raises(NetworkError) as info:
        await approve_network_tool_call(agent, run_id=result.run_id)  # claimed: a second approval is refused
    assert info.value.code == "run_not_suspended"
    assert (await stream.result()).status == "success"


# --- resuming from another object with the same storage -------------------------------------------------------------


async def test_a_new_agent_object_with_the_same_storage_continues_the_run():
    store, memory = InMemoryRunStore(), FakeMemory()
    first_calls: list[str] = []
    first = network_agent(Brain([route("weather", "tool", '{"city": "Paris"}')]), memory=memory, storage=store,
                          tools={"weather": weather_tool(first_calls, require_approval=True)})
    _, result = await _suspended_on_weather(first)
    del first

    calls: list[str] = []
    brain = Brain([], [done("Sunny in Paris.")])
    second = network_agent(brain, memory=memory, storage=store,
                           tools={"weather": weather_tool(calls, require_approval=True)})
    events, final = await collect(await approve_network_tool_call(second, run_id=result.run_id))
    assert calls == ["Paris"] and first_calls == []
    assert brain.asked == ["complete"]  # the decision was persisted: no new routing for the suspended step
    assert final.status == "success" and final.task == "Weather in Paris?" and final.result == "Sunny in Paris."
    assert [m["content"] for m in memory.messages][0] == "Weather in Paris?"
    assert memory.messages[-1]["content"] == "Sunny in Paris."


async def test_a_tool_that_suspends_itself_is_resumed_with_data():
    runs: list[Any] = []

    async def confirm_booking(input: City, ctx: ToolContext) -> dict:
        runs.append(ctx.resume_data)
        if ctx.resume_data is None:
            await ctx.suspend({"prompt": f"Book a table in {input.city}?"})
        return {"booked": ctx.resume_data.confirmed}

    def tool():
        return create_tool(id="reserve", description="Reserves a table.", input_schema=City,
                           resume_schema=Confirm, execute=confirm_booking)

    store, memory = InMemoryRunStore(), FakeMemory()
    first = network_agent(Brain([route("reserve", "tool", '{"city": "Rome"}')]), memory=memory, storage=store,
                          tools={"reserve": tool()})
    events, result = await collect(run_network(first, "Reserve in Rome", memory=MEM))
    assert result.status == "suspended" and result.pending["kind"] == "tool-suspended"
    assert of(events, "tool-execution-suspended")[0]["suspend_payload"] == {"prompt": "Book a table in Rome?"}
    assert "tool-execution-end" not in types(events)

    second = network_agent(Brain([], [done("Booked in Rome.")]), memory=memory, storage=store,
                           tools={"reserve": tool()})
    with pytest.raises(NetworkError) as info:
        await resume_network(second, {"confirmed": "maybe"}, run_id=result.run_id)
    assert info.value.code == "invalid_resume_data" and "confirmed" in info.value.message
    with pytest.raises(NetworkError) as info:
        await approve_network_tool_call(second, run_id=result.run_id)
    assert info.value.code == "not_awaiting_approval"

    events, final = await collect(await resume_network(second, {"confirmed": True}, run_id=result.run_id))
    assert runs == [None, Confirm(confirmed=True)]
    assert of(events, "tool-execution-end")[0]["result"] == {"booked": True}
    assert final.status == "success" and final.result == "Booked in Rome."


# --- a sub-agent that waits for approval -----------------------------------------------------------------------------


async def test_a_sub_agent_tool_approval_surfaces_and_is_approved_through_the_network():
    paid: list[float] = []

    async def pay(input: Any) -> dict:
        paid.append(input["amount"])
        return {"paid": input["amount"]}

    pay_tool = create_tool(id="pay", description="Pays an amount.", require_approval=True, execute=pay,
                           input_schema={"type": "object", "properties": {"amount": {"type": "number"}},
                                         "required": ["amount"]})
    cashier = Agent(name="Cashier", description="Handles payments.", tools={"pay": pay_tool},
                    model=ScriptedChatModel([Reply(tool_calls=[("pay", {"amount": 5})]), Reply(text="Paid 5 euros.")]))
    brain = Brain([route("cashier", "agent", "Pay 5 euros")], [done("Your 5 euros are paid.")])
    agent = network_agent(brain, agents={"cashier": cashier})
    events, result = await collect(run_network(agent, "Pay my 5 euro bill", memory=MEM))

    assert result.status == "suspended" and result.pending["kind"] == "agent" and paid == []
    assert "agent-execution-event-tool-call-approval" in types(events)
    approval = of(events, "agent-execution-approval")[0]
    assert approval["agent_id"] == "cashier" and approval["tool_name"] == "pay" and approval["args"] == {"amount": 5}
    assert types(events)[-1] == "agent-execution-approval"
    assert "agent-execution-end" not in types(events)

    events, final = await collect(await approve_network_tool_call(agent, run_id=result.run_id))
    assert paid == [5]
    inner = [e.type for e in events if e.type.startswith("agent-execution-event-")]
    assert "agent-execution-event-tool-result" in inner
    end = of(events, "agent-execution-end")[0]
    assert end["agent_run_id"] == approval["agent_run_id"] and end["result"] == "Paid 5 euros."
    assert final.status == "success" and final.result == "Your 5 euros are paid."


async def test_a_declined_sub_agent_call_lets_the_sub_agent_answer_without_it():
    paid: list[float] = []

    async def pay(input: Any) -> dict:
        paid.append(input["amount"])
        return {}

    pay_tool = create_tool(id="pay", description="Pays.", require_approval=True, execute=pay,
                           input_schema={"type": "object", "properties": {"amount": {"type": "number"}}})
    cashier = Agent(name="Cashier", description="Payments.", tools={"pay": pay_tool},
                    model=ScriptedChatModel([Reply(tool_calls=[("pay", {"amount": 5})]), Reply(text="Not paid.")]))
    brain = Brain([route("cashier", "agent", "Pay 5")], [done("Nothing was paid.")])
    agent = network_agent(brain, agents={"cashier": cashier})
    _, result = await collect(run_network(agent, "Pay", memory=MEM))
    events, final = await collect(await decline_network_tool_call(agent, run_id=result.run_id, reason="too much"))
    assert paid == []
    assert "agent-execution-event-tool-output-denied" in types(events)
    assert final.status == "success" and final.steps[0]["result"] == "Not paid."


# --- a workflow that suspends ----------------------------------------------------------------------------------------


async def test_a_suspended_workflow_is_resumed_through_the_network():
    async def ask_day(ctx) -> dict:
        if ctx.resume_data is None:
            ctx.suspend({"prompt": "Which day?"})
        return {"confirmation": f"{ctx.input_data.name} on {ctx.resume_data.day}"}

    step = create_step(id="ask-day", input_schema=Booking, output_schema=None, resume_schema=Day, execute=ask_day)
    wf = create_workflow(id="booking", description="Books.", input_schema=Booking).then(step).commit()
    brain = Brain([route("booking", "workflow", '{"name": "Ann", "day": "?"}')], [done("Ann is booked on Friday.")])
    agent = network_agent(brain, workflows={"booking": wf})
    events, result = await collect(run_network(agent, "Book Ann", memory=MEM))

    assert result.status == "suspended" and result.pending["kind"] == "workflow"
    suspended = of(events, "workflow-execution-suspended")[0]
    assert suspended["suspend_payload"] == {"prompt": "Which day?"} and suspended["suspended"] == [["ask-day"]]
    assert "workflow-execution-event-workflow-step-suspended" in types(events)
    with pytest.raises(NetworkError) as info:
        await resume_network(agent, {"when": "friday"}, run_id=result.run_id)
    assert info.value.code in ("invalid_input", "invalid_resume_data") and "day" in info.value.message
    with pytest.raises(NetworkError) as info:
        await approve_network_tool_call(agent, run_id=result.run_id)
    assert info.value.code == "not_awaiting_approval"

    events, final = await collect(await resume_network(agent, {"day": "friday"}, run_id=result.run_id))
    end = of(events, "workflow-execution-end")[0]
    assert end["status"] == "success" and end["result"] == {"confirmation": "Ann on friday"}
    assert end["workflow_run_id"] == suspended["workflow_run_id"]
    assert final.status == "success" and final.result == "Ann is booked on Friday."
