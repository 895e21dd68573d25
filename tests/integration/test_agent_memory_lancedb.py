"""The agent with the real Memory on LanceDB in a temp directory: turns, tool messages, working memory, approval
runs kept in LanceDB (continued by a new Agent object and a new Memory), and heard-text corrections."""

from __future__ import annotations

import pytest

from voiceserver.agent import Agent, create_tool
from voiceserver.memory import LanceDBStore, Memory
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

MEM = {"resource": "caller-1", "thread": "call-1"}


def make_memory(path, **options) -> Memory:
    opts = {"last_messages": 20, "working_memory": {"enabled": True, "scope": "resource",
                                                    "template": "# User\n- Name:\n"}}
    opts.update(options)
    return Memory(storage=LanceDBStore(uri=path / "memory"), embedder=None, options=opts)


@pytest.fixture
async def memory(tmp_path):
    m = make_memory(tmp_path)
    await m.open()
    yield m
    await m.close()


async def thread_messages(memory: Memory, thread: str = "call-1") -> list:
    return (await memory.recall(thread, resource_id="caller-1")).messages


async def test_turns_with_tools_round_trip_through_lancedb(memory):
    async def weather(input, ctx):
        return {"temperature_c": 18}

    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"city": "Oslo"})]), "It is 18 degrees.",
                               "You asked about Oslo."])
    agent = Agent(name="A", instructions="Be brief.", model=model, memory=memory,
                  tools={"weather": create_tool(id="weather", description="Weather.", execute=weather)})
    await agent.generate("Weather in Oslo?", memory=MEM)
    await agent.generate("Which city did I ask about?", memory=MEM)
    await agent.flush()
    saved = await thread_messages(memory)
    assert [(m.role, m.type) for m in saved] == [
        ("user", "text"), ("assistant", "tool-call"), ("tool", "tool-result"), ("assistant", "text"),
        ("user", "text"), ("assistant", "text")]
    assert saved[1].metadata["args"] == {"city": "Oslo"} and saved[2].metadata["result"] == {"temperature_c": 18}
    second = model.requests[2].messages
    assert [m.role for m in second][:1] == ["system"]
    assert [m.role for m in second if m.role != "system"] == ["user", "assistant", "tool", "assistant", "user"]
    call = next(m for m in second if m.tool_calls)
    assert call.tool_calls[0].arguments == {"city": "Oslo"}
    assert next(m for m in second if m.role == "tool").tool_call_id == call.tool_calls[0].id


async def test_working_memory_tool_writes_to_lancedb(memory):
    model = ScriptedChatModel([Reply(tool_calls=[("update-working-memory", {"memory": "# User\n- Name: Ada\n"})]),
                               "Nice to meet you, Ada.", "Hello Ada."])
    agent = Agent(name="A", instructions="Be brief.", model=model, memory=memory)
    await agent.generate("My name is Ada.", memory=MEM)
    assert "Ada" in await memory.get_working_memory("call-1", "caller-1")
    await agent.generate("Hi again", memory={"resource": "caller-1", "thread": "call-2"})
    system = "\n".join(m.content for m in model.requests[-1].messages if m.role == "system")
    assert "Name: Ada" in system  # resource-scoped working memory reaches a new thread


async def test_a_suspended_run_lives_in_lancedb_and_a_new_agent_and_memory_continue_it(tmp_path):
    executed = []

    async def book(input, ctx):
        executed.append(ctx.tool_call_id)
        return {"reference": "BK1"}

    def build(memory, model):
        tool = create_tool(id="book", description="Book.", execute=book, require_approval=True)
        return Agent(name="Concierge", model=model, memory=memory, tools={"book": tool})

    first_memory = make_memory(tmp_path)
    await first_memory.open()
    first = build(first_memory, ScriptedChatModel([Reply(tool_calls=[("book", {})])]))
    result = await first.generate("Book a table", memory=MEM)
    assert result.finish_reason == "suspended" and first.storage is first_memory.storage
    await first_memory.close()

    second_memory = make_memory(tmp_path)  # as after a restart: same directory, new objects
    await second_memory.open()
    model = ScriptedChatModel(["Booked, BK1."])
    second = build(second_memory, model)
    runs = await second.list_runs()
    assert [r.run_id for r in runs] == [result.run_id]
    final = await (await second.approve_tool_call(run_id=result.run_id)).result()
    assert final.text == "Booked, BK1." and len(executed) == 1
    assert (await second.storage.load_run("agent", result.run_id)).status == "finished"
    assert [(m.role, m.type) for m in await thread_messages(second_memory)] == [
        ("user", "text"), ("assistant", "tool-call"), ("tool", "tool-result"), ("assistant", "text")]
    await second_memory.close()


