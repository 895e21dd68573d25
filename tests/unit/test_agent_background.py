"""Background work never delays a live turn: memory's after_turn (working-memory extraction) runs off the reply
path, the next turn does not wait for it, and turns that finish meanwhile are merged into one later call.

Asserted on the order of events and on what the model saw, never on time: the extraction is held on a gate that
the test opens only after the next turn has streamed."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_agent_support import FakeMemory

from voiceserver.agent import Agent
from voiceserver.agent.background import BackgroundWork
from voiceserver.llm.base import ChatMessage, ChatRequest
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

MEM = {"resource": "user-1", "thread": "t1"}
TIMEOUT_S = 10  # only so that a regression fails instead of hanging; nothing is timed


class GatedExtractionModel(ScriptedChatModel):
    """Live replies play back at once; a structured-output request (the extraction) waits for ``gate``."""

    def __init__(self, replies: list[str]):
        super().__init__([Reply(respond=self._answer)])
        self.replies = list(replies)
        self.gate = asyncio.Event()
        self.order: list[str] = []

    def _answer(self, request: ChatRequest) -> str:
        return json.dumps({"name": "Ada"}) if request.response_schema else self.replies.pop(0)

    async def _stream(self, request):
        kind = "extraction" if request.response_schema else "live"
        self.order.append(f"{kind}-start")
        if kind == "extraction":
            await self.gate.wait()
        async for chunk in super()._stream(request):
            yield chunk
        self.order.append(f"{kind}-end")


class ExtractingMemory(FakeMemory):
    """after_turn does what Memory's extraction does: one structured-output model call per call."""

    async def after_turn(self, *, resource_id, thread_id, messages, model):
        said = " ".join(m["content"] for m in messages if m["role"] == "user")
        request = ChatRequest(messages=[ChatMessage("user", said)], response_schema={"type": "object"})
        await model.complete(request)
        await super().after_turn(resource_id=resource_id, thread_id=thread_id, messages=messages, model=model)


async def test_a_slow_extraction_does_not_delay_the_next_turns_first_token():
    memory = ExtractingMemory()
    model = GatedExtractionModel(["Nice to meet you, Ada.", "Your name is Ada."])
    agent = Agent(name="A", model=model, memory=memory)
    await agent.generate("My name is Ada.", memory=MEM)
    for _ in range(5):
        await asyncio.sleep(0)
    assert model.order == ["live-start", "live-end", "extraction-start"]  # the extraction is running, held
    stream = agent.stream("What is my name?", memory=MEM)
    first = await asyncio.wait_for(anext(c async for c in stream if c.type == "text-delta"), TIMEOUT_S)
    assert first.payload["text"] == "Your "
    # The second turn's model call started and finished while the first turn's extraction was still held.
    assert model.order == ["live-start", "live-end", "extraction-start", "live-start", "live-end"]
    assert memory.after_turn_calls == []
    model.gate.set()
    await asyncio.wait_for(agent.flush(), TIMEOUT_S)
    assert model.order.count("extraction-end") == 2 and len(memory.after_turn_calls) == 2


async def test_turns_that_finish_while_after_turn_runs_are_merged_into_one_call():
    gate = asyncio.Event()

    class SlowAfterTurn(FakeMemory):
        async def after_turn(self, **kwargs):
            await gate.wait()
            await super().after_turn(**kwargs)

    memory = SlowAfterTurn()
    model = ScriptedChatModel(["First.", "Second.", "Third."])
    agent = Agent(name="A", model=model, memory=memory)
    for text in ("one", "two", "three"):  # each turn ends while the first after_turn still waits
        await asyncio.wait_for(agent.generate(text, memory=MEM), TIMEOUT_S)
    assert len(memory.prepare_calls) == 3 and memory.after_turn_calls == []
    gate.set()
    await asyncio.wait_for(agent.flush(), TIMEOUT_S)
    ids = [m["id"] for m in memory.thread("t1")]
    assert [c["messages"] for c in memory.after_turn_calls] == [ids[:2], ids[2:]]  # turn 1; turns 2 and 3 merged
    assert memory.after_turn_calls[1]["model"] is model


async def test_background_work_runs_one_call_per_key_at_a_time_and_bounds_what_it_merges():
    work = BackgroundWork(max_pending_messages=3)
    gate = asyncio.Event()
    calls: list[tuple[str, list[int]]] = []

    def runner(name: str):
        async def run(messages: list[int]) -> None:
            calls.append((name, list(messages)))
            if name == "a1":
                await gate.wait()
        return run

    work.after_turn("a", [1], runner("a1"))
    await asyncio.sleep(0)
    work.after_turn("a", [2, 3], runner("a2"))
    work.after_turn("a", [4, 5], runner("a3"))
    work.after_turn("b", [9], runner("b1"))  # another thread is not held up by "a"
    await asyncio.sleep(0)
    assert calls == [("a1", [1]), ("b1", [9])] and work.busy("a") and not work.busy("b")
    gate.set()
    await work.flush()
    assert calls[-1] == ("a3", [3, 4, 5]) and work.coalesced == 1 and not work.busy("a")


async def test_a_failing_after_turn_is_logged_and_the_next_one_still_runs():
    work = BackgroundWork()
    seen: list[int] = []

    async def failing(messages):
        raise RuntimeError("boom")

    async def ok(messages):
        seen.extend(messages)

    work.after_turn("k", [1], failing)
    work.after_turn("k", [2], ok)
    await work.flush()
    assert seen == [2]


async def test_a_preempted_background_call_waits_for_live_work_and_is_tried_again():
    from voiceserver.engines import ProviderError
    from voiceserver.memory.turns import BACKGROUND_ATTEMPTS, background_request, complete_in_background

    preempted = ProviderError("llm_preempted", "a live call needs this context")
    model = ScriptedChatModel([Reply(error=preempted), Reply(text='{"ok": true}')], cycle=False)
    model.live_activity.begin()  # a live turn is running: the retry waits for it to end
    request = background_request(messages=[ChatMessage("user", "x")], response_schema={"type": "object"})
    task = asyncio.create_task(complete_in_background(model, request))
    for _ in range(10):
        await asyncio.sleep(0)
    assert model.calls == 1 and not task.done()  # preempted once, now waiting for the live work
    model.live_activity.end()
    result = await asyncio.wait_for(task, TIMEOUT_S)
    assert result.text == '{"ok": true}' and model.calls == 2 and request.priority == "background"
    failing = ScriptedChatModel([Reply(error=preempted)])
    with pytest.raises(ProviderError) as info:
        await complete_in_background(failing, request)
    assert info.value.code == "llm_preempted" and failing.calls == BACKGROUND_ATTEMPTS
    other = ScriptedChatModel([Reply(error=ProviderError("llm_failed", "boom"))])
    with pytest.raises(ProviderError):
        await complete_in_background(other, request)
    assert other.calls == 1  # other errors are not retried
