"""Cancellation: abort chunk, heard text remembered, cancellable tools cancelled, others finish once, no leaks."""

from __future__ import annotations

import asyncio

import pytest
from test_agent_support import FakeMemory

from voiceserver.agent import Agent, AgentError, create_tool
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

MEM = {"resource": "user-1", "thread": "t1"}
LONG = "Hello there. I can help you with that today, let me explain every single detail at length."


def agent_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith(("agent-run", "tool-"))]


def slow_text_model() -> ScriptedChatModel:
    return ScriptedChatModel([Reply(text=LONG, chunk_delay_s=0.02)])



async def cancel_consumer_after_first_text(stream) -> None:
    """Read the stream in a task, and cancel that task once the first text arrived (the session's barge-in)."""
    got_text = asyncio.Event()

    async def consume():
        async for chunk in stream:
            if chunk.type == "text-delta":
                got_text.set()

    consumer = asyncio.create_task(consume())
    await got_text.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

async def test_cancel_mid_reply_emits_abort_and_remembers_exactly_what_was_heard():
    memory = FakeMemory()
    model = slow_text_model()
    agent = Agent(name="A", model=model, memory=memory)
    stream = agent.stream("Can you help?", memory=MEM)
    deltas = 0
    types = []
    async for chunk in stream:
        types.append(chunk.type)
        if chunk.type == "text-delta":
            deltas += 1
            if deltas == 2:
                result = await stream.cancel(heard_text="Hello there.")
    assert types[-1] == "abort" and "finish" not in types
    assert stream.chunks[-1].payload == {"reason": "cancelled", "heard_text": "Hello there."}
    assert result.finish_reason == "aborted" and (await stream.result()).finish_reason == "aborted"
    assert model.cancelled == 1
    saved = [(m["role"], m["content"], m["metadata"]) for m in memory.thread("t1")]
    assert saved == [("user", "Can you help?", {}), ("assistant", "Hello there.", {"interrupted": True})]
    assert agent_tasks() == []


async def test_cancel_without_heard_text_keeps_only_the_user_message():
    memory = FakeMemory()
    agent = Agent(name="A", model=slow_text_model(), memory=memory)
    stream = agent.stream("Can you help?", memory=MEM)
    async for chunk in stream:
        if chunk.type == "text-delta":
            await stream.cancel()
    assert [m["role"] for m in memory.thread("t1")] == ["user"]


async def test_cancelling_the_iterating_task_stops_everything():
    model = slow_text_model()
    agent = Agent(name="A", model=model)
    stream = agent.stream("Talk")
    await cancel_consumer_after_first_text(stream)
    result = await stream.result()
    assert result.finish_reason == "aborted" and model.cancelled == 1
    assert stream.chunks[-1].type == "abort"
    assert agent_tasks() == []


async def test_cancelling_generate_cancels_the_run():
    model = slow_text_model()
    agent = Agent(name="A", model=model)
    task = asyncio.create_task(agent.generate("Talk"))
    while model.calls == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the run task handles its cancellation on its own schedule
        if not agent_tasks():
            break
        await asyncio.sleep(0.01)
    assert agent_tasks() == [] and model.cancelled == 1


async def test_session_order_cancel_the_task_first_then_report_what_was_heard():
    memory = FakeMemory()
    agent = Agent(name="A", model=slow_text_model(), memory=memory)
    stream = agent.stream("Can you help?", memory=MEM)
    await cancel_consumer_after_first_text(stream)
    result = await stream.cancel(heard_text="Hello")
    assert result.finish_reason == "aborted"
    saved = [(m["role"], m["content"], m["metadata"]) for m in memory.thread("t1")]
    assert saved == [("user", "Can you help?", {}), ("assistant", "Hello", {"interrupted": True})]


async def test_cancel_after_the_run_finished_corrects_the_remembered_reply():
    memory = FakeMemory()
    agent = Agent(name="A", model=ScriptedChatModel([LONG]), memory=memory)
    stream = agent.stream("Can you help?", memory=MEM)
    result = await stream.result()
    assert result.finish_reason == "stop" and memory.thread("t1")[-1]["content"] == LONG
    again = await stream.cancel(heard_text="Hello there. I can")  # the caller barged in during playback
    assert again.finish_reason == "stop"
    saved = [(m["role"], m["content"], m["metadata"]) for m in memory.thread("t1")]
    assert saved == [("user", "Can you help?", {}), ("assistant", "Hello there. I can", {"interrupted": True})]
    await stream.cancel(heard_text="Hello there. I can")  # idempotent
    assert len(memory.thread("t1")) == 2


async def test_cancel_before_the_run_task_ever_ran():
    memory = FakeMemory()
    model = ScriptedChatModel(["never"])
    agent = Agent(name="A", model=model, memory=memory)
    stream = agent.stream("Hi", memory=MEM)
    result = await stream.cancel()
    assert result.finish_reason == "aborted" and model.calls == 0
    assert [m["content"] for m in memory.thread("t1")] == ["Hi"]


async def test_cancel_cancels_a_cancellable_tool():
    started, was_cancelled = asyncio.Event(), []

    async def slow_lookup(input, ctx):
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            was_cancelled.append(True)
            raise

    memory = FakeMemory()
    model = ScriptedChatModel([Reply(tool_calls=[("lookup", {})]), "never"])
    agent = Agent(name="A", model=model, memory=memory,
                  tools={"lookup": create_tool(id="lookup", description="Slow.", execute=slow_lookup)})
    stream = agent.stream("Look it up", memory=MEM)
    await started.wait()
    result = await stream.cancel(heard_text=None)
    assert was_cancelled == [True] and result.finish_reason == "aborted" and model.calls == 1
    assert result.tool_results[0].is_error and "cancelled" in result.tool_results[0].result
    assert [m["type"] for m in memory.thread("t1")] == ["text", "tool-call", "tool-result"]
    assert agent_tasks() == []


async def test_a_non_cancellable_tool_finishes_once_in_the_background_and_is_recorded():
    started, release, runs = asyncio.Event(), asyncio.Event(), []

    async def book(input, ctx):
        started.set()
        await release.wait()
        runs.append(ctx.tool_call_id)
        return {"reference": "BK1"}

    memory = FakeMemory()
    model = ScriptedChatModel([Reply(tool_calls=[("book", {})]), "never"])
    tool = create_tool(id="book", description="Book.", execute=book, require_approval=True, cancel_on_interrupt=False)
    agent = Agent(name="A", model=model, memory=memory, tools={"book": tool})
    suspended = await agent.generate("Book it", memory=MEM)
    stream = await agent.approve_tool_call(run_id=suspended.run_id)
    await started.wait()
    result = await stream.cancel(heard_text="Booking")
    assert result.finish_reason == "aborted" and runs == []  # the abort did not wait for the tool
    release.set()
    await agent.flush()
    assert len(runs) == 1
    record = await agent.storage.load_run("agent", suspended.run_id)
    assert record.status == "aborted"
    assert record.snapshot["outcomes"][runs[0]] == {"status": "ok", "value": {"reference": "BK1"},
                                                     "suspend_payload": None}
    tool_messages = [m for m in memory.thread("t1") if m["type"] == "tool-result"]
    assert len(tool_messages) == 1 and tool_messages[0]["metadata"]["completed_after_interrupt"] is True
    assert [m["type"] for m in memory.thread("t1")][-2:] == ["tool-call", "tool-result"]
    with pytest.raises(AgentError) as info:
        await agent.approve_tool_call(run_id=suspended.run_id)
    assert info.value.code == "run_not_suspended"
    assert len(runs) == 1 and model.calls == 1
