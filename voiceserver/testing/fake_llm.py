"""A scripted chat model with set delays, for deterministic tests of agents and sessions.

Each call to the model consumes the next :class:`Reply` of the script (the last one repeats when the script runs
out, unless ``cycle=False``, in which case a further call is an error). A reply is text, tool calls, or both, with a
delay before the first chunk and between chunks. Every request is recorded in ``requests`` so a test can assert on
what the model was shown.

    model = ScriptedChatModel([Reply(text="Hello there. How can I help?", first_delay_s=0.05, chunk_delay_s=0.01)])
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..llm.base import (
    ChatChunk,
    ChatModel,
    ChatRequest,
    Finish,
    ModelCapabilities,
    TextDelta,
    ToolCall,
    ToolCallChunk,
    Usage,
)


@dataclass
class Reply:
    """One scripted model answer."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (tool name, arguments)
    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    error: Exception | None = None  # raised instead of answering
    # Called with the request to compute the reply dynamically: a str (the text) or a whole Reply (text and/or
    # tool calls), so one scripted model can answer different kinds of calls (tools, structured output...).
    respond: Callable[[ChatRequest], str | Reply] | None = None


class ScriptedChatModel(ChatModel):
    """A ChatModel that plays back a script. Streams text word by word."""

    provider = "scripted"
    capabilities = ModelCapabilities(tools=True, structured_output=True, streaming=True)

    def __init__(self, script: list[Reply | str], *, model_id: str = "scripted/test", cycle: bool = True,
                 keep_requests: int | None = None, **kwargs: Any):
        super().__init__(model_id, retries=0, **kwargs)
        self.script = [Reply(text=r) if isinstance(r, str) else r for r in script]
        self.cycle = cycle
        self.calls = 0
        self.requests: list[ChatRequest] = []  # every request, or the last ``keep_requests`` (a long-running server)
        self.keep_requests = keep_requests
        self.cancelled = 0

    def _next(self) -> Reply:
        if self.calls < len(self.script):
            reply = self.script[self.calls]
        elif self.cycle and self.script:
            reply = self.script[-1]
        else:
            raise RuntimeError(f"scripted model has no reply #{self.calls + 1}")
        self.calls += 1
        return reply

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.requests.append(request)
        if self.keep_requests is not None and len(self.requests) > self.keep_requests:
            del self.requests[: -self.keep_requests]
        reply = self._next()
        try:
            if reply.first_delay_s:
                await asyncio.sleep(reply.first_delay_s)
            if reply.error is not None:
                raise reply.error
            tool_calls = reply.tool_calls
            if reply.respond is not None:
                answer = reply.respond(request)
                if isinstance(answer, Reply):
                    text, tool_calls = answer.text, answer.tool_calls
                else:
                    text = answer
            else:
                text = reply.text
            pieces = re.findall(r"\S+\s*|\s+", text)
            for i, piece in enumerate(pieces):
                if i and reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
                yield TextDelta(piece)
            for name, args in tool_calls:
                yield ToolCallChunk(ToolCall(id=ToolCall.new_id(), name=name, arguments=dict(args)))
            usage = Usage(prompt_tokens=sum(len((m.content or "").split()) for m in request.messages),
                          completion_tokens=len(pieces))
            yield Finish("tool_calls" if tool_calls else "stop", usage)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
