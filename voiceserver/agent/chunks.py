"""What an agent run produces: stream chunks (Mastra's names) and the final result.

Chunk types and their payloads (every chunk also has ``type`` and ``run_id``):

==================== =====================================================================================
start                ``{agent_id, resumed}``
context              ``{prompt_tokens, budget, history_messages, recalled_messages, dropped_history,
                     working_memory, memory_ms, prepare_ms}``: the prompt as laid out, once before the first model
                     call of a fresh run (``prompt_tokens`` is an estimate of the whole prompt; ``budget`` 0 means
                     none; ``memory_ms`` the memory read with recall, ``prepare_ms`` all of the preparation)
step-start           ``{step}`` (1-based model call number)
text-start           ``{id}``
text-delta           ``{id, text}``
text-end             ``{id}``
tool-call            ``{tool_call_id, tool_name, args}``
tool-result          ``{tool_call_id, tool_name, args, result}``
tool-error           ``{tool_call_id, tool_name, args, error}`` (error is a message the model also sees)
tool-call-approval   ``{tool_call_id, tool_name, args}``: the run suspends until approved or declined
tool-call-suspended  ``{tool_call_id, tool_name, args, suspend_payload}``: the tool suspended itself
tool-output-denied   ``{tool_call_id, tool_name, args, reason}``: a declined call
object               ``{object}``: the partial structured object parsed so far
object-result        ``{object}``: the validated structured object (JSON form)
step-finish          ``{step, finish_reason, text, tool_calls, usage}``; ``usage`` is ``{prompt_tokens,
                     completion_tokens, cached_tokens, total_tokens}`` as the model reported them
tripwire             ``{reason, processor}``: a processor aborted the run
finish               ``{finish_reason, text, usage, object}``
error                ``{error, code, message}`` (``error`` is the exception object)
abort                ``{reason, heard_text}``
==================== =====================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..llm.base import ChatMessage, Usage

ChunkType = Literal[
    "start", "context", "step-start", "text-start", "text-delta", "text-end", "tool-call", "tool-result", "tool-error",
    "tool-call-approval", "tool-call-suspended", "tool-output-denied", "object", "object-result", "step-finish",
    "tripwire", "finish", "error", "abort", "prompt-read",
]

FinishReason = Literal[
    "stop", "length", "content_filter", "max_steps", "suspended", "aborted", "error", "tripwire",
]


@dataclass(slots=True)
class AgentChunk:
    """One event of an agent run's stream."""

    type: ChunkType
    run_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    from_agent: str = ""  # the id of the agent that produced it


@dataclass(slots=True)
class ToolCallRecord:
    """A tool call the model made."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]


@dataclass(slots=True)
class ToolResultRecord:
    """The outcome of one tool call. ``is_error`` marks validation failures, exceptions and timeouts."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    result: Any
    is_error: bool = False


@dataclass(slots=True)
class StepResult:
    """One model call and the tools it called."""

    step: int
    text: str
    tool_calls: list[ToolCallRecord]
    tool_results: list[ToolResultRecord]
    finish_reason: str
    usage: Usage


@dataclass(slots=True)
class PendingToolCall:
    """A tool call the run is waiting on: ``kind`` is "approval" or "suspended"."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    kind: Literal["approval", "suspended"]
    suspend_payload: Any = None


@dataclass(slots=True)
class AgentResult:
    """The final outcome of a run (what ``generate`` returns and ``stream.result()`` resolves to).

    ``text`` is everything the model said over all steps (what a caller would have heard); ``object`` the validated
    structured output; ``pending`` the tool calls waiting for approval or resume when ``finish_reason`` is
    "suspended"; ``response_messages`` the assistant and tool messages this run added to the conversation.
    """

    run_id: str
    text: str = ""
    finish_reason: FinishReason | str = "stop"
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_results: list[ToolResultRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    object: Any = None
    steps: list[StepResult] = field(default_factory=list)
    pending: list[PendingToolCall] = field(default_factory=list)
    response_messages: list[ChatMessage] = field(default_factory=list)
    error: Exception | None = None
    tripwire_reason: str | None = None

    @property
    def suspended(self) -> bool:
        return self.finish_reason == "suspended"

    @property
    def suspend_payload(self) -> Any:
        """The payload of the first self-suspended tool call, if any."""
        for p in self.pending:
            if p.kind == "suspended":
                return p.suspend_payload
        return None
