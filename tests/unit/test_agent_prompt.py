"""The prompt of a turn, on values: layout order, the budget's cutting order, recall deduplication, a history window
that keeps its prefix for several turns, and the context chunk an agent run emits."""

from __future__ import annotations

from test_agent_support import FakeMemory

from voiceserver.agent import Agent
from voiceserver.llm.base import ChatMessage
from voiceserver.runs.prompt import (
    HistoryWindows,
    Window,
    estimate_tokens,
    layout_prompt,
    render_recall,
    token_counter,
)
from voiceserver.testing.fake_llm import ScriptedChatModel


def words(text: str) -> int:
    """A counter that is easy to reason about: one token a word."""
    return len(text.split())


def msg(i: int, role: str, text: str | None = None, thread: str = "t1") -> dict:
    return {"id": f"m{i}", "role": role, "content": text or f"{role} says number {i}", "type": "text",
            "thread_id": thread, "metadata": {}}


def exchange(n: int) -> list[dict]:
    """n user/assistant pairs, oldest first: m0 (user), m1 (assistant), ..."""
    return [msg(i, "user" if i % 2 == 0 else "assistant") for i in range(2 * n)]


SYSTEM = [ChatMessage("system", "You are a voice assistant.")]


def test_layout_order_is_system_working_memory_history_recall_then_the_input():
    plan = layout_prompt(system=SYSTEM, working_memory="Name: Ada", history=exchange(2),
                         recalled=[msg(90, "user", "my colour is blue", "t0")],
                         tail=[ChatMessage("user", "What colour?")], budget=0, count=words)
    roles = [(m.role, (m.content or "")[:12]) for m in plan.messages]
    assert roles == [("system", "You are a vo"), ("system", "Name: Ada"), ("user", "user says nu"),
                     ("assistant", "assistant sa"), ("user", "user says nu"), ("assistant", "assistant sa"),
                     ("system", "Earlier mess"), ("user", "What colour?")]
    assert "- user: my colour is blue" in plan.messages[-2].content
    assert plan.report.payload() == {"prompt_tokens": plan.report.prompt_tokens, "budget": 0, "history_messages": 4,
                                     "recalled_messages": 1, "dropped_history": 0, "working_memory": True}


def test_recall_already_in_the_history_is_dropped():
    history = exchange(2)
    plan = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=[history[1]],
                         tail=[ChatMessage("user", "again")], budget=0, count=words)
    assert plan.recall == [] and plan.report.recalled_messages == 0


def test_a_tight_budget_trims_recall_first_then_the_oldest_history():
    history = exchange(6)  # 12 messages of 4 words (+4 overhead) = 96 tokens
    recalled = [msg(90 + i, "user", f"recalled fact number {i} is here", "t0") for i in range(3)]
    tail = [ChatMessage("user", "new question")]
    fixed = sum(words(m.content) + 4 for m in (*SYSTEM, *tail))
    full = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=recalled, tail=tail,
                         budget=0, count=words)
    recall_tokens = full.report.prompt_tokens - fixed - 96
    # Room for all the history and one recalled line less: recall goes first (its oldest line), history stays whole.
    one_less = fixed + 96 + recall_tokens - 6
    plan = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=recalled, tail=tail,
                         budget=one_less, count=words)
    assert plan.report.history_messages == 12 and plan.report.recalled_messages == 2
    assert "number 0" not in plan.recall[0].content and "number 2" in plan.recall[0].content
    assert plan.report.prompt_tokens <= one_less
    # Not even room for the whole history: it is cut back to half of its room, newest kept, from a user message.
    budget = fixed + 60
    plan = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=recalled, tail=tail,
                         budget=budget, count=words)
    kept = [m for m in plan.prefix if m.role != "system"]
    assert plan.report.history_messages == len(kept) == 2 and plan.report.dropped_history == 10
    assert kept[0].role == "user" and kept[-1].content == history[-1]["content"]
    assert plan.window_start == history[-2]["id"]
    assert plan.report.prompt_tokens <= budget
    # What is left after the cut history goes to recall.
    assert plan.report.recalled_messages >= 1
    # The system prompt, working memory and the input are never cut, even over the budget.
    plan = layout_prompt(system=SYSTEM, working_memory="WM", history=history, recalled=recalled, tail=tail,
                         budget=3, count=words)
    assert [m.content for m in plan.messages] == ["You are a voice assistant.", "WM", "new question"]
    assert plan.report.dropped_history == 12 and plan.report.recalled_messages == 0


