"""Background chat calls never delay live work: the real LlamaCppModel scheduling, on scripted llama.cpp contexts.

The contexts are fakes that generate a scripted number of tokens and record every event; what is asserted is the
order of events (which call generated while live work ran), never how long anything took.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from voiceserver.engines import LiveActivity, ProviderError
from voiceserver.llm import LlamaCppModel
from voiceserver.llm.base import ChatMessage, ChatRequest, Finish, TextDelta
from voiceserver.llm.llama_pool import ContextPool

EOS = 0


class FakeTemplate:
    def render(self, messages, **kwargs) -> str:
        return "\n".join(f"{m.role}: {m.content}" for m in messages) + "\nassistant:"


class FakeContext:
    """Just enough of ``llama_cpp.Llama`` for LlamaCppModel: tokens are characters, replies are scripted."""

    def __init__(self, name: str, events: list[tuple], reply_tokens: int = 40, token_delay_s: float = 0.002):
        self.name = name
        self.events = events
        self.reply_tokens = reply_tokens
        self.token_delay_s = token_delay_s
        self._input_ids: list[int] = []
        self.n_tokens = 0
        self._requires_eval = False
        self._model = SimpleNamespace(vocab=None)
        self._ctx = SimpleNamespace(kv_cache_seq_rm=lambda seq, start, end: True)
        self.nice: list[int] = []

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        return [b + 1 for b in text]  # never EOS

    def detokenize(self, tokens: list[int]) -> bytes:
        return bytes(t - 1 for t in tokens)

    def reset(self) -> None:
        self.n_tokens = 0
        self._input_ids = []

    def eval(self, tokens: list[int]) -> None:
        self.events.append(("prefill", self.name, len(tokens)))
        self._input_ids = self._input_ids[: self.n_tokens] + list(tokens)
        self.n_tokens += len(tokens)
        time.sleep(self.token_delay_s)

    def generate(self, tokens, **kwargs):
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        self._input_ids, self.n_tokens = list(tokens), len(tokens)
        for i in range(self.reply_tokens):
            time.sleep(self.token_delay_s)
            self.events.append(("token", self.name, i))
            yield ord("a") + 1
        yield EOS

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fake_llama_cpp(monkeypatch):
    monkeypatch.setattr("voiceserver.llm.llama_cpp._import_llama_cpp",
                        lambda: SimpleNamespace(llama_vocab_is_eog=lambda vocab, token: token == EOS))


def scripted_model(pool: int, events: list[tuple], activity: LiveActivity | None = None,
                   reply_tokens: int = 40) -> LlamaCppModel:
    model = LlamaCppModel(Path("/scripted.gguf"), pool=pool, max_tokens=500, live_activity=activity or LiveActivity())
    model._pool.fill([FakeContext(f"ctx{i}", events, reply_tokens) for i in range(pool)])
    model._template = FakeTemplate()
    return model


def request(text: str, priority: str = "live") -> ChatRequest:
    return ChatRequest([ChatMessage("user", text)], priority=priority)


async def collect(model: LlamaCppModel, req: ChatRequest, events: list[tuple], label: str) -> str:
    out = []
    async for chunk in model.stream(req):
        if isinstance(chunk, TextDelta):
            out.append(chunk.text)
        elif isinstance(chunk, Finish):
            events.append(("finish", label))
    return "".join(out)


async def until(condition, limit_s: float = 10.0) -> None:
    """Wait for a condition the test itself causes (a bound, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


def tokens_of(events: list[tuple], name: str | None = None) -> int:
    return sum(1 for e in events if e[0] == "token" and (name is None or e[1] == name))


async def test_background_call_does_not_start_while_live_work_runs():
    events: list[tuple] = []
    activity = LiveActivity()
    model = scripted_model(2, events, activity)
    activity.begin()  # a transcription is running somewhere in the server
    events.append(("live begin",))
    task = asyncio.create_task(collect(model, request("extract", "background"), events, "background"))
    await asyncio.sleep(0.1)  # the background call had every chance to start
    events.append(("live end",))
    activity.end()
    assert await task == "a" * 40
    assert events.index(("live end",)) < next(i for i, e in enumerate(events) if e[0] == "token")


async def test_background_generation_pauses_between_tokens_while_live_work_runs():
    events: list[tuple] = []
    activity = LiveActivity()
    model = scripted_model(2, events, activity, reply_tokens=200)
    task = asyncio.create_task(collect(model, request("extract", "background"), events, "background"))
    await until(lambda: tokens_of(events) >= 3)
    activity.begin()  # a synthesis starts
    at_begin = tokens_of(events)
    await asyncio.sleep(0.2)  # 100 tokens' worth of time at the scripted pace
    during = tokens_of(events)
    activity.end()
    assert await task == "a" * 200
    assert during - at_begin <= 1  # at most the token that was being generated when the live work began
    assert model.background.paused >= 1


async def test_live_call_on_the_same_model_runs_while_background_is_paused():
    events: list[tuple] = []
    activity = LiveActivity()
    model = scripted_model(2, events, activity, reply_tokens=100)
    background = asyncio.create_task(collect(model, request("extract", "background"), events, "background"))
    await until(lambda: tokens_of(events) >= 3)
    live = await collect(model, request("hello"), events, "live")
    assert live == "a" * 100
    bg_ctx = next(e[1] for e in events if e[0] == "token")
    live_ctx = next(e[1] for e in events if e[0] == "token" and e[1] != bg_ctx)
    live_events = [i for i, e in enumerate(events) if e[0] == "token" and e[1] == live_ctx]
    background_during_live = [e for e in events[live_events[0]:live_events[-1]] if e[0] == "token"
                              and e[1] == bg_ctx]
    assert len(background_during_live) <= 1
    assert await background == "a" * 100


async def test_background_never_takes_the_last_free_context():
    events: list[tuple] = []
    model = scripted_model(2, events, reply_tokens=30)
    first = asyncio.create_task(collect(model, request("one", "background"), events, "first"))
    await until(lambda: tokens_of(events) >= 1)
    second = asyncio.create_task(collect(model, request("two", "background"), events, "second"))
    await first
    await second
    first_done = events.index(("finish", "first"))
    second_tokens = [i for i, e in enumerate(events) if e[0] == "token"][30:]
    assert len(second_tokens) == 30 and min(second_tokens) > first_done


async def test_with_one_context_a_waiting_live_call_preempts_a_paused_background_call():
    events: list[tuple] = []
    activity = LiveActivity()
    model = scripted_model(1, events, activity, reply_tokens=300)
    background = asyncio.create_task(collect(model, request("extract", "background"), events, "background"))
    await until(lambda: tokens_of(events) >= 3)
    live = await collect(model, request("hello"), events, "live")  # waits for the only context
    assert live == "a" * 300
    with pytest.raises(ProviderError) as err:
        await background
    assert err.value.code == "llm_preempted" and err.value.retryable
    assert model.background.preempted == 1 and model.free_contexts == 1


async def test_background_prompt_is_read_in_chunks_that_pause_for_live_work():
    events: list[tuple] = []
    activity = LiveActivity()
    model = scripted_model(2, events, activity, reply_tokens=5)
    await collect(model, request("x" * 300, "background"), events, "background")
    chunks = [e[2] for e in events if e[0] == "prefill"]
    assert len(chunks) >= 9 and max(chunks) <= 32  # ~320 prompt tokens, 32 at a time


async def test_background_runs_on_threads_with_a_lower_os_priority():
    events: list[tuple] = []
    model = scripted_model(2, events, reply_tokens=2)
    await collect(model, request("hello"), events, "live")
    await collect(model, request("extract", "background"), events, "background")
    nices = [n for ctx in model._contexts for n in ctx.nice]
    live_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert len(nices) == 2 and sorted(nices) == [live_nice, min(live_nice + 10, 19)]
    await model.close()


def test_background_takes_its_own_context_and_live_takes_the_cached_conversation():
    events: list[tuple] = []
    pool = ContextPool()
    a, b = FakeContext("a", events), FakeContext("b", events)
    pool.fill([a, b])
    conversation = list(range(100, 200))
    taken = pool.take(conversation, background=False)
    taken._input_ids, taken.n_tokens = conversation, len(conversation)
    pool.give_back(taken)
    side = pool.take([1, 2, 3], background=True)  # the other one: the conversation keeps its cache
    assert side is not taken
    pool.give_back(side)
    assert pool.take(conversation + [7], background=False) is taken
    assert pool.take([9], background=True) is side


def test_a_live_call_waits_for_its_conversations_context_while_a_cancelled_call_unwinds():
    events: list[tuple] = []
    pool = ContextPool()
    a, b = FakeContext("a", events), FakeContext("b", events)
    pool.fill([a, b])
    conversation = list(range(100, 200))
    cancelled = threading.Event()
    held = pool.take(conversation, background=False, cancel=cancelled)
    held._input_ids, held.n_tokens = conversation, len(conversation)
    cancelled.set()  # a barge-in: the worker holding the conversation's cache unwinds at its next token
    threading.Timer(0.05, pool.give_back, args=(held,)).start()
    assert pool.take(conversation + [7], background=False) is held  # not the cold context next to it
    pool.give_back(held)
    # A call that is not cancelled is not waited for: the free context is taken at once.
    running = pool.take(conversation, background=False, cancel=threading.Event())
    other = pool.take(conversation + [8], background=False, unwind_wait_s=5.0)
    assert other is not running


async def test_live_activity_counts_and_wakes_async_waiters():
    activity = LiveActivity()
    assert not activity.busy and await activity.wait_idle_async(0)
    with activity.live():
        activity.begin()
        waiter = asyncio.create_task(activity.wait_idle_async(5))
        activity.end()
        await asyncio.sleep(0.01)
        assert activity.busy and not waiter.done()
    assert await waiter and not activity.busy and activity.started == 2
    assert activity.wait_idle(0)


async def test_an_unknown_priority_is_a_clear_error():
    model = scripted_model(1, [])
    with pytest.raises(ProviderError) as err:
        await model.complete(ChatRequest([ChatMessage("user", "hi")], priority="urgent"))  # type: ignore[arg-type]
    assert err.value.code == "invalid_request" and "priority" in err.value.message


def prefill_request(text: str) -> ChatRequest:
    return ChatRequest([ChatMessage("system", "You are a voice assistant. " * 3), ChatMessage("user", text)])


async def test_waiting_prefills_are_bounded_by_the_pool_and_drop_out_once_unwanted():
    """Warm-ups wait for live work to pause; under steady load they must not pile up (a soak grew one task per
    turn): a context holds one prompt, so a newer waiting prefill replaces an older one, and one whose conversation
    moved on leaves while still waiting."""
    events: list[tuple] = []
    activity = LiveActivity()
    model = scripted_model(1, events, activity)
    activity.begin()  # live work runs the whole time the prefills arrive
    older = asyncio.create_task(model.prefill(prefill_request("first caller")))
    await asyncio.sleep(0.05)
    newer = asyncio.create_task(model.prefill(prefill_request("second caller")))
    assert await asyncio.wait_for(older, 5) == 0  # replaced while waiting, nothing read
    assert not newer.done() and not any(e[0] == "prefill" for e in events)
    activity.end()
    assert await asyncio.wait_for(newer, 5) > 0  # the newest one is admitted once live work pauses
    read_so_far = len(events)

    activity.begin()
    wanted = [True]
    moved_on = asyncio.create_task(model.prefill(prefill_request("third caller"), still_wanted=lambda: wanted[0]))
    await asyncio.sleep(0.1)
    assert not moved_on.done()
    wanted[0] = False  # the conversation's next turn laid out its own prompt
    assert await asyncio.wait_for(moved_on, 5) == 0
    assert len(events) == read_so_far and model.background.waiting_prefills == 0
    activity.end()


async def test_an_idle_waiter_that_timed_out_is_not_kept():
    activity = LiveActivity()
    activity.begin()
    for _ in range(5):
        assert not await activity.wait_idle_async(0.01)
    assert activity._waiters == []
    waiter = asyncio.create_task(activity.wait_idle_async(5))
    await asyncio.sleep(0.01)
    activity.end()
    assert await waiter
