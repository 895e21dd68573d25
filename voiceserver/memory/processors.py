"""Memory processors: shape the remembered history before it reaches the model.

A processor takes the chronological history and returns a (usually shorter) chronological list. ``Memory`` applies
its processors, in order, inside :meth:`Memory.prepare` to the history it loaded.
"""

from __future__ import annotations

import json
import math

from .types import Message


class MemoryProcessor:
    """Base class: override :meth:`process`."""

    def process(self, messages: list[Message]) -> list[Message]:
        return messages


def estimate_tokens(message: Message) -> int:
    """A cheap token estimate for one message, no tokenizer needed.

    English BPE tokenizers average about 4 characters per token, so the estimate is ``ceil(chars / 4)`` of the
    content (plus the JSON of tool arguments or results, which the model also sees) and 4 tokens of per-message
    overhead (role and separators in chat templates). It errs on the high side for plain English.
    """
    chars = len(message.content or "")
    if message.type != "text":
        payload = message.metadata.get("args", message.metadata.get("result"))
        if payload is not None:
            chars += len(json.dumps(payload, ensure_ascii=False, default=str))
    return 4 + math.ceil(chars / 4)


class TokenLimiter(MemoryProcessor):
    """Drop the oldest messages until the history's estimated token count fits ``limit``.

    The newest message is always kept, even if it alone is over the limit: an empty history helps nobody. A tool
    result whose tool call was dropped is dropped too, so the model never sees an orphan result.
    """

    def __init__(self, limit: int):
        if not isinstance(limit, int) or limit <= 0:
            raise ValueError("TokenLimiter limit must be a positive integer")
        self.limit = limit

    def process(self, messages: list[Message]) -> list[Message]:
        kept: list[Message] = []
        total = 0
        for message in reversed(messages):
            cost = estimate_tokens(message)
            if kept and total + cost > self.limit:
                break
            kept.append(message)
            total += cost
        kept.reverse()
        calls = {m.metadata.get("tool_call_id") for m in kept if m.type == "tool-call"}
        return [m for m in kept if m.type != "tool-result" or m.metadata.get("tool_call_id") in calls]


class ToolCallFilter(MemoryProcessor):
    """Drop tool-call and tool-result messages: all of them, or only those of the tools named in ``exclude``."""

    def __init__(self, exclude: list[str] | None = None):
        self.exclude = None if exclude is None else set(exclude)

    def process(self, messages: list[Message]) -> list[Message]:
        out = []
        for message in messages:
            if message.type in ("tool-call", "tool-result") and (
                self.exclude is None or message.metadata.get("tool_name") in self.exclude
            ):
                continue
            out.append(message)
        return out