def test_the_window_keeps_its_start_for_several_turns_and_then_cuts_back_to_half():
    """Memory returns its last 10 messages each turn; the prompt's history must not slide by two every turn."""
    windows = HistoryWindows()
    thread: list[dict] = []
    starts: list[str | None] = []
    prefixes: list[list[str]] = []
    for turn in range(12):
        visible = thread[-10:]  # memory's own window (last_messages=10)
        plan = layout_prompt(system=SYSTEM, working_memory=None, history=visible, recalled=[],
                             tail=[ChatMessage("user", f"question {turn}")], budget=1000, count=words,
                             window=windows.get("t1"))
        windows.set("t1", plan.window)
        starts.append(plan.window_start)
        prefixes.append([m.content for m in plan.prefix])
        thread += [msg(2 * turn, "user"), msg(2 * turn + 1, "assistant")]
    # The start moves rarely (in blocks), not every turn once memory's window is full.
    moves = sum(1 for a, b in zip(starts, starts[1:], strict=False) if a != b)
    assert moves <= 4, starts
    # Between two moves, each prompt's history extends the previous one: the old prefix is a prefix of the new.
    stable = sum(1 for a, b in zip(prefixes, prefixes[1:], strict=False) if b[:len(a)] == a)
    assert stable >= 8, starts
    # Every start is a user message, and never more than memory's window is sent.
    assert all(s is None or int(s[1:]) % 2 == 0 for s in starts)
    assert max(len(p) - 1 for p in prefixes) <= 10


def test_working_memory_learnt_during_a_call_waits_for_the_next_cut_and_the_next_call():
    """Facts extracted during a call are in its history already; showing them at once would rewrite the prefix."""
    windows = HistoryWindows()
    tail = [ChatMessage("user", "q")]
    first = layout_prompt(system=SYSTEM, working_memory=None, history=[], recalled=[], tail=tail, budget=1000,
                          count=words, window=windows.get("t1"))
    windows.set("t1", first.window)
    history = exchange(1)
    second = layout_prompt(system=SYSTEM, working_memory="- Name: Ada", history=history, recalled=[], tail=tail,
                           budget=1000, count=words, window=windows.get("t1"))
    assert [m.content for m in second.prefix[:1]] == ["You are a voice assistant."]
    assert second.report.working_memory is False and second.prefix[1].role == "user"  # the prefix is unchanged
    windows.set("t1", second.window)
    third = layout_prompt(system=SYSTEM, working_memory="- Name: Ada", history=exchange(2), recalled=[], tail=tail,
                          budget=1000, count=words, window=windows.get("t1"))
    assert [m.content for m in third.prefix[:3]] == [m.content for m in second.prefix[:3]]
    # A new call (another thread, no window yet) shows what is known.
    call2 = layout_prompt(system=SYSTEM, working_memory="- Name: Ada", history=[], recalled=[], tail=tail,
                          budget=1000, count=words, window=windows.get("t2"))
    assert call2.prefix[1].content == "- Name: Ada" and call2.window.working_memory == "- Name: Ada"
    # At a cut (memory's window moved past the start) the block is refreshed, since the prefix changes anyway.
    cut = layout_prompt(system=SYSTEM, working_memory="- Name: Ada", history=exchange(6)[2:], recalled=[], tail=tail,
                        budget=1000, count=words, window=Window("m0", None))
    assert cut.prefix[1].content == "- Name: Ada" and cut.window.start != "m0"
    # Without a budget the block is always the current one (the old behaviour).
    plain = layout_prompt(system=SYSTEM, working_memory="- Name: Ada", history=history, recalled=[], tail=tail,
                          budget=0, count=words, window=Window("m0", None))
    assert plain.prefix[1].content == "- Name: Ada"


