"""The llama.cpp contexts of one local model, and the rules that keep background work out of a live turn's way.

Which context a call takes:

- a live call takes the free context whose cached tokens share the longest prefix with its prompt (its
  conversation's prompt cache); when no context shares a useful prefix it takes the least recently used one;
- a background call (``ChatRequest.priority == "background"``) takes a context that background work used last if
  one is free, else the least recently used one, never by prefix: a side task does not take over the context a
  conversation is reusing;
- a prefill (``LlamaCppModel.prefill``: a conversation's next prompt read ahead, while the caller listens) is
  background work placed like a live call: in the context that shares the longest prefix with it.

When a background call may run (:class:`BackgroundPolicy`):

- it does not start while any live engine work runs in the server (the shared
  :class:`~voiceserver.engines.LiveActivity`: STT, TTS, live LLM calls), nor while fewer than two contexts are free
  (the last free one stays for live calls; with a pool of one it may take the only context when nothing live runs);
- once running, it pauses between tokens, and between 32-token chunks of its prompt, while live work runs;
- if a live call of this model is waiting for a context while the background call is paused, the background call
  gives its context up at once with the retryable error ``llm_preempted`` (the caller may try again later);
- it runs on threads of its own whose OS priority is lowered (nice +10), so even its unpausable pieces (one
  prompt chunk, one token) leave the CPU to live work first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..engines import EngineGate, LiveActivity, ProviderError
from ..logs import get_logger

log = get_logger("LLM")

USEFUL_PREFIX = 24  # tokens: a shorter shared prefix is just the chat template's opening
PROMPT_CHUNK = 32  # tokens a background prompt evaluates between two looks at live activity
BACKGROUND_NICE = 10  # added to the OS priority (nice value) of background worker threads
POLL_S = 0.02  # how often a waiting background call looks again
WANTED_CHECK_S = 0.5  # how often a waiting background call that may be dropped asks whether it is still wanted
# A live call whose conversation's context is still held by a call that was just cancelled (a barge-in, a cut reply,
# the repetition guard's retry) waits this long for it rather than re-reading its whole prompt on a cold context.
UNWIND_WAIT_S = 1.0


class Cancelled(Exception):
    """The consumer went away; the worker unwinds and returns its context."""


def common_prefix(ctx: Any, tokens: list[int]) -> int:
    """How many leading ``tokens`` the context already holds in its KV cache."""
    cached = ctx._input_ids[: ctx.n_tokens]
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


def reused_prefix(ctx: Any, tokens: list[int]) -> int:
    """Prompt tokens ``Llama.generate`` will take from the cache rather than evaluate (mirrors its rule: a prompt
    cached whole is re-read from its last token to refresh the logits, unless they are still current)."""
    prefix = common_prefix(ctx, tokens)
    if prefix >= len(tokens):
        exact = ctx.n_tokens == len(tokens) and not getattr(ctx, "_requires_eval", True)
        return len(tokens) if exact else max(0, len(tokens) - 1)
    return prefix


class ContextPool:
    """The free-list of a model's contexts and who used each last (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.contexts: list[Any] = []
        self._free: list[Any] = []
        self._last_used: dict[int, float] = {}
        self._last_kind: dict[int, str] = {}
        self._cancels: dict[int, threading.Event] = {}  # a busy context -> its call's cancel flag

    def fill(self, contexts: list[Any]) -> None:
        with self._lock:
            self.contexts = list(contexts)
            self._free = list(contexts)

    def clear(self) -> list[Any]:
        with self._lock:
            contexts, self.contexts, self._free = self.contexts, [], []
            return contexts

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)

    def take(self, tokens: list[int], background: bool, cancel: threading.Event | None = None,
             unwind_wait_s: float = UNWIND_WAIT_S, warm: bool = False) -> Any:
        """A free context for this prompt, by the rules in the module docstring (the gate guarantees one).

        A live call whose prompt's prefix sits in a context a cancelled call is still unwinding waits for that
        context (up to ``unwind_wait_s``): it comes back at the worker's next token, and reusing it saves reading
        the whole prompt again. ``warm``: a background prefill of a conversation's next prompt, which is placed
        like a live call (by prefix, in the conversation's context) but never waits."""
        deadline = time.monotonic() + unwind_wait_s
        with self._lock:
            while True:
                if not self._free:
                    raise ProviderError("llm_unavailable", "no free llama.cpp context", provider="local")
                indexes = range(len(self._free))

                def age(i: int) -> float:
                    return self._last_used.get(id(self._free[i]), 0.0)

                if background and not warm:
                    own = [i for i in indexes if self._last_kind.get(id(self._free[i])) == "background"]
                    best = own[0] if own else min(indexes, key=age)
                    break
                best = max(indexes, key=lambda i: common_prefix(self._free[i], tokens))
                free_prefix = common_prefix(self._free[best], tokens)
                remaining = deadline - time.monotonic()
                if not warm and remaining > 0 and self._unwinding_with(tokens, free_prefix + USEFUL_PREFIX):
                    self._lock.wait(timeout=remaining)
                    continue
                if free_prefix < USEFUL_PREFIX:
                    best = min(indexes, key=age)
                break
            ctx = self._free.pop(best)
            self._last_used[id(ctx)] = time.monotonic()
            self._last_kind[id(ctx)] = "background" if background and not warm else "live"
            if cancel is not None:
                self._cancels[id(ctx)] = cancel
            return ctx

    def _unwinding_with(self, tokens: list[int], at_least: int) -> bool:
        """Whether a busy context whose call was cancelled holds at least ``at_least`` tokens of this prompt."""
        free = {id(c) for c in self._free}
        for ctx in self.contexts:
            flag = self._cancels.get(id(ctx))
            if id(ctx) not in free and flag is not None and flag.is_set() and common_prefix(ctx, tokens) >= at_least:
                return True
        return False

    def give_back(self, ctx: Any) -> None:
        with self._lock:
            self._cancels.pop(id(ctx), None)
            if ctx in self.contexts:
                self._free.append(ctx)
            self._lock.notify_all()


