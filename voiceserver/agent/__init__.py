"""The agent library: Agent, tools, the tool loop, approval and suspension, structured output, stream chunks.

See docs/agents.md for a guide. The public names:

- :class:`Agent` (``generate``, ``stream``, ``approve_tool_call``, ``decline_tool_call``, ``resume_stream``)
- :func:`create_tool`, :func:`tool`, :class:`Tool`, :class:`ToolContext`
- :class:`AgentStream`, :class:`AgentChunk`, :class:`AgentResult`
- :class:`Processor`, :class:`TripWire` for input/output guardrails
- :func:`build_agents`, :func:`load_object` for agents declared in the settings
"""

from .agent import Agent
from .chunks import AgentChunk, AgentResult, PendingToolCall, StepResult, ToolCallRecord, ToolResultRecord
from .config import build_agents, load_object, load_tool
from .errors import AgentConfigError, AgentError, StructuredOutputError, ToolDefinitionError
from .processors import Processor, ProcessorContext, RunContext, TripWire
from .stream import AgentStream
from .tools import Tool, ToolContext, create_tool, tool

__all__ = [
    "Agent", "AgentChunk", "AgentConfigError", "AgentError", "AgentResult", "AgentStream", "PendingToolCall",
    "Processor", "ProcessorContext", "RunContext", "StepResult", "StructuredOutputError", "Tool", "ToolCallRecord",
    "ToolContext", "ToolDefinitionError", "ToolResultRecord", "TripWire", "build_agents", "create_tool",
    "load_object", "load_tool", "tool",
]
