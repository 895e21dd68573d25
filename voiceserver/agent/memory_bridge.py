"""Memory's working-memory tool, bound to one turn's thread and resource (the records a run saves, and reading
the history back, are in :mod:`voiceserver.runs.records`)."""

from __future__ import annotations

from typing import Any

from ..runs.tool_context import ToolContext
from .tools import Tool

WORKING_MEMORY_TOOL = "update-working-memory"


def working_memory_tool(memory: Any, spec: dict[str, Any], resource_id: str, thread_id: str) -> Tool:
    """The ``update-working-memory`` tool Memory offers, bound to this turn's thread and resource."""
    parameters = spec.get("parameters") or {"type": "object", "properties": {"memory": {"type": "string"}},
                                             "required": ["memory"]}

    async def execute(args: dict[str, Any], ctx: ToolContext) -> Any:
        props = list((parameters.get("properties") or {}).keys())
        if "working_memory" in args:
            value = args["working_memory"]
        elif "memory" in args:
            value = args["memory"]
        elif len(props) == 1 and props[0] in args:
            value = args[props[0]]
        else:
            value = args
        await memory.update_working_memory(thread_id, resource_id, working_memory=value)
        return {"success": True}

    return Tool(id=WORKING_MEMORY_TOOL, description=spec.get("description") or "Update the working memory.",
                execute=execute, input_schema=parameters, timeout_s=30.0, cancel_on_interrupt=False)
