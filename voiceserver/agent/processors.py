"""Input and output processors: guardrails and rewrites around the model call.

    class NoSecrets(Processor):
        name = "no-secrets"

        async def process_input(self, messages, ctx):
            if any("password" in (m.content or "") for m in messages if m.role == "user"):
                self.abort("Please do not share passwords.")
            return messages

    agent = Agent(..., input_processors=[NoSecrets()])

Order: memory processors (applied inside ``memory.prepare``) run before the agent's input processors; the agent's
output processors run before anything is saved to memory, and an output processor that aborts saves nothing.
A processor that aborts ends the run with finish_reason "tripwire" and a tripwire chunk carrying the reason.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from ..llm.base import ChatMessage


class TripWire(Exception):  # Mastra's name
    """Raised by :meth:`Processor.abort`; ends the run with finish_reason "tripwire"."""

    def __init__(self, reason: str, processor: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.processor = processor


@dataclass(slots=True)
class RunContext:
    """Who and what a run is for: given to processors and to callable instructions.

    ``context`` is the ``context={...}`` option of generate/stream (request-scoped values such as a user id).
    """

    agent_id: str
    run_id: str
    resource_id: str | None = None
    thread_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.context.get(key, default)


ProcessorContext = RunContext  # the name processors see it by


class Processor:
    """Base class. Override ``process_input`` and/or ``process_output`` (sync or async); both default to no-op."""

    name: str = ""

    def process_input(self, messages: list[ChatMessage], ctx: RunContext) -> Any:
        """Return the (possibly changed) messages sent to the model: instructions, memory, history and input."""
        return messages

    def process_output(self, text: str, ctx: RunContext) -> Any:
        """Return the (possibly changed) final text, saved to memory and returned as ``result.text``."""
        return text

    def abort(self, reason: str) -> None:
        """Stop the run: nothing more is sent to the model and nothing is saved."""
        raise TripWire(reason, self.name or type(self).__name__)


async def run_input_processors(processors: list[Processor], messages: list[ChatMessage],
                               ctx: RunContext) -> list[ChatMessage]:
    """Run each processor's ``process_input`` in order; one returning None keeps the messages as they were."""
    for processor in processors:
        out = await _maybe_await(processor.process_input(messages, ctx))
        if out is not None:
            messages = list(out)
    return messages


async def run_output_processors(processors: list[Processor], text: str, ctx: RunContext) -> str:
    """Run each processor's ``process_output`` in order; one returning None keeps the text as it was."""
    for processor in processors:
        out = await _maybe_await(processor.process_output(text, ctx))
        if out is not None:
            text = str(out)
    return text


async def _maybe_await(value: Any) -> Any:
    """Processor methods may be sync or async: the value itself, or what it resolves to."""
    return await value if inspect.isawaitable(value) else value
