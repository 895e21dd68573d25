"""Warm the next prompt: while the caller listens to a reply, lay out the conversation's next prompt and have the
model read its start (a local model with a prompt cache: :meth:`ChatModel.prefill`).

Turn to turn, llama.cpp's cache already holds the prompt so far plus the reply it generated, so the next turn
reads only the new question. Two turns are different:

- **after a cut.** When the history outgrows the budget, or memory's window slides past the window's start, the
  prompt is rewritten from a later start (:mod:`voiceserver.runs.prompt`), and the turn that makes the cut reads the
  whole history again: hundreds of tokens, seconds on two cores. Laid out here instead, the cut is made (and stored
  as the thread's window) after the reply, and the model reads the new prefix as background work; the next turn
  finds it cached.
- **a conversation's first turn after another one used the context.** The prefix is read again here, not by the
  caller's next question.

The layout is the next turn's as far as it can be known: the history as memory now returns it, the window, no
recall (it depends on the question; it is placed after the history, so it does not change the prefix) and
:data:`NEXT_INPUT_RESERVE` tokens for the question. Nothing happens when a newer turn of the conversation has laid
out its prompt meanwhile (the window it stored is no longer the one this turn stored): warming then would overwrite
the newer prompt in the cache. The model reads at background priority, so a live turn never waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..engines import ProviderError
from ..llm.base import ChatMessage, ChatModel, ChatRequest, ToolSpec
from ..logs import get_logger
from ..runs.prompt import HistoryWindows, Window, estimate_tokens, layout_prompt, tools_tokens

log = get_logger("AGENT")
NEXT_INPUT_RESERVE = 64  # tokens left for the next question when the next prompt is laid out ahead of it


@dataclass
class NextPrompt:
    """What a finished turn knows of the conversation's next prompt."""

    model: ChatModel
    memory: Any
    resource: str
    thread: str
    window_key: Hashable
    window: Window  # the window this turn stored: a newer turn replaces it
    system: list[ChatMessage]
    specs: list[ToolSpec]
    tool_choice: str
    budget: int
    count: Any  # the token counter of the turn's layout


async def warm_next_prompt(next_prompt: NextPrompt, windows: HistoryWindows) -> int:
    """Lay out the next prompt and have the model read its start; returns the tokens read (0: nothing to do, or
    a newer turn came first). Errors are logged, never raised: this is an optimisation."""
    p = next_prompt
    try:
        mctx = await p.memory.prepare(resource_id=p.resource, thread_id=p.thread, query=None)
        if windows.peek(p.window_key) is not p.window:
            return 0
        history = list(getattr(mctx, "history", None) or [])
        working = getattr(mctx, "system_message", None) or None

        def layout() -> Any:
            return layout_prompt(system=p.system, working_memory=working, history=history, recalled=[], tail=[],
                                 budget=p.budget, count=p.count, window=p.window,
                                 extra_tokens=tools_tokens(p.specs, p.count) + NEXT_INPUT_RESERVE)

        plan = layout() if p.count is estimate_tokens else await asyncio.to_thread(layout)
        if windows.peek(p.window_key) is not p.window:
            return 0
        window = plan.window
        windows.set(p.window_key, window)  # a cut is made now, so the next turn keeps this prefix
        request = ChatRequest(messages=plan.prefix, tools=p.specs, tool_choice=p.tool_choice)
        read = await p.model.prefill(request, still_wanted=lambda: windows.peek(p.window_key) is window)
        cut = p.window.start is not None and plan.window.start != p.window.start
        log.debug("next prompt warmed", fields={"tokens_read": read, "prefix_messages": len(plan.prefix), "cut": cut})
        return read
    except ProviderError as exc:  # preempted by a live call (it came first, as it should), or the model failed
        level = log.debug if exc.code == "llm_preempted" else log.info
        level("the next prompt was not warmed", fields={"code": exc.code})
        return 0
    except Exception as exc:  # noqa: BLE001 - a failed warm-up costs the next turn its read, nothing else
        log.info("warming the next prompt failed", fields={"code": "warm_failed", "error": repr(exc)[:200]})
        return 0
