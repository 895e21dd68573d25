"""Memory.prepare and semantic recall with WordLlama on real LanceDB: the colour test, neighbours, scopes,
threshold, processors, and the MemoryContext the agent consumes."""

from __future__ import annotations

import pytest

from voiceserver.memory import LanceDBStore, Memory, Message, TokenLimiter, ToolCallFilter

FILLER = ["The train leaves at nine tomorrow.", "Please book a table for two.", "My brother plays football.",
          "The meeting moved to Thursday.", "I had pasta for lunch.", "The printer is out of paper."]


def make(tmp_path, models_dir, **options) -> Memory:
    base = {"last_messages": 2, "semantic_recall": {"top_k": 1, "message_range": 1, "scope": "resource"}}
    base.update(options)
    return Memory(LanceDBStore(tmp_path / "mem"), embedder="wordllama", models_dir=models_dir, options=base)


async def seed(memory: Memory, thread: str = "old-call", resource: str = "caller-1") -> None:
    messages = [Message("user", t, thread, resource) for t in FILLER[:3]]
    messages += [Message("user", "My favorite color is blue.", thread, resource),
                 Message("assistant", "Blue, got it.", thread, resource)]
    messages += [Message("user", t, thread, resource) for t in FILLER[3:]]
    await memory.save_messages(messages)


async def test_recall_finds_favourite_colour_across_threads(tmp_path, models_dir):
    memory = make(tmp_path, models_dir)
    await seed(memory)
    await memory.save_messages([Message("user", "My favorite color is green.", "x", "caller-2")])  # another caller
    context = await memory.prepare(resource_id="caller-1", thread_id="new-call", query="what colour do I like")
    contents = [m.content for m in context.recalled]
    assert "My favorite color is blue." in contents
    # message_range=1: the neighbours before and after, in order.
    assert contents == ["My brother plays football.", "My favorite color is blue.", "Blue, got it."]
    assert all(m.resource_id == "caller-1" for m in context.recalled)
    assert context.history == []
    # Recall is not folded into the system message (that is working memory only): the agent lays it out last.
    assert context.system_message is None
    assert context.working_memory is None and context.working_memory_tool is None
    await memory.close()


async def test_thread_scope_only_searches_the_thread(tmp_path, models_dir):
    memory = make(tmp_path, models_dir, semantic_recall={"top_k": 2, "message_range": 0, "scope": "thread"})
    await seed(memory)
    await memory.save_messages([Message("user", t, "new-call", "caller-1") for t in FILLER[:4]])
    context = await memory.prepare(resource_id="caller-1", thread_id="new-call", query="what colour do I like")
    assert context.recalled and all(m.thread_id == "new-call" for m in context.recalled)
    assert all("blue" not in m.content for m in context.recalled)
    history_ids = {m.id for m in context.history}
    assert not history_ids & {m.id for m in context.recalled}  # nothing recalled that is already in the history
    await memory.close()


async def test_threshold_filters_weak_hits(tmp_path, models_dir):
    strict = make(tmp_path, models_dir, semantic_recall={"top_k": 3, "message_range": 0, "threshold": 0.99})
    await seed(strict)
    context = await strict.prepare(resource_id="caller-1", thread_id="new", query="what colour do I like")
    assert context.recalled == [] and context.system_message is None
    loose = Memory(strict.storage, embedder="wordllama", models_dir=models_dir,
                   options={"semantic_recall": {"top_k": 3, "message_range": 0, "threshold": 0.3}})
    context = await loose.prepare(resource_id="caller-1", thread_id="new", query="what colour do I like")
    assert "My favorite color is blue." in [m.content for m in context.recalled]
    await strict.close()


async def test_history_is_last_messages_after_processors(tmp_path, models_dir):
    memory = Memory(LanceDBStore(tmp_path / "mem"), embedder=None,
                    options={"last_messages": 4}, processors=[ToolCallFilter(), TokenLimiter(30)])
    call = Message("assistant", "weather(Paris)", "t", "r", type="tool-call",
                   metadata={"tool_call_id": "c", "tool_name": "weather", "args": {}})
    result = Message("tool", "sunny", "t", "r", type="tool-result",
                     metadata={"tool_call_id": "c", "tool_name": "weather", "result": "sunny"})
    await memory.save_messages([Message("user", "one " * 5, "t", "r"), Message("user", "two " * 20, "t", "r"),
                                call, result, Message("assistant", "It is sunny in Paris.", "t", "r")])
    context = await memory.prepare(resource_id="r", thread_id="t", query="weather")
    # Last 4 = [two..., call, result, answer]; the filter drops the tool messages; the limiter keeps what fits
    # in 30 estimated tokens (the 80-character message costs 24, the answer 10).
    assert [m.content for m in context.history] == ["It is sunny in Paris."]
    assert context.recalled == []  # no embedder: no semantic recall
    await memory.close()


async def test_prepare_creates_the_thread_and_is_empty_at_first(tmp_path, models_dir):
    memory = make(tmp_path, models_dir)
    context = await memory.prepare(resource_id="caller-9", thread_id="first-call", query="hello")
    assert context.history == [] and context.recalled == [] and context.system_message is None
    thread = await memory.get_thread_by_id("first-call")
    assert thread is not None and thread.resource_id == "caller-9"
    await memory.close()


async def test_prepare_rejects_hostile_ids_before_touching_storage(tmp_path, models_dir):
    memory = make(tmp_path, models_dir)
    for resource, thread in [("x' OR '1'='1", "t"), ("r", "../../etc"), ("", "t"), ("r", "a" * 10_000),
                             (b"\xff\xfe", "t")]:
        with pytest.raises(ValueError, match="invalid"):
            await memory.prepare(resource_id=resource, thread_id=thread, query="q")  # type: ignore[arg-type]
    assert (await memory.list_threads("r")).total == 0
    await memory.close()


async def test_the_same_question_from_two_earlier_calls_is_recalled_once(tmp_path, models_dir):
    memory = make(tmp_path, models_dir, semantic_recall={"top_k": 2, "message_range": 0, "scope": "resource"})
    for call, answer in (("call-1", "Paris."), ("call-2", "It is Paris.")):
        await memory.save_messages([Message("user", "What is the capital of France?", call, "caller-1"),
                                    Message("assistant", answer, call, "caller-1")])
    context = await memory.prepare(resource_id="caller-1", thread_id="call-3", query="What is the capital of France?")
    contents = [m.content for m in context.recalled]
    assert contents.count("What is the capital of France?") == 1
    assert len(contents) == 2  # the second of top_k is the next-best hit, not the copy
    await memory.close()


async def test_exchange_recall_brings_each_hit_with_the_other_half_of_its_exchange(tmp_path, models_dir):
    memory = make(tmp_path, models_dir, semantic_recall={"top_k": 1, "exchange": True, "scope": "resource"})
    await seed(memory)  # ... "My brother plays football.", "My favorite color is blue.", "Blue, got it.", ...
    by_question = await memory.prepare(resource_id="caller-1", thread_id="new", query="my favorite color is blue")
    assert [m.content for m in by_question.recalled] == ["My favorite color is blue.", "Blue, got it."]
    by_reply = await memory.prepare(resource_id="caller-1", thread_id="new2", query="Blue, got it.")
    assert [m.content for m in by_reply.recalled] == ["My favorite color is blue.", "Blue, got it."]
    with pytest.raises(Exception, match="exchange"):
        make(tmp_path, models_dir, semantic_recall={"exchange": "yes"})
    await memory.close()
