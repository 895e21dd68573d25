"""The agent's side of memory: prepare, history, saving (with tool calls), working memory, after_turn, processors.

These use a small fake with the Memory interface (test_agent_support.FakeMemory); the same flows against the real
LanceDB-backed Memory are in tests/integration/test_agent_memory_lancedb.py.
"""

from __future__ import annotations

import pytest
from test_agent_support import FakeMemory

from voiceserver.agent import Agent, Processor, create_tool
from voiceserver.ids import InvalidIdError
from voiceserver.runs.store import InMemoryRunStore
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

MEM = {"resource": "user-1", "thread": "t1"}


async def test_turns_are_saved_and_come_back_as_history():
    memory = FakeMemory()
    model = ScriptedChatModel(["Nice to meet you, Ada.", "Your name is Ada."])
    agent = Agent(name="A", instructions="Be kind.", model=model, memory=memory)
    await agent.generate("My name is Ada.", memory=MEM)
    await agent.generate("What is my name?", memory=MEM)
    assert [(m["role"], m["content"]) for m in memory.thread("t1")] == [
        ("user", "My name is Ada."), ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"), ("assistant", "Your name is Ada.")]
    assert [(m.role, m.content) for m in model.requests[1].messages] == [
        ("system", "Be kind."), ("user", "My name is Ada."), ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?")]
    assert memory.prepare_calls[1] == {"resource_id": "user-1", "thread_id": "t1", "query": "What is my name?"}
    stamps = [m["created_at"] for m in memory.thread("t1")]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert all(m["resource_id"] == "user-1" and m["id"].startswith("msg_") for m in memory.messages)


async def test_memory_is_untouched_without_both_ids():
    memory = FakeMemory()
    agent = Agent(name="A", model=ScriptedChatModel(["ok"]), memory=memory)
    await agent.generate("hi")
    await agent.generate("hi", memory={"resource": "user-1"})
    assert memory.prepare_calls == [] and memory.messages == []
    with pytest.raises(InvalidIdError):
        agent.stream("hi", memory={"resource": "x' OR '1'='1", "thread": "t"})


async def test_prompt_layout_instructions_working_memory_history_then_recall_and_the_new_message():
    memory = FakeMemory()
    memory.working["user-1"] = "- Name: Ada"
    memory.messages.append({"id": "old", "role": "user", "content": "My favourite colour is blue",
                            "type": "text", "thread_id": "t0", "resource_id": "user-1", "metadata": {}})
    model = ScriptedChatModel(["Hello.", "Blue."])
    agent = Agent(name="A", instructions="Be kind.", model=model, memory=memory)
    await agent.generate("Hi there", memory=MEM)
    await agent.generate("Which colour is my favourite?", memory=MEM)
    sent = [(m.role, m.content) for m in model.requests[1].messages]
    # Stable first (instructions, working memory), then the history, then what changes every turn: recall last,
    # just before the new message, so it never rewrites the cached prefix.
    assert sent[:4] == [("system", "Be kind."), ("system", "Working memory:\n- Name: Ada"), ("user", "Hi there"),
                        ("assistant", "Hello.")]
    assert sent[4][0] == "system" and "My favourite colour is blue" in sent[4][1]
    assert sent[5] == ("user", "Which colour is my favourite?") and len(sent) == 6


async def test_tool_calls_are_saved_typed_and_restored_as_tool_messages():
    async def weather(input, ctx):
        return {"temperature_c": 18}

    memory = FakeMemory()
    model = ScriptedChatModel([Reply(tool_calls=[("weather", {"city": "Oslo"})]), "18 degrees.", "Yes."])
    agent = Agent(name="A", model=model, memory=memory,
                  tools={"weather": create_tool(id="weather", description="W.", execute=weather)})
    await agent.generate("Weather in Oslo?", memory=MEM)
    saved = memory.thread("t1")
    assert [(m["role"], m["type"]) for m in saved] == [
        ("user", "text"), ("assistant", "tool-call"), ("tool", "tool-result"), ("assistant", "text")]
    call_id = saved[1]["metadata"]["tool_call_id"]
    assert saved[1]["metadata"] == {"tool_call_id": call_id, "tool_name": "weather", "args": {"city": "Oslo"}}
    assert saved[2]["metadata"] == {"tool_call_id": call_id, "tool_name": "weather", "is_error": False,
                                    "result": {"temperature_c": 18}}
    assert saved[1]["content"] == 'weather({"city": "Oslo"})' and saved[2]["content"] == '{"temperature_c": 18}'
    await agent.generate("Is it warm?", memory=MEM)
    history = model.requests[2].messages
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant", "user"]
    assert history[1].tool_calls[0].id == call_id and history[2].tool_call_id == call_id


async def test_history_cut_between_a_call_and_its_result_is_made_consistent():
    memory = FakeMemory(last_messages=2)  # the window keeps the tool result and the answer, not the call
    model = ScriptedChatModel([Reply(tool_calls=[("t", {})]), "done", "ok"])
    agent = Agent(name="A", model=model, memory=memory,
                  tools={"t": create_tool(id="t", description="T.", execute=lambda i: "r")})
    await agent.generate("go", memory=MEM)
    await agent.generate("again", memory=MEM)
    assert [m.role for m in model.requests[2].messages] == ["assistant", "user"]


async def test_working_memory_tool_updates_memory_and_never_needs_approval():
    memory = FakeMemory(working_memory=True)
    model = ScriptedChatModel([Reply(tool_calls=[("update-working-memory", {"memory": "- Name: Ada"})]),
                               "Noted, Ada."])
    agent = Agent(name="A", model=model, memory=memory)
    result = await agent.generate("I'm Ada", memory=MEM, require_tool_approval=True)
    assert result.finish_reason == "stop" and memory.working["user-1"] == "- Name: Ada"
    assert "update-working-memory" in [t.name for t in model.requests[0].tools]
    await agent.generate("hi")  # without memory ids the tool is not offered
    assert "update-working-memory" not in [t.name for t in model.requests[-1].tools]


async def test_processors_order_and_output_rewrites():
    seen: list = []

    class Recorder(Processor):
        def process_input(self, messages, ctx):
            seen.append([(m.role, m.content) for m in messages])
            return messages

    class Polite(Processor):
        async def process_output(self, text, ctx):
            return text + " Have a nice day."

    memory = FakeMemory(history_filter=lambda history: [m for m in history if m["type"] == "text"])
    memory.messages.append({"id": "x", "role": "tool", "content": "secret", "type": "tool-result", "thread_id": "t1",
                            "resource_id": "user-1", "metadata": {"tool_call_id": "c", "tool_name": "t"}})
    agent = Agent(name="A", instructions="Sys.", model=ScriptedChatModel(["Hello."]), memory=memory,
                  input_processors=[Recorder()], output_processors=[Polite()])
    result = await agent.generate("hi", memory=MEM)
    assert seen == [[("system", "Sys."), ("user", "hi")]]  # memory's processors ran first (no tool message)
    assert result.text == "Hello. Have a nice day."
    assert memory.thread("t1")[-1]["content"] == "Hello. Have a nice day."


async def test_an_output_processor_that_aborts_saves_nothing():
    class Guard(Processor):
        name = "guard"

        def process_output(self, text, ctx):
            if "password" in text:
                self.abort("leaked a password")
            return text

    memory = FakeMemory()
    agent = Agent(name="A", model=ScriptedChatModel(["The password is 1234."]), memory=memory,
                  output_processors=[Guard()])
    stream = agent.stream("What's the password?", memory=MEM)
    chunks = [c async for c in stream]
    result = await stream.result()
    assert result.finish_reason == "tripwire" and result.tripwire_reason == "leaked a password"
    assert [c.type for c in chunks][-2:] == ["tripwire", "finish"]
    assert chunks[-2].payload == {"reason": "leaked a password", "processor": "guard"}
    assert memory.messages == []


async def test_an_input_processor_that_aborts_stops_before_the_model():
    class NoSecrets(Processor):
        def process_input(self, messages, ctx):
            if any("password" in (m.content or "") for m in messages if m.role == "user"):
                self.abort("Please do not share passwords.")
            return messages

    memory = FakeMemory()
    model = ScriptedChatModel(["never"])
    agent = Agent(name="A", model=model, memory=memory, input_processors=[NoSecrets()])
    result = await agent.generate("my password is hunter2", memory=MEM)
    assert result.finish_reason == "tripwire" and model.calls == 0 and memory.messages == []


async def test_a_suspended_turn_saves_the_user_message_then_the_rest_after_approval():
    memory = FakeMemory()
    model = ScriptedChatModel([Reply(tool_calls=[("book", {})]), "Booked."])
    book = create_tool(id="book", description="Book.", execute=lambda i: {"ok": True}, require_approval=True)
    agent = Agent(name="A", model=model, memory=memory, tools={"book": book})
    result = await agent.generate("Book it", memory=MEM)
    assert [m["content"] for m in memory.thread("t1")] == ["Book it"]  # the waiting call is not saved yet
    assert agent.storage is memory.storage  # the memory's RunStore keeps suspended runs
    record = await memory.storage.load_run("agent", result.run_id)
    assert (record.resource_id, record.thread_id) == ("user-1", "t1")
    await (await agent.approve_tool_call(run_id=result.run_id)).result()
    assert [(m["role"], m["type"]) for m in memory.thread("t1")] == [
        ("user", "text"), ("assistant", "tool-call"), ("tool", "tool-result"), ("assistant", "text")]
    stamps = [m["created_at"] for m in memory.thread("t1")]
    assert stamps == sorted(stamps)


async def test_explicit_storage_wins_over_the_memory_store():
    store = InMemoryRunStore()
    agent = Agent(name="A", model=ScriptedChatModel(["x"]), memory=FakeMemory(), storage=store)
    assert agent.storage is store