def test_budget_zero_is_memory_window_as_it_is():
    windows = HistoryWindows()
    windows.set("t1", Window("m4"))
    history = exchange(5)
    plan = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=[],
                         tail=[ChatMessage("user", "q")], budget=0, count=words, window=windows.get("t1"))
    assert plan.report.history_messages == 10 and plan.report.budget == 0


def test_tool_pairs_survive_the_cut_and_tokens_count_the_call_arguments():
    history = [
        {"id": "a", "role": "user", "content": "weather?", "type": "text", "metadata": {}},
        {"id": "b", "role": "assistant", "content": "weather({})", "type": "tool-call",
         "metadata": {"tool_call_id": "c1", "tool_name": "weather", "args": {"city": "Oslo"}}},
        {"id": "c", "role": "tool", "content": "sunny", "type": "tool-result",
         "metadata": {"tool_call_id": "c1", "tool_name": "weather"}},
        {"id": "d", "role": "assistant", "content": "It is sunny.", "type": "text", "metadata": {}},
    ]
    plan = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=[],
                         tail=[ChatMessage("user", "thanks")], budget=0, count=words)
    roles = [m.role for m in plan.prefix]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert plan.prefix[2].tool_calls[0].arguments == {"city": "Oslo"}


def test_recall_rendering_is_short_and_bounded():
    long = msg(1, "user", "word " * 400)
    text = render_recall([msg(0, "user", "My name is Ada."), long,
                          {"id": "t", "role": "tool", "content": "x", "type": "tool-result"}])
    lines = text.split("\n")
    assert lines[1] == "- user: My name is Ada." and len(lines) == 3 and len(lines[2]) <= 510
    assert render_recall([]) is None


def test_history_windows_are_bounded_and_forget_the_least_recently_used():
    windows = HistoryWindows(max_entries=2)
    windows.set("a", Window("1"))
    windows.set("b", Window("2"))
    assert windows.get("a") == Window("1")  # "a" is now the most recent
    windows.set("c", Window("3"))
    assert windows.get("b") is None and windows.get("a") == Window("1") and len(windows) == 2


def test_token_counter_uses_the_models_counter_and_falls_back_to_the_estimate():
    class Counting:
        def count_tokens(self, text: str) -> int:
            return 7

    class Broken:
        def count_tokens(self, text: str) -> int:
            raise RuntimeError("not loaded")

    assert token_counter(Counting())("anything") == 7
    assert token_counter(Broken())("12345678") == estimate_tokens("12345678") == 2
    assert token_counter(object())("") == 0


def test_a_model_with_the_base_estimate_counts_with_the_estimate_itself():
    """The run lays the prompt out inline (no thread hop) exactly when the counter is the estimate: a model that
    only inherits ChatModel's estimate gets it; one that counts with its own tokenizer does not."""
    from voiceserver.testing.fake_llm import ScriptedChatModel

    class Tokenizing(ScriptedChatModel):
        def count_tokens(self, text: str) -> int:
            return 1

    assert token_counter(ScriptedChatModel(["x"])) is estimate_tokens
    assert token_counter(Tokenizing(["x"])) is not estimate_tokens
    assert token_counter(Tokenizing(["x"]))("a long text") == 1


async def test_the_run_emits_the_context_chunk_before_the_first_model_call_and_usage_after():
    memory = FakeMemory()
    model = ScriptedChatModel(["Hello.", "Fine."])
    agent = Agent(name="A", instructions="Be brief.", model=model, memory=memory, prompt_budget_tokens=500)
    await agent.generate("Hi", memory={"resource": "user-1", "thread": "t1"})
    stream = agent.stream("How are you?", memory={"resource": "user-1", "thread": "t1"})
    chunks = [c async for c in stream]
    types = [c.type for c in chunks]
    assert types.index("context") < types.index("step-start") < types.index("text-delta")
    context = chunks[types.index("context")].payload
    assert context["budget"] == 500 and context["history_messages"] == 2 and context["recalled_messages"] == 0
    assert context["dropped_history"] == 0 and context["working_memory"] is False and context["prompt_tokens"] > 0
    finish = chunks[-1].payload["usage"]
    assert set(finish) >= {"prompt_tokens", "completion_tokens", "cached_tokens"} and finish["prompt_tokens"] > 0
    step = chunks[types.index("step-finish")].payload["usage"]
    assert step["completion_tokens"] == finish["completion_tokens"] > 0