async def test_cancel_remembers_only_what_was_heard(memory):
    text = "Hello there. I can help you with that today, let me explain every single detail at length."
    agent = Agent(name="A", model=ScriptedChatModel([Reply(text=text, chunk_delay_s=0.02), text]), memory=memory)
    stream = agent.stream("Can you help?", memory=MEM)
    async for chunk in stream:
        if chunk.type == "text-delta" and "there" in chunk.payload["text"]:
            await stream.cancel(heard_text="Hello there.")
    saved = await thread_messages(memory)
    assert [(m.role, m.content, m.metadata) for m in saved] == [
        ("user", "Can you help?", {}), ("assistant", "Hello there.", {"interrupted": True})]

    # A barge-in while the finished reply is still playing: the saved reply is corrected.
    finished = agent.stream("Go on", memory=MEM)
    assert (await finished.result()).text == text
    await finished.cancel(heard_text="Hello there. I can help")
    saved = await thread_messages(memory)
    assert [(m.role, m.content) for m in saved][-2:] == [("user", "Go on"), ("assistant", "Hello there. I can help")]
    assert saved[-1].metadata == {"interrupted": True}


async def test_extraction_after_the_turn_is_background_work_and_the_next_turn_reads_what_is_known(tmp_path):
    import json

    memory = make_memory(tmp_path, working_memory={"enabled": True, "scope": "resource", "extract": True,
                                                   "template": "# User\n- Name:\n- City:\n"})
    await memory.open()

    def answer(request):
        return json.dumps({"Name": "Ada", "City": ""}) if request.response_schema else "Hello Ada."

    model = ScriptedChatModel([Reply(respond=answer)])
    agent = Agent(name="A", model=model, memory=memory)
    try:
        await agent.generate("My name is Ada.", memory=MEM)
        await agent.flush()
        stream = agent.stream("Who am I?", memory={"resource": "caller-1", "thread": "call-2"})
        context = next(c.payload for c in [c async for c in stream] if c.type == "context")
    finally:
        await memory.close()
    kinds = [(bool(r.response_schema), r.priority) for r in model.requests]
    assert kinds == [(False, "live"), (True, "background"), (False, "live")]
    system = [m.content for m in model.requests[2].messages if m.role == "system"]
    assert system[-1].endswith("- Name: Ada") and "City" not in system[-1]  # what is known, not the template
    assert context["working_memory"] is True


async def test_a_message_the_window_cut_from_the_history_can_still_be_recalled(tmp_path, models_dir):
    memory = Memory(storage=LanceDBStore(uri=tmp_path / "memory"), embedder="wordllama", models_dir=models_dir,
                    options={"last_messages": 10, "semantic_recall": {"top_k": 2, "message_range": 0,
                                                                      "threshold": 0.3, "scope": "resource"}})
    await memory.open()
    model = ScriptedChatModel(["Noted."] + [f"Filler answer {i}." for i in range(10)] + ["Blue."])
    agent = Agent(name="A", model=model, memory=memory)
    try:
        # The fact is said in turn 2: memory's own window (10 messages) still holds it at turn 7, but the prompt's
        # window has been cut back past it by then, so only recall can bring it back.
        questions = ["Tell me about the sea.", "My favourite colour is blue.",
                     *(f"Tell me fact number {i} about the sea." for i in range(4))]
        for question in questions:
            await agent.generate(question, memory=MEM)
        stream = agent.stream("What is my favourite colour?", memory=MEM)
        context = next(c.payload for c in [c async for c in stream] if c.type == "context")
        await stream.result()
    finally:
        await memory.close()
    sent = model.requests[-1].messages
    history = [m.content for m in sent if m.role in ("user", "assistant")]
    assert "My favourite colour is blue." not in history  # the window was cut back past it
    assert context["dropped_history"] > 0
    recall = [m.content for m in sent if m.role == "system" and "Earlier messages" in (m.content or "")]
    assert recall and "My favourite colour is blue." in recall[0] and context["recalled_messages"] >= 1
