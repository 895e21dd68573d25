"""Chat model base: messages, tool specs, streamed chunks, and the template method every provider plugs into.

A provider subclasses :class:`ChatModel` and writes only ``_stream(request)``, an async generator of
:class:`TextDelta`, :class:`ToolCallChunk` and one final :class:`Finish`. The public :meth:`ChatModel.stream` owns the
timeouts (first chunk and whole call), retries before the first chunk, metrics and error mapping, and marks a live
call in the server's :class:`~voiceserver.engines.LiveActivity` (background calls wait while any live work runs).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines import LiveActivity, ProviderError, stream_with_policy
from ..logs import get_logger
from ..metrics import Metrics

log = get_logger("LLM")
BACKGROUND_TIMEOUT_FACTOR = 5.0  # a background call may take this many times the live time limits

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    """A model's request to call a tool. ``arguments`` is the parsed JSON object."""

    id: str
    name: str
    arguments: dict[str, Any]

    @staticmethod
    def new_id() -> str:
        return "call_" + uuid.uuid4().hex[:20]

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(slots=True)
class ChatMessage:
    """One message of a conversation in the OpenAI chat shape."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
                for c in self.tool_calls
            ]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name and self.role != "tool":
            out["name"] = self.name
        return out


@dataclass(slots=True)
class ToolSpec:
    """A tool offered to the model: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


ToolChoice = Literal["auto", "none", "required"] | str  # or a tool name: that tool must be called
Priority = Literal["live", "background"]
PRIORITIES = ("live", "background")


@dataclass(slots=True)
class ChatRequest:
    """Everything a provider needs for one completion."""

    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    response_schema: dict[str, Any] | None = None  # JSON schema: the reply must be one JSON value of it
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    # "live": a caller is waiting for this reply. "background": working-memory extraction, titles, summaries; it
    # never delays live work (see LlamaCppModel for what that means locally; cloud providers ignore it).
    priority: Priority = "live"


@dataclass(slots=True)
class Usage:
    """Token counts of one call. ``prompt_tokens`` is the whole prompt; ``cached_tokens`` the part of it served
    from the prompt cache (llama.cpp: the prefix shared with the context's cached tokens; OpenAI-compatible servers:
    ``usage.prompt_tokens_details.cached_tokens`` when they send it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallChunk:
    """A complete tool call (providers assemble streamed argument fragments before emitting it)."""

    call: ToolCall


@dataclass(slots=True)
class PromptRead:
    """The model has read the prompt: how big it was and how much of it came from the prompt cache. Sent by
    providers that know it before the answer (the local model, just before its first token), so a reply cut short
    still reports its prompt; ``Finish.usage`` carries the same figures at the end."""

    usage: Usage


@dataclass(slots=True)
class Finish:
    reason: Literal["stop", "length", "tool_calls", "content_filter"] = "stop"
    usage: Usage = field(default_factory=Usage)


ChatChunk = TextDelta | ToolCallChunk | PromptRead | Finish


@dataclass(slots=True)
class ChatResult:
    """A whole completion, as :meth:`ChatModel.complete` returns it."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    tools: bool = True
    structured_output: bool = True
    streaming: bool = True


class ChatModel:
    """Base of every chat model provider. Subclasses implement ``_stream``; callers use ``stream`` / ``complete``."""

    provider: str = "base"
    capabilities = ModelCapabilities()

    def __init__(self, model_id: str, *, timeout_s: float = 60.0, first_chunk_timeout_s: float | None = None,
                 retries: int = 1, metrics: Metrics | None = None, live_activity: LiveActivity | None = None):
        """``live_activity``: the server's shared one (its STT and TTS mark their work there too); by default the
        model has its own, so its background calls still yield to its own live calls."""
        self.model_id = model_id
        self.timeout_s = timeout_s
        self.first_chunk_timeout_s = first_chunk_timeout_s or timeout_s
        self.retries = retries
        self.metrics = metrics or Metrics.null()
        self.live_activity = live_activity if live_activity is not None else LiveActivity()

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's prompt. The base gives an estimate, one token per four characters
        (rounded up) of English text; the local llama.cpp model counts exactly with its tokenizer."""
        return -(-len(text) // 4)

    count_tokens.is_estimate = True  # type: ignore[attr-defined]  # runs.prompt.token_counter: no thread needed

    async def count_tokens_async(self, text: str) -> int:
        """:meth:`count_tokens` without blocking the event loop (the local model may have to load its tokenizer)."""
        return self.count_tokens(text)

    @property
    def id(self) -> str:
        """The model string, e.g. "local/smollm2" or "openai/gpt-4o-mini"."""
        return self.model_id

    def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream chunks. Retries retryable errors only before the first chunk; always ends with one Finish.

        A live request counts as live work for the whole call (until the stream ends or is closed)."""
        if request.priority not in PRIORITIES:
            raise ProviderError("invalid_request", f"priority must be one of {', '.join(PRIORITIES)}, "
                                f"not {request.priority!r}", provider=self.provider)
        finished = False
        live = request.priority == "live"
        # A background call waits for live work to pause and gives way to it while it runs, by design: its time
        # limits allow for that (under load, extraction hit the live limit and working memory stayed empty).
        slack = 1.0 if live else BACKGROUND_TIMEOUT_FACTOR
        if live:
            self.live_activity.begin()
        try:
            async for chunk in stream_with_policy(
                lambda: self._stream(request), provider=self.provider, operation="llm", call_label="chat",
                timeout_s=self.timeout_s * slack, first_item_timeout_s=self.first_chunk_timeout_s * slack,
                retries=self.retries,
                metrics=self.metrics, first_item_stage="llm_first_chunk", log=log, name=self.model_id,
            ):
                finished = finished or isinstance(chunk, Finish)
                yield chunk
            if not finished:
                yield Finish()
        finally:
            if live:
                self.live_activity.end()

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Run a whole completion and collect it."""
        text: list[str] = []
        calls: list[ToolCall] = []
        finish = Finish()
        async for chunk in self.stream(request):
            if isinstance(chunk, TextDelta):
                text.append(chunk.text)
            elif isinstance(chunk, ToolCallChunk):
                calls.append(chunk.call)
            elif isinstance(chunk, Finish):
                finish = chunk
        return ChatResult("".join(text), calls, finish.reason, finish.usage)

    warms_prompts = False  # whether prefill() does anything (a local model with a prompt cache)

    async def prefill(self, request: ChatRequest, still_wanted: Callable[[], bool] | None = None) -> int:
        """Read the start of a later prompt ahead of time, so that the call which begins with ``request.messages``
        finds them in the prompt cache. ``still_wanted`` is asked (from a worker thread) just before the read: when
        it says no, nothing is read. Returns the tokens read. The base has no prompt cache: nothing to do, 0."""
        return 0

    async def load(self) -> None:
        """Load weights or open clients ahead of the first call (optional)."""

    async def close(self) -> None:
        """Release resources (optional)."""


class UnknownModelError(ProviderError):
    def __init__(self, model: str, known: list[str]):
        super().__init__("unknown_model", f"unknown model {model!r}; expected one of: {', '.join(known)}")
