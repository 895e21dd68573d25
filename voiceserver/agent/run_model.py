"""One model call of an agent run: stream the model, emit the chunks, guard against a repeated reply.

A plain-text step (no response schema) runs behind the :class:`~voiceserver.agent.repetition.RepetitionGuard`
built from the assistant replies already in the prompt: an attempt that repeats one of them is discarded before
anything of it is emitted and the call is made again, with a nudge and freer sampling, each retry guarded the same
way. When every attempt repeats, the step says a short fallback that repeats nothing (:func:`fallback_reply`)
rather than a reply the caller already heard. What streams is what the step returns and what memory stores.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..llm.base import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    Finish,
    PromptRead,
    TextDelta,
    ToolCall,
    ToolCallChunk,
    ToolSpec,
    Usage,
)
from ..logs import get_logger
from ..runs.structured import parse_partial_json
from .repetition import NUDGE, RepetitionGuard, is_repeat

log = get_logger("AGENT")
MAX_PARTIAL_OBJECT_CHARS = 32_000
RETRY_TEMPERATURES = (0.8, 1.0)  # the attempts after a repeat sample more and more freely (at least these)
RETRY_TEMPERATURE = RETRY_TEMPERATURES[0]
# Said when every attempt repeated an earlier reply: the first that repeats nothing said before (the last ones are
# one word, which the guard never counts as a repeat).
FALLBACK_TO_QUESTION = ("I'm not sure about that.", "Sorry, I don't know that one.", "Hmm.")
FALLBACK_TO_STATEMENT = ("Okay, got it.", "Understood.", "Okay.")
# A message that starts with one of these asks for something even without a question mark (speech-to-text often
# writes a request as a sentence): it gets the "not sure" fallback, not an acknowledgement.
REQUEST_WORDS = frozenset({"tell", "give", "say", "explain", "describe", "show", "list", "name", "recommend",
                           "suggest", "find", "what", "who", "where", "when", "why", "how", "which", "can", "could",
                           "would", "will", "do", "does", "did", "is", "are", "please"})

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class StepOut:
    """What one model call produced."""

    text: str
    calls: list[ToolCall]
    finish_reason: str
    usage: Usage
    retried: bool = False  # the first attempt repeated an earlier reply and was discarded


@dataclass
class _Attempt:
    parts: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    finish: Finish = field(default_factory=Finish)
    repeated: bool = False
    caught: str = ""  # a repeated attempt: its words so far, and the earlier text they repeat (for the debug log)
    matched: str = ""


class ModelStep:
    """Streams one model call for a run. ``seen_call_ids`` are the tool call ids the run has already used."""

    def __init__(self, model: ChatModel, emit: Emit, seen_call_ids: set[str]):
        self.model = model
        self.emit = emit
        self.seen_call_ids = seen_call_ids
        self._text_id: str | None = None

    async def run(self, request: ChatRequest, *, earlier_replies: list[str], question: str | None = None) -> StepOut:
        """Stream ``request``; with ``earlier_replies`` or a ``question`` (and no response schema) behind the
        repetition guard. The start of a reply may repeat neither (an echo of the question counts); the rest of it
        may not copy a long run of an earlier reply (restating the question is fine there: "Here is a short story
        about a robot who...")."""
        starts = [*earlier_replies, question] if question else list(earlier_replies)
        guarded = request.response_schema is None and bool(starts)

        def guard(*extra: str) -> RepetitionGuard:
            return RepetitionGuard([*starts, *extra], copy_from=earlier_replies)

        attempt = await self._attempt(request, guard() if guarded else None)
        usage = _copy_usage(attempt.finish.usage)
        retried = False
        for temperature in RETRY_TEMPERATURES:
            if not attempt.repeated:
                break
            log.info("the reply repeated an earlier reply; generating it again",
                     fields={"code": "reply_repeat_caught"})
            # Which words of which earlier text: conversation content, so at debug level only.
            log.debug("the repeated text", fields={"attempt": attempt.caught, "earlier": attempt.matched})
            # The retry is guarded against the nudge too: a small model may read the nudge back as its answer,
            # and the caller must never hear our own instruction.
            attempt, retried = await self._attempt(nudged(request, temperature),
                                                   guard(NUDGE)), True
            usage.add(attempt.finish.usage)
        if attempt.repeated:
            log.warning("every attempt repeated an earlier reply; saying a short fallback instead",
                        fields={"code": "reply_repeated"})
            log.debug("the repeated text", fields={"attempt": attempt.caught, "earlier": attempt.matched})
            attempt = _Attempt(finish=Finish(reason="stop"))
            await self._text(attempt, fallback_reply(request.messages, starts))
        if self._text_id is not None:
            await self.emit("text-end", {"id": self._text_id})
        reason = attempt.finish.reason
        if reason == "tool_calls" and not attempt.calls:
            reason = "stop"
        return StepOut("".join(attempt.parts), attempt.calls, reason, usage, retried)

    async def _attempt(self, request: ChatRequest, guard: RepetitionGuard | None) -> _Attempt:
        out = _Attempt()
        schema = request.response_schema
        last_object: Any = None
        stream = self.model.stream(request)
        prompt_usage, deltas = Usage(), 0  # for a reply cut short, which never sees the model's Finish
        try:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    if not chunk.text:
                        continue
                    deltas += 1
                    text = guard.feed(chunk.text) if guard is not None else chunk.text
                    if guard is not None and guard.repeated:
                        out.repeated = True
                        break  # stop the model now: this attempt is discarded
                    await self._text(out, text)
                    if guard is not None and guard.cut:
                        # It went on to copy an earlier reply: the reply ends before the copy.
                        log.info("the reply began to copy an earlier reply; it ends there",
                                 fields={"code": "reply_copy_cut"})
                        log.debug("the copied words", fields={"copied": " ".join(guard.copied)})
                        out.finish = Finish(reason="stop", usage=dataclasses.replace(
                            prompt_usage, completion_tokens=deltas))
                        break
                    if schema is not None and sum(map(len, out.parts)) <= MAX_PARTIAL_OBJECT_CHARS:
                        partial = parse_partial_json("".join(out.parts))
                        if partial is not None and partial != last_object:
                            last_object = partial
                            await self.emit("object", {"object": partial})
                elif isinstance(chunk, ToolCallChunk):
                    if guard is not None:  # a step that calls tools is not a parroted answer
                        await self._text(out, guard.release())
                        guard = None
                    call = chunk.call
                    if not call.id or call.id in self.seen_call_ids:
                        call = ToolCall(ToolCall.new_id(), call.name, call.arguments)  # never reuse an executed id
                    self.seen_call_ids.add(call.id)
                    out.calls.append(call)
                    await self.emit("tool-call", {"tool_call_id": call.id, "tool_name": call.name,
                                                  "args": call.arguments})
                elif isinstance(chunk, PromptRead):
                    prompt_usage = chunk.usage
                    await self.emit("prompt-read", {"usage": {"prompt_tokens": chunk.usage.prompt_tokens,
                                                              "cached_tokens": chunk.usage.cached_tokens}})
                elif isinstance(chunk, Finish):
                    out.finish = chunk
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        if guard is not None and not out.repeated:
            await self._text(out, guard.finish())
            out.repeated = guard.repeated
        if out.repeated:
            out.parts = []
            if guard is not None:
                out.caught, out.matched = " ".join(guard.caught), " ".join(guard.matched or [])
        return out

    async def _text(self, out: _Attempt, text: str) -> None:
        if not text:
            return
        if self._text_id is None:
            self._text_id = "txt_" + uuid.uuid4().hex[:12]
            await self.emit("text-start", {"id": self._text_id})
        out.parts.append(text)
        await self.emit("text-delta", {"id": self._text_id, "text": text})


def build_request(messages: list[ChatMessage], specs: list[ToolSpec], choice: str, schema: dict[str, Any] | None,
                  settings: dict[str, Any]) -> ChatRequest:
    """The chat request of one step from the run's messages and ``model_settings``."""
    return ChatRequest(messages=list(messages), tools=specs, tool_choice=choice, response_schema=schema,
                       max_tokens=settings.get("max_tokens"), temperature=settings.get("temperature"),
                       stop=settings.get("stop"))


def nudged(request: ChatRequest, temperature: float = RETRY_TEMPERATURE) -> ChatRequest:
    """The request again, told not to repeat itself, sampling more freely (a higher temperature: the request has
    no repetition penalty of its own; the local model's penalties are its settings, ``llm.*``)."""
    return dataclasses.replace(request, messages=[*request.messages, ChatMessage("system", NUDGE)],
                               temperature=max(request.temperature or 0.0, temperature))


def fallback_reply(messages: list[ChatMessage], earlier: list[str]) -> str:
    """A short reply to the last user message that repeats none of ``earlier``: a plain "not sure" to a question
    or a request, an acknowledgement to anything else."""
    last = next((m.content for m in reversed(messages) if m.role == "user" and isinstance(m.content, str)), "")
    first = last.split(maxsplit=1)[0].strip(",.!").lower() if last.strip() else ""
    asks = last.rstrip().endswith("?") or first in REQUEST_WORDS  # "Tell me a story." asks too
    choices = FALLBACK_TO_QUESTION if asks else FALLBACK_TO_STATEMENT
    return next((text for text in choices if not is_repeat(text, earlier)), choices[-1])


def earlier_replies(messages: list[ChatMessage]) -> list[tuple[str | None, str]]:
    """The assistant replies in a prompt (text only, not tool-call JSON), oldest first, each with the user message
    it answered (None when none came before it)."""
    pairs: list[tuple[str | None, str]] = []
    asked: str | None = None
    for m in messages:
        if m.role == "user":
            asked = m.content if isinstance(m.content, str) else None
        elif m.role == "assistant" and m.content and m.content.strip():
            pairs.append((asked, m.content))
    return pairs


def _copy_usage(usage: Usage) -> Usage:
    return dataclasses.replace(usage)


def usage_json(usage: Usage) -> dict[str, int]:
    """A Usage as the stream's payloads carry it."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens, "total_tokens": usage.total_tokens}
