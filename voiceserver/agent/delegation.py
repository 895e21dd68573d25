"""Sub-agents and workflows offered to the model as tools (the supervisor pattern).

A sub-agent registered as ``agents={"researcher": researcher}`` becomes the tool ``agent-researcher`` with input
``{"prompt": str}``; it answers ``{"text": ...}`` (and ``"object"`` when it returns structured output). A workflow
registered as ``workflows={"booking": wf}`` becomes ``workflow-booking`` with the workflow's input schema; it answers
the workflow's result. Workflows are duck-typed: anything with ``input_schema`` and ``create_run()`` whose run has
``start(input_data=...)`` returning an object with ``status`` and ``result``.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel, Field

from ..runs.tool_context import ToolContext
from ..runs.values import to_jsonable
from .tools import Tool

SUB_AGENT_TIMEOUT_S = 300.0
WORKFLOW_TIMEOUT_S = 600.0


class AgentPrompt(BaseModel):
    """Input of a sub-agent tool."""

    prompt: str = Field(description="What to ask the agent: the task, with all the context it needs.")


def sub_agent_tool(key: str, agent: Any) -> Tool:
    """The tool that delegates to ``agent``."""
    about = (getattr(agent, "description", "") or "").strip() or f"The {getattr(agent, 'name', key)} agent."

    async def execute(input: AgentPrompt, ctx: ToolContext) -> dict[str, Any]:
        result = await agent.generate(input.prompt, context=dict(ctx.context))
        if result.finish_reason == "suspended":
            raise RuntimeError(f"agent {key!r} is waiting for a tool approval (run {result.run_id}); "
                               "it cannot finish inside this call")
        out: dict[str, Any] = {"text": result.text}
        if result.object is not None:
            out["object"] = to_jsonable(result.object)
        return out

    return Tool(id=f"agent-{key}", description=f"Delegate to a sub-agent. {about}", execute=execute,
                input_schema=AgentPrompt, timeout_s=SUB_AGENT_TIMEOUT_S)


def workflow_tool(key: str, workflow: Any) -> Tool:
    """The tool that starts ``workflow`` and waits for its result."""
    about = (getattr(workflow, "description", "") or "").strip() or f"The {key} workflow."
    schema = getattr(workflow, "input_schema", None)
    if not (isinstance(schema, dict) or (isinstance(schema, type) and issubclass(schema, BaseModel))):
        schema = None

    async def execute(input: Any, ctx: ToolContext) -> Any:
        resource_id = ctx.resource_id or ctx.context.get("resource_id")
        try:
            run = workflow.create_run(resource_id=resource_id) if resource_id else workflow.create_run()
        except TypeError:  # a duck-typed workflow without resource ids
            run = workflow.create_run()
        if inspect.isawaitable(run):
            run = await run
        # A voice session passes an observer so the workflow's events reach the caller while it runs.
        observer = ctx.context.get("workflow_observer")
        if callable(observer):
            observer(key, workflow, run)
        data = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
        result = await run.start(input_data=data)
        status = getattr(result, "status", "success")
        if status == "success":
            return getattr(result, "result", None)
        if status == "suspended":
            suspended = list(getattr(result, "suspended", None) or [])
            return {"status": "suspended", "workflow": key, "run_id": getattr(run, "run_id", None),
                    "step": suspended[0] if suspended else None,
                    "suspend_payload": getattr(result, "suspend_payload", None),
                    "message": f"the {key} workflow is waiting for input; it resumes outside this conversation step"}
        error = getattr(result, "error", None)
        raise RuntimeError(f"workflow {key!r} ended with status {status}" + (f": {error}" if error else ""))

    return Tool(id=f"workflow-{key}", description=f"Run a workflow. {about}", execute=execute, input_schema=schema,
                timeout_s=WORKFLOW_TIMEOUT_S)
