"""What every kind of run shares: agent runs (:mod:`voiceserver.agent`), network runs (:mod:`voiceserver.network`)
and workflow runs (:mod:`voiceserver.workflows`). It imports none of them; they all import it.

- :mod:`.store` — :class:`RunStore`, :class:`RunRecord`, :class:`InMemoryRunStore`: where suspended runs live
- :mod:`.stream` — :class:`RunStream`, the replayable stream behind AgentStream and NetworkStream
- :mod:`.claims` — claiming a suspended run to continue it, options that survive the suspension
- :mod:`.errors` — :class:`AgentError` (the base of every run error), StructuredOutputError, AgentConfigError
- :mod:`.structured` — structured output: options, schema, partial parsing, validation
- :mod:`.messages` — input messages, snapshots of messages, consistent tool pairs
- :mod:`.records` — the memory records a run saves, and the history read back
- :mod:`.prompt` — a turn's prompt from memory: layout for the prompt cache, token budget, history windows
- :mod:`.tool_context` / :mod:`.values` — what a tool receives; plain JSON values
- :mod:`.ports` — Protocols of what a network needs from an agent (:class:`NetworkHost`), its tools and sub-agents
- :mod:`.loading` — objects by import path
"""

from .claims import claim_suspended_run, persistable_context, restore_structured, save_as_running
from .errors import AgentConfigError, AgentError, StructuredOutputError
from .ports import NetworkHost, RunnableTool, SubAgent, is_tool, is_workflow
from .prompt import ContextReport, HistoryWindows, PromptPlan, layout_prompt
from .store import RUN_KINDS, InMemoryRunStore, RunRecord, RunStore
from .stream import RunStream
from .structured import StructuredOutput
from .tool_context import ToolContext, ToolSuspended

__all__ = [
    "RUN_KINDS", "AgentConfigError", "AgentError", "ContextReport", "HistoryWindows", "InMemoryRunStore",
    "NetworkHost", "PromptPlan", "RunRecord", "RunStore", "RunStream", "RunnableTool", "StructuredOutput",
    "StructuredOutputError", "SubAgent", "ToolContext", "ToolSuspended", "claim_suspended_run", "is_tool",
    "is_workflow", "layout_prompt", "persistable_context", "restore_structured", "save_as_running",
]
