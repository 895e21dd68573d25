"""Tool approval and suspension: approve, decline, self-suspend and resume, from another Agent object, exactly once."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from voiceserver.agent import Agent, AgentError, ToolContext, create_tool, tool
from voiceserver.runs.store import InMemoryRunStore
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel


class Booking(BaseModel):
    restaurant: str
    people: int


def booking_tool(executed: list, *, require_approval: bool = True):
    async def book(input: Booking, ctx: ToolContext) -> dict:
        executed.append(input)
        return {"reference": f"BK{len(executed)}"}

    return create_tool(id="book", description="Book a table.", input_schema=Booking, execute=book,
                       require_approval=require_approval)


def booking_agent(model, executed: list, storage=None, **kwargs) -> Agent:
    return Agent(name="Concierge", instructions="Book tables.", model=model,
                 tools={"book": booking_tool(executed)}, storage=storage, **kwargs)


BOOK = Reply(tool_calls=[("book", {"restaurant": "Luigi", "people": 2})])


async def test_approval_suspends_then_approve_runs_the_tool_and_continues():
    executed: list = []
    model = ScriptedChatModel([Reply(text="Let me book that. ", tool_calls=BOOK.tool_calls), "Booked, BK1."])
    agent = booking_agent(model, executed)
    stream = agent.stream("Table for two at Luigi's")
    chunks = [c async for c in stream]
    result = await stream.result()
    assert result.finish_reason == "suspended" and executed == []
    approval = [c for c in chunks if c.type == "tool-call-approval"]
    assert len(approval) == 1
    assert approval[0].payload == {"tool_call_id": result.pending[0].tool_call_id, "tool_name": "book",
                                   "args": {"restaurant": "Luigi", "people": 2}}
    assert chunks[-1].type == "finish" and chunks[-1].payload["finish_reason"] == "suspended"
    assert result.text == "Let me book that. "
    record = await agent.storage.load_run("agent", result.run_id)
    assert record.status == "suspended" and json.loads(json.dumps(record.snapshot)) == record.snapshot

    follow = await agent.approve_tool_call(run_id=result.run_id, tool_call_id=result.pending[0].tool_call_id)
    types = [c.type async for c in follow]
    final = await follow.result()
    assert executed == [Booking(restaurant="Luigi", people=2)]
    assert types[0] == "start" and follow.chunks[0].payload["resumed"] is True
    assert types.index("tool-result") < types.index("text-delta") and types[-1] == "finish"
    assert final.finish_reason == "stop" and final.run_id == result.run_id
    assert final.text == "Let me book that. Booked, BK1."
    assert final.tool_results[0].result == {"reference": "BK1"}
    assert model.requests[-1].messages[-1].role == "tool"
    assert (await agent.storage.load_run("agent", result.run_id)).status == "finished"


async def test_require_tool_approval_option_covers_every_tool():
    executed: list = []

    async def lookup(input, ctx):
        executed.append("lookup")
        return "ok"

    model = ScriptedChatModel([Reply(tool_calls=[("lookup", {})]), "done"])
    agent = Agent(name="A", model=model, tools={"lookup": create_tool(id="lookup", description="L.", execute=lookup)})
    result = await agent.generate("x", require_tool_approval=True)
    assert result.finish_reason == "suspended" and executed == []
    final = await (await agent.approve_tool_call(run_id=result.run_id)).result()  # the only waiting call
    assert executed == ["lookup"] and final.text == "done"


async def test_decline_tells_the_model_and_never_runs_the_tool():
    executed: list = []
    model = ScriptedChatModel([BOOK, "Okay, I did not book it."])
    agent = booking_agent(model, executed)
    result = await agent.generate("Book Luigi's")
    follow = await agent.decline_tool_call(run_id=result.run_id, tool_call_id=result.pending[0].tool_call_id,
                                           reason="too expensive")
    chunks = [c async for c in follow]
    final = await follow.result()
    denied = [c for c in chunks if c.type == "tool-output-denied"]
    assert len(denied) == 1 and denied[0].payload["reason"] == "too expensive"
    assert executed == [] and final.text == "Okay, I did not book it."
    tool_message = model.requests[-1].messages[-1]
    assert tool_message.role == "tool" and "declined" in tool_message.content
    assert "too expensive" in tool_message.content
    assert final.tool_results == []


async def test_a_tool_suspends_itself_and_resume_runs_it_again_with_resume_data():
    runs: list = []

    class Answer(BaseModel):
        confirmed: bool

    @tool(resume_schema=Answer)
    async def cancel_booking(reference: str, ctx: ToolContext) -> dict:
        """Cancel a booking."""
        runs.append(ctx.resume_data)
        if ctx.resume_data is None:
            await ctx.suspend({"question": f"Cancel {reference}?"})
        return {"cancelled": ctx.resume_data.confirmed}

    model = ScriptedChatModel([Reply(tool_calls=[("cancel_booking", {"reference": "BK7"})]), "Cancelled."])
    agent = Agent(name="A", model=model, tools=[cancel_booking])
    stream = agent.stream("Cancel BK7")
    chunks = [c async for c in stream]
    result = await stream.result()
    suspended = [c for c in chunks if c.type == "tool-call-suspended"]
    assert result.finish_reason == "suspended" and result.suspend_payload == {"question": "Cancel BK7?"}
    assert suspended[0].payload["suspend_payload"] == {"question": "Cancel BK7?"}

    with pytest.raises(AgentError) as info:
        await agent.resume_stream({"confirmed": "maybe"}, run_id=result.run_id)
    assert info.value.code == "invalid_resume_data" and "confirmed" in info.value.message
    with pytest.raises(AgentError) as info:
        await agent.approve_tool_call(run_id=result.run_id)
    assert info.value.code == "not_awaiting_approval"

    final = await (await agent.resume_stream({"confirmed": True}, run_id=result.run_id)).result()
    assert runs == [None, Answer(confirmed=True)]
    assert final.text == "Cancelled." and final.tool_results[0].result == {"cancelled": True}


async def test_a_new_agent_object_with_the_same_storage_continues_the_run():
    store = InMemoryRunStore()
    executed: list = []
    first = booking_agent(ScriptedChatModel([BOOK]), executed, storage=store)
    result = await first.generate("Book Luigi's")
    assert result.finish_reason == "suspended"
    del first

    model = ScriptedChatModel(["Booked."])
    second = booking_agent(model, executed, storage=store)
    final = await (await second.approve_tool_call(run_id=result.run_id)).result()
    assert final.text == "Booked." and len(executed) == 1
    # The new object's model got the whole conversation from the snapshot.
    assert [m.role for m in model.requests[0].messages] == ["system", "user", "assistant", "tool"]

    other = Agent(name="Someone Else", model=model, storage=store)
    with pytest.raises(AgentError) as info:
        await other.approve_tool_call(run_id=result.run_id)
    assert info.value.code == "run_not_owned"


async def test_a_run_is_approved_at_most_once_even_concurrently():
    executed: list = []
    agent = booking_agent(ScriptedChatModel([BOOK, "Booked."]), executed)
    result = await agent.generate("Book")
    outcomes = await asyncio.gather(agent.approve_tool_call(run_id=result.run_id),
                                    agent.approve_tool_call(run_id=result.run_id), return_exceptions=True)
    streams = [o for o in outcomes if not isinstance(o, BaseException)]
    errors = [o for o in outcomes if isinstance(o, AgentError)]
    assert len(streams) == 1 and len(errors) == 1 and errors[0].code == "run_not_suspended"
    await streams[0].result()
    with pytest.raises(AgentError) as info:
        await agent.approve_tool_call(run_id=result.run_id)
    assert info.value.code == "run_not_suspended"
    assert len(executed) == 1


async def test_continuation_errors_are_clear():
    executed: list = []
    agent = booking_agent(ScriptedChatModel([BOOK]), executed)
    with pytest.raises(AgentError) as info:
        await agent.approve_tool_call(run_id="run_missing")
    assert info.value.code == "run_not_found"
    with pytest.raises(ValueError):
        await agent.approve_tool_call(run_id="x' OR '1'='1")
    result = await agent.generate("Book")
    with pytest.raises(AgentError) as info:
        await agent.approve_tool_call(run_id=result.run_id, tool_call_id="call_other")
    assert info.value.code == "unknown_tool_call"
    with pytest.raises(AgentError) as info:
        await agent.resume_stream({}, run_id=result.run_id)
    assert info.value.code == "not_suspended_by_tool"
    assert (await agent.storage.load_run("agent", result.run_id)).status == "suspended"  # errors claim nothing


async def test_two_calls_needing_approval_are_resolved_one_by_one():
    executed: list = []
    model = ScriptedChatModel([Reply(tool_calls=[("book", {"restaurant": "Luigi", "people": 2}),
                                                 ("book", {"restaurant": "Mario", "people": 4})]), "One booked."])
    agent = booking_agent(model, executed)
    result = await agent.generate("Book both")
    first, second = result.pending
    after_first = await agent.approve_tool_call(run_id=result.run_id, tool_call_id=first.tool_call_id)
    chunks = [c async for c in after_first]
    mid = await after_first.result()
    assert mid.finish_reason == "suspended" and [p.tool_call_id for p in mid.pending] == [second.tool_call_id]
    assert [c.payload["tool_call_id"] for c in chunks if c.type == "tool-call-approval"] == [second.tool_call_id]
    assert model.calls == 1  # the model waits until every call of the step is resolved
    final = await (await agent.decline_tool_call(run_id=result.run_id, tool_call_id=second.tool_call_id)).result()
    assert [b.restaurant for b in executed] == ["Luigi"] and final.text == "One booked."
    tool_messages = [m for m in model.requests[-1].messages if m.role == "tool"]
    assert len(tool_messages) == 2 and "declined" in tool_messages[1].content


async def test_calls_without_approval_in_the_same_step_run_once():
    executed: list = []
    looked: list = []

    async def lookup(input, ctx):
        looked.append(1)
        return "open"

    model = ScriptedChatModel([Reply(tool_calls=[("lookup", {}), ("book", {"restaurant": "L", "people": 2})]),
                               "Done."])
    agent = Agent(name="A", model=model, tools={"lookup": create_tool(id="lookup", description="L.", execute=lookup),
                                               "book": booking_tool(executed)})
    result = await agent.generate("x")
    assert looked == [1] and executed == [] and result.finish_reason == "suspended"
    final = await (await agent.approve_tool_call(run_id=result.run_id)).result()
    assert looked == [1] and len(executed) == 1
    assert {r.tool_name for r in final.tool_results} == {"lookup", "book"}


async def test_invalid_arguments_are_not_put_to_approval():
    executed: list = []
    model = ScriptedChatModel([Reply(tool_calls=[("book", {"restaurant": "Luigi"})]), "How many people?"])
    agent = booking_agent(model, executed)
    result = await agent.generate("Book Luigi's")
    assert result.finish_reason == "stop" and result.text == "How many people?"
    assert "people: Field required" in result.tool_results[0].result


async def test_max_steps_holds_across_a_resume():
    executed: list = []
    model = ScriptedChatModel([BOOK, "never asked"])
    agent = booking_agent(model, executed)
    result = await agent.generate("Book", max_steps=1)
    final = await (await agent.approve_tool_call(run_id=result.run_id)).result()
    assert final.finish_reason == "max_steps" and model.calls == 1 and len(executed) == 1


class Summary(BaseModel):
    booked: bool


async def test_structured_output_survives_the_suspension_by_import_path():
    store = InMemoryRunStore()
    executed: list = []
    first = booking_agent(ScriptedChatModel([BOOK]), executed, storage=store)
    result = await first.generate("Book", structured_output={"schema": Summary})
    saved = (await store.load_run("agent", result.run_id)).snapshot["options"]["structured_output"]
    assert saved["schema_path"] == f"{Summary.__module__}:Summary"
    second = booking_agent(ScriptedChatModel(['{"booked": true}']), executed, storage=store)
    final = await (await second.approve_tool_call(run_id=result.run_id)).result()
    assert final.object == Summary(booked=True)
