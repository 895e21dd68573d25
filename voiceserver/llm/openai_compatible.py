"""Chat models behind the OpenAI chat completions API: OpenAI, Google's OpenAI-compatible endpoint, vLLM, Ollama, a
llama.cpp server.

Streaming with ``stream_options={"include_usage": True}`` (the usage chunk's ``prompt_tokens_details.cached_tokens``
becomes ``Usage.cached_tokens``); tool-call argument fragments are assembled by index into
complete :class:`ToolCallChunk` s, emitted when the choice finishes. Arguments that are not a JSON object become
``{"__raw__": "<the text>"}`` (see :data:`RAW_ARGUMENTS_KEY`): the call still reaches the agent, whose argument
validation fails and sends a tool-error back to the model, which can then correct itself; a ProviderError would end
the run instead.

The SDK's own retries are off (``max_retries=0``): :meth:`ChatModel.stream` owns retries, before the first chunk only.
Stopping the consumer closes the HTTP stream (``async with`` on the SDK stream).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines import LiveActivity
from ..metrics import Metrics
from .base import (
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

RAW_ARGUMENTS_KEY = "__raw__"
GOOGLE_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
_FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
                   "content_filter": "content_filter"}


@dataclass
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Joins streamed ``delta.tool_calls`` fragments into whole tool calls, keyed by their ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._last: int | None = None

    def add(self, index: int | None, call_id: str | None, name: str | None, arguments: str | None) -> None:
        """Add one fragment. Servers that omit ``index`` (some compatible ones) get one by id, else the last call."""
        if index is None:
            if call_id and not any(c.id == call_id for c in self._calls.values()):
                index = len(self._calls)
            elif call_id:
                index = next(i for i, c in self._calls.items() if c.id == call_id)
            else:
                index = self._last if self._last is not None else 0
        call = self._calls.setdefault(index, _PartialCall())
        self._last = index
        if call_id:
            call.id = call_id
        if name and name != call.name:
            # OpenAI sends the name once; a few servers repeat it in every fragment, others split it.
            call.name = name if not call.name or name.startswith(call.name) else call.name + name
        if arguments:
            call.arguments.append(arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def finish(self) -> list[ToolCall]:
        """The assembled calls in index order (and forget them)."""
        calls = [self._complete(self._calls[i]) for i in sorted(self._calls)]
        self._calls.clear()
        self._last = None
        return calls

    @staticmethod
    def _complete(call: _PartialCall) -> ToolCall:
        raw = "".join(call.arguments)
        return ToolCall(id=call.id or ToolCall.new_id(), name=call.name, arguments=parse_arguments(raw))


def parse_arguments(raw: str) -> dict[str, Any]:
    """A tool call's arguments text as a dict; not a JSON object -> ``{"__raw__": raw}``. Empty -> ``{}``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {RAW_ARGUMENTS_KEY: raw}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: raw}


def usage_of(usage: Any) -> Usage:
    """Our Usage from the API's: ``prompt_tokens_details.cached_tokens`` is the prompt served from the server's
    prompt cache (OpenAI, vLLM and llama.cpp's server send it; others leave it out: 0)."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached or 0)


def is_strict_schema(schema: Any) -> bool:
    """True if OpenAI's strict structured output accepts ``schema``: every object closed and all properties required."""
    if isinstance(schema, list):
        return all(is_strict_schema(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is not False or set(schema.get("required", [])) != set(props):
            return False
    return all(is_strict_schema(v) for k, v in schema.items() if isinstance(v, dict | list) and k != "enum"
               and k != "const")


def schema_name(schema: dict[str, Any]) -> str:
    """A name for ``response_format.json_schema.name`` (letters, digits, _ and -, at most 64)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "response"))[:64]
    return name or "response"


def tool_choice_param(tool_choice: str) -> Any:
    """Our tool_choice ("auto" | "none" | "required" | a tool name) in the API's form."""
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    return {"type": "function", "function": {"name": tool_choice}}


class OpenAICompatibleModel(ChatModel):
    """A chat model served over the OpenAI chat completions API (streaming, tools, structured output)."""

    capabilities = ModelCapabilities(tools=True, structured_output=True, streaming=True)

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model_id: str | None = None,
        provider: str = "openai",
        max_tokens: int | None = None,
        structured_max_tokens: int | None = 1024,
        temperature: float | None = None,
        strict: bool | Literal["auto"] = "auto",
        timeout_s: float = 60.0,
        first_chunk_timeout_s: float | None = None,
        retries: int = 1,
        metrics: Metrics | None = None,
        extra_body: dict[str, Any] | None = None,
        live_activity: LiveActivity | None = None,
    ):
        """``max_tokens`` bounds a plain reply, ``structured_max_tokens`` one with tools or a response_schema (None:
        the server's default), unless the request sets its own. ``strict`` sets ``json_schema.strict`` for
        response_schema; "auto" turns it on when the schema allows (OpenAI's strict mode rejects schemas with optional
        properties or open objects)."""
        super().__init__(model_id or f"{provider}/{model}", timeout_s=timeout_s,
                         first_chunk_timeout_s=first_chunk_timeout_s, retries=retries, metrics=metrics,
                         live_activity=live_activity)
        self.model = model
        self.provider = provider
        self.base_url = base_url
        self.max_tokens = max_tokens
        self.structured_max_tokens = structured_max_tokens
        self.temperature = temperature
        self.strict = strict
        self.extra_body = extra_body
        # Local servers (Ollama, vLLM, llama.cpp) often need no key, but the SDK wants a non-empty one.
        self._api_key = api_key or "not-needed"
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                              timeout=self.timeout_s)
        return self._client

    def build_params(self, request: ChatRequest) -> dict[str, Any]:
        """The request body for ``chat.completions.create`` (public so tests and users can inspect it)."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [t.to_openai() for t in request.tools]
            params["tool_choice"] = tool_choice_param(request.tool_choice)
        if request.response_schema is not None:
            strict = is_strict_schema(request.response_schema) if self.strict == "auto" else bool(self.strict)
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema_name(request.response_schema), "schema": request.response_schema, "strict": strict}}
        structured = bool(request.tools) or request.response_schema is not None
        max_tokens = request.max_tokens or (self.structured_max_tokens if structured else self.max_tokens)
        if max_tokens:
            # OpenAI's newer models reject max_tokens; most compatible servers only know max_tokens.
            params["max_completion_tokens" if self.provider == "openai" else "max_tokens"] = max_tokens
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            params["temperature"] = temperature
        if request.stop:
            params["stop"] = request.stop
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        client = self._get_client()
        stream = await client.chat.completions.create(**self.build_params(request))
        assembler = ToolCallAssembler()
        usage = Usage()
        reason: str | None = None
        async with stream:  # closes the HTTP response however this generator ends
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = usage_of(chunk.usage)
                for choice in chunk.choices:
                    if choice.index not in (0, None):
                        continue  # n=1: other choices are not ours
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            yield TextDelta(delta.content)
                        for frag in delta.tool_calls or []:
                            fn = frag.function
                            assembler.add(frag.index, frag.id, fn.name if fn else None, fn.arguments if fn else None)
                    if choice.finish_reason:
                        reason = choice.finish_reason
                        for call in assembler.finish():  # emitted now; the usage chunk may follow
                            yield ToolCallChunk(call)
                            reason = "tool_calls"  # Gemini and Ollama report "stop" with tool calls
        for call in assembler.finish():  # a server that never sent finish_reason
            yield ToolCallChunk(call)
            reason = "tool_calls"
        yield Finish(_FINISH_REASONS.get(reason or "stop", "stop"), usage)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Close the HTTP client (idempotent; a later call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