def test_recall_stays_where_it_was_shown_so_the_next_turn_reuses_the_prompt_prefix():
    """Turn N's recall stays in the window after the message it followed: turn N+1's prompt starts with all of turn
    N's prompt (recall and question included), so llama.cpp re-reads only the new exchange. Recall already shown
    is not shown again; a new hit becomes a second note; a cut drops the notes."""
    fact = msg(90, "user", "my colour is blue", "t0")
    other = msg(91, "user", "my name is Ada", "t0")
    history = exchange(2)
    first = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=[fact],
                          tail=[ChatMessage("user", "What colour?")], budget=1000, count=words, window=None)
    assert len(first.window.notes) == 1 and first.window.notes[0].after == "m3"
    grown = [*history, msg(4, "user", "What colour?"), msg(5, "assistant", "Blue.")]
    second = layout_prompt(system=SYSTEM, working_memory=None, history=grown, recalled=[fact],
                           tail=[ChatMessage("user", "And my name?")], budget=1000, count=words, window=first.window)
    before = [(m.role, m.content) for m in first.messages]
    after = [(m.role, m.content) for m in second.messages]
    assert after[: len(before)] == before  # the whole of the last prompt is the prefix of this one
    assert second.recall == [] and second.report.recalled_messages == 1  # shown once, still in the prompt
    third = layout_prompt(system=SYSTEM, working_memory=None, history=grown, recalled=[fact, other],
                          tail=[ChatMessage("user", "And my name?")], budget=1000, count=words, window=second.window)
    assert "my name is Ada" in third.recall[0].content and "blue" not in third.recall[0].content
    assert [n.ids for n in third.window.notes] == [("m90",), ("m91",)]
    # Memory's window moved past the start: a cut, and the notes go with the old window (the fact may be recalled
    # again, once).
    cut = layout_prompt(system=SYSTEM, working_memory=None, history=exchange(8)[6:], recalled=[fact],
                        tail=[ChatMessage("user", "q")], budget=1000, count=words, window=third.window)
    assert [n.ids for n in cut.window.notes] == [("m90",)] and "blue" in cut.recall[0].content
    # Without a budget there is no window, so nothing sticks.
    plain = layout_prompt(system=SYSTEM, working_memory=None, history=grown, recalled=[fact],
                          tail=[ChatMessage("user", "q")], budget=0, count=words, window=first.window)
    assert plain.window.notes == () and "blue" in plain.recall[0].content


def test_a_recalled_reply_keeps_its_question_when_an_earlier_note_showed_the_question():
    """Turn 1 of a call recalls an old question; turn 2 recalls that question's answer. The answer's pair still
    names the question (from the hits), so the repetition guard knows an answer to the same question again."""
    question, answer = msg(90, "user", "What is my name?", "t0"), msg(91, "assistant", "Your name is Ada.", "t0")
    hello = msg(89, "assistant", "Hello again!", "t0")
    history = exchange(1)
    first = layout_prompt(system=SYSTEM, working_memory=None, history=history, recalled=[hello, question],
                          tail=[ChatMessage("user", "Hi, it is me.")], budget=1000, count=words, window=None)
    assert first.recalled_replies == [(None, "Hello again!")]
    grown = [*history, msg(2, "user", "Hi, it is me."), msg(3, "assistant", "Hello!")]
    second = layout_prompt(system=SYSTEM, working_memory=None, history=grown, recalled=[question, answer],
                           tail=[ChatMessage("user", "What is my name?")], budget=1000, count=words,
                           window=first.window)
    assert ("What is my name?", "Your name is Ada.") in second.recalled_replies
    # A reply whose neighbour in the hits is from another thread has no known question.
    stray = layout_prompt(system=SYSTEM, working_memory=None, history=grown,
                          recalled=[msg(80, "user", "Other thread?", "t9"), answer],
                          tail=[ChatMessage("user", "q")], budget=1000, count=words, window=None)
    assert (None, "Your name is Ada.") in stray.recalled_replies