def _lower_priority() -> None:
    """Executor initializer: raise this thread's nice value (Linux: per thread). Never undone: the thread only
    ever runs background work. OpenMP worker threads that llama.cpp starts from it inherit the value."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (OSError, AttributeError) as exc:  # not Linux, or not permitted: background still pauses for live work
        log.debug(f"cannot lower the background thread's priority: {exc}")


@dataclass(slots=True, eq=False)
class _WaitingPrefill:
    """A prefill waiting for admission; ``dropped`` once newer ones have taken its place."""

    dropped: bool = False


class BackgroundPolicy:
    """When one model's background calls may start and run (rules in the module docstring)."""

    def __init__(self, gate: EngineGate, pool_size: int, live: LiveActivity):
        self.gate = gate
        self.pool_size = pool_size
        self.live = live
        self._executor: ThreadPoolExecutor | None = None
        self._waiting_prefills: deque[_WaitingPrefill] = deque()  # used on the event loop only
        self.paused = 0  # times a background generation paused for live work (tests and the evaluation read it)
        self.preempted = 0

    def room(self) -> bool:
        """A background call may take a slot now without taking the last one a live call could use."""
        free = self.gate.concurrency - self.gate.busy
        need = 1 if self.pool_size == 1 else 2
        return self.gate.waiting == 0 and free >= need

    async def admit(self, still_wanted: Callable[[], bool] | None = None) -> bool:
        """Wait (on the loop) until a background call may start: nothing live runs and there is room. The caller
        takes its gate slot right after, with no await in between, so the condition still holds. ``still_wanted``
        is asked at least every :data:`WANTED_CHECK_S` while waiting: once it says no, this returns False (the
        call is dropped, not started); True when admitted."""
        timeout = None if still_wanted is None else WANTED_CHECK_S
        # Live work ending is an event; a gate slot coming free is not (EngineGate has none): poll for that.
        while True:
            if still_wanted is not None and not still_wanted():
                return False
            if await self.live.wait_idle_async(timeout) and self.room():
                return True
            await asyncio.sleep(POLL_S)

    async def admit_prefill(self, still_wanted: Callable[[], bool] | None = None) -> bool:
        """:meth:`admit` for a prefill of a conversation's next prompt. Waiting prefills are bounded: a context
        holds one prompt, so only the newest ``pool_size`` can still be of use; an older one is dropped (False)
        when a newer one arrives, and one whose conversation moved on (``still_wanted``) drops out while waiting."""
        ticket = _WaitingPrefill()
        self._waiting_prefills.append(ticket)
        while len(self._waiting_prefills) > self.pool_size:
            self._waiting_prefills.popleft().dropped = True
        try:
            return await self.admit(lambda: not ticket.dropped and (still_wanted is None or still_wanted()))
        finally:
            with contextlib.suppress(ValueError):
                self._waiting_prefills.remove(ticket)

    @property
    def waiting_prefills(self) -> int:
        return len(self._waiting_prefills)

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="llm-background",
                                                initializer=_lower_priority)
        return self._executor

    def yield_to_live(self, cancel: threading.Event) -> None:
        """Called by a background worker between tokens: pause while live work runs; give the context up if a
        live call of this model is waiting for one."""
        if not self.live.busy:
            return
        self.paused += 1
        while self.live.busy:
            if cancel.is_set():
                raise Cancelled
            if self.gate.waiting:  # only live calls ever wait at the gate (background ones wait in admit)
                self.preempted += 1
                raise ProviderError("llm_preempted", "a live call needs this llama.cpp context; the background "
                                    "call gave it up (try again later)", retryable=True, provider="local")
            self.live.wait_idle(POLL_S)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
