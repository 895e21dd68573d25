"""What a network run needs from the agent it routes for, and from that agent's tools, sub-agents and workflows.

An agent network (:mod:`voiceserver.network`) works over these Protocols only: it never sees the
:class:`~voiceserver.agent.Agent` class or anything private of it, so the network package does not import the agent
package (the agent offers ``agent.network(...)`` by calling the network's public entry points; the dependency runs one
way). :class:`voiceserver.agent.Agent` satisfies :class:`NetworkHost`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..llm.base import ChatModel
from .store import RunStore
from .tool_context import ToolContext


class RunnableTool(Protocol):
    """A tool a network can call directly (``voiceserver.agent.Tool`` is one)."""

    description: str
    require_approval: bool
    suspend_schema: Any

    def parameters_schema(self) -> dict[str, Any]: ...

    def parse_args(self, args: dict[str, Any]) -> Any: ...

    def parse_resume_data(self, data: Any) -> Any: ...

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any: ...


class AgentRunHandle(Protocol):
    """A sub-agent's run as the network follows it: chunks (``type``, ``payload``), then a result."""

    run_id: str

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def result(self) -> Any: ...


class SubAgent(Protocol):
    """An agent the network may hand a task to (its result: ``text``, ``finish_reason``, ``pending``, ``object``,
    ``usage``, as :class:`voiceserver.agent.AgentResult`)."""

    name: str
    description: str
    memory: Any

    def stream(self, input: Any, **options: Any) -> AgentRunHandle: ...

    async def approve_tool_call(self, *, run_id: str, tool_call_id: str | None = None,
                                **options: Any) -> AgentRunHandle: ...

    async def decline_tool_call(self, *, run_id: str, tool_call_id: str | None = None, reason: str | None = None,
                                **options: Any) -> AgentRunHandle: ...

    async def resume_stream(self, resume_data: Any = None, *, run_id: str, tool_call_id: str | None = None,
                            **options: Any) -> AgentRunHandle: ...


class HistoryWindowStore(Protocol):
    """Where each thread's history window starts (:class:`voiceserver.runs.prompt.HistoryWindows`)."""

    def get(self, key: Hashable) -> Any: ...

    def set(self, key: Hashable, window: Any) -> None: ...


@runtime_checkable
class NetworkHost(Protocol):
    """What a network run needs from its routing agent: identity, model and instructions, memory and storage, the
    primitives it routes over, and its prompt budget."""

    id: str
    memory: Any
    default_options: dict[str, Any]
    prompt_budget_tokens: int
    tools: Mapping[str, Any]
    agents: Mapping[str, Any]
    workflows: Mapping[str, Any]

    @property
    def storage(self) -> RunStore: ...

    @property
    def history_windows(self) -> HistoryWindowStore: ...

    async def get_model(self) -> ChatModel: ...

    async def resolve_instructions(self, override: Any = None, ctx: Any = None) -> str: ...


def is_workflow(obj: Any) -> bool:
    """Anything with ``input_schema`` and ``create_run()`` is run as a workflow (duck-typed, as Mastra's)."""
    return callable(getattr(obj, "create_run", None)) and hasattr(obj, "input_schema")


def is_tool(obj: Any) -> bool:
    """Anything that runs like a :class:`RunnableTool` (``voiceserver.agent.Tool`` does)."""
    return all(callable(getattr(obj, name, None)) for name in ("run", "parameters_schema", "parse_args")) \
        and isinstance(getattr(obj, "description", None), str)
