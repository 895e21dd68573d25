"""Running the primitive the routing agent picked: a sub-agent's stream, a workflow run, or a tool call.

Each runner forwards the inner events onto the network stream and returns a :class:`StepOutcome`: the result text,
or ``pending`` when the primitive waits for an approval or a resume (the loop then persists the run and suspends).
The continuations after a suspension (an approved or declined tool call, resume data) go through the same code.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..engines import ProviderError
from ..ids import ID_PATTERN
from ..llm.base import ToolCall
from ..runs.errors import AgentError
from ..runs.ports import RunnableTool
from ..runs.tool_context import ToolContext
from ..runs.values import to_jsonable
from ..workflows.schema import WorkflowError
from .routing import Primitive, result_text

if TYPE_CHECKING:
    from .loop import NetworkRun

DECLINED_TEXT = "The user declined the call of tool {tool!r}; it was not run."


@dataclass
class StepOutcome:
    """What one primitive produced: its result as text, or what it waits for."""

    result: str = ""
    is_error: bool = False
    pending: dict[str, Any] | None = None


@dataclass
class Continuation:
    """How a suspended run goes on. The inner agent or workflow continuation is prepared (and validated) by the
    caller of approve / decline / resume, before the network run is claimed, so bad input leaves it suspended."""

    kind: Literal["approve", "decline", "resume"]
    tool_call_id: str | None = None
    reason: str | None = None
    data: Any = None
    agent_stream: Any = None
    workflow_run: Any = None
    workflow_stream: Any = None


class PrimitiveRunner:
    """Executes primitives for one :class:`~voiceserver.network.loop.NetworkRun`."""

    def __init__(self, run: NetworkRun):
        self.run = run

    # --- agents ----------------------------------------------------------------------------------------------------

    async def agent(self, primitive: Primitive, prompt: str) -> StepOutcome:
        run = self.run
        sub = primitive.target
        memory = None
        if getattr(sub, "memory", None) is not None:
            memory = {"resource": run.state.resource_id, "thread": sub_thread_id(run.state.thread_id, sub)}
        try:
            stream = sub.stream(prompt, memory=memory, context=dict(run.opts.context))
        except AgentError as exc:
            run.emit("agent-execution-start", {"agent_id": primitive.id, "agent_run_id": None, "prompt": prompt,
                                               "iteration": run.state.iteration})
            return self._agent_failed(primitive, None, exc)
        run.emit("agent-execution-start", {"agent_id": primitive.id, "agent_run_id": stream.run_id, "prompt": prompt,
                                           "iteration": run.state.iteration})
        return await self.follow_agent(primitive, stream)

    async def follow_agent(self, primitive: Primitive, stream: Any) -> StepOutcome:
        """Forward a sub-agent's chunks; its result, or the tool calls it waits for."""
        run = self.run
        ids = {"agent_id": primitive.id, "agent_run_id": stream.run_id}
        async for chunk in stream:
            payload = {k: v for k, v in chunk.payload.items() if k != "error"}
            if "error" in chunk.payload:
                payload["error"] = str(chunk.payload["error"])
            run.emit(f"agent-execution-event-{chunk.type}", {**to_jsonable(payload), **ids})
        try:
            result = await stream.result()
        except (AgentError, ProviderError) as exc:
            return self._agent_failed(primitive, stream.run_id, exc)
        run.add_usage(result.usage)
        if result.finish_reason == "suspended" and result.pending:
            calls = [{"tool_call_id": p.tool_call_id, "tool_name": p.tool_name, "args": to_jsonable(p.args),
                      "kind": p.kind, "suspend_payload": to_jsonable(p.suspend_payload)} for p in result.pending]
            return StepOutcome(pending={"kind": "agent", **ids, "calls": calls})
        text = result.text
        if result.object is not None:
            text = result_text({"text": result.text, "object": to_jsonable(result.object)})
        is_error = result.finish_reason in ("error", "aborted", "tripwire")
        if is_error and not text:
            text = f"agent {primitive.id!r} stopped: {result.finish_reason}"
        run.emit("agent-execution-end", {**ids, "result": text, "finish_reason": result.finish_reason,
                                         "iteration": run.state.iteration, "usage": _usage(result.usage)})
        return StepOutcome(text, is_error=is_error)

    def _agent_failed(self, primitive: Primitive, agent_run_id: str | None, exc: Exception) -> StepOutcome:
        message = f"agent {primitive.id!r} failed: {exc}"
        self.run.emit("agent-execution-end", {"agent_id": primitive.id, "agent_run_id": agent_run_id,
                                              "result": message, "finish_reason": "error",
                                              "iteration": self.run.state.iteration, "usage": _usage(None)})
        return StepOutcome(message, is_error=True)

    # --- workflows -------------------------------------------------------------------------------------------------

    async def workflow(self, primitive: Primitive, input_data: Any) -> StepOutcome:
        run = self.run
        wf = primitive.target
        wf_run = await _create_run(wf, run.state.resource_id)
        start = {"workflow_id": primitive.id, "workflow_run_id": wf_run.run_id, "input": input_data,
                 "iteration": run.state.iteration}
        try:
            stream = wf_run.stream(input_data=input_data)
        except (WorkflowError, ValueError) as exc:  # the input does not fit the workflow: the routing agent sees why
            run.emit("workflow-execution-start", start)
            return self._workflow_end(primitive, wf_run.run_id, "failed", None, {"message": str(exc)})
        run.emit("workflow-execution-start", start)
        return await self.follow_workflow(primitive, wf_run, stream)

    async def follow_workflow(self, primitive: Primitive, wf_run: Any, stream: Any) -> StepOutcome:
        """Forward a workflow run's events; its result, or the suspension it waits on."""
        run = self.run
        ids = {"workflow_id": primitive.id, "workflow_run_id": wf_run.run_id}
        try:
            async for event in stream:
                inner = event.get("payload") if isinstance(event, dict) else None
                event_type = event.get("type", "event") if isinstance(event, dict) else "event"
                run.emit(f"workflow-execution-event-{event_type}",
                         {**to_jsonable(inner if isinstance(inner, dict) else {"value": inner}), **ids})
            result = await stream.result()
        except asyncio.CancelledError:
            cancel = getattr(wf_run, "cancel", None)
            if cancel is not None and getattr(wf_run, "running", False):
                await asyncio.shield(cancel())  # a stream reader that leaves does not stop a workflow run
            raise
        status = getattr(result, "status", "success")
        if status == "suspended":
            return StepOutcome(pending={"kind": "workflow", **ids, "suspended": to_jsonable(result.suspended),
                                        "suspend_payload": to_jsonable(result.suspend_payload)})
        return self._workflow_end(primitive, wf_run.run_id, status, getattr(result, "result", None),
                                  getattr(result, "error", None))

    def _workflow_end(self, primitive: Primitive, wf_run_id: str, status: str, value: Any,
                      error: Any) -> StepOutcome:
        self.run.emit("workflow-execution-end", {"workflow_id": primitive.id, "workflow_run_id": wf_run_id,
                                                 "status": status, "result": to_jsonable(value),
                                                 "error": to_jsonable(error), "iteration": self.run.state.iteration})
        if status == "success":
            return StepOutcome(result_text(value))
        detail = (error or {}).get("message") if isinstance(error, dict) else error
        return StepOutcome(f"workflow {primitive.id!r} ended with status {status}" + (f": {detail}" if detail else ""),
                           is_error=True)

    # --- tools -----------------------------------------------------------------------------------------------------

    def tool_needs_approval(self, primitive: Primitive) -> bool:
        return bool(primitive.target.require_approval or self.run.opts.require_tool_approval)

    def new_tool_call(self, primitive: Primitive, args: Any) -> dict[str, Any]:
        return {"tool_call_id": ToolCall.new_id(), "tool_name": primitive.id, "args": to_jsonable(args)}

    async def tool(self, primitive: Primitive, call: dict[str, Any], resume_data: Any = None) -> StepOutcome:
        """Run an approved (or approval-free) tool call; ``resume_data`` when it suspended itself before."""
        run = self.run
        tool: RunnableTool = primitive.target
        run.emit("tool-execution-start", {**call, "iteration": run.state.iteration})
        if resume_data is not None:
            resume_data = tool.parse_resume_data(resume_data)  # validated when the run was claimed
        ctx = ToolContext(run_id=run.state.run_id, tool_call_id=call["tool_call_id"], tool_name=primitive.id,
                          agent=run.agent, resource_id=run.state.resource_id, thread_id=run.state.thread_id,
                          context=dict(run.opts.context), resume_data=resume_data, memory=run.agent.memory,
                          suspend_schema=tool.suspend_schema)
        outcome = await tool.run(call["args"], ctx)
        if outcome.status == "suspended":
            return StepOutcome(pending={"kind": "tool-suspended", **call, "suspend_payload": outcome.suspend_payload})
        text = result_text(outcome.value) if outcome.status == "ok" else outcome.model_content()
        run.emit("tool-execution-end", {**call, "result": outcome.value, "is_error": outcome.is_error,
                                        "declined": False, "iteration": run.state.iteration})
        return StepOutcome(text, is_error=outcome.is_error)

    def declined_tool(self, call: dict[str, Any], reason: str | None) -> StepOutcome:
        text = DECLINED_TEXT.format(tool=call["tool_name"]) + (f" Reason: {reason}" if reason else "")
        self.run.emit("tool-execution-end", {**call, "result": text, "is_error": False, "declined": True,
                                             "reason": reason, "iteration": self.run.state.iteration})
        return StepOutcome(text)

    def input_failed(self, primitive: Primitive, message: str) -> StepOutcome:
        """The routing prompt could not be turned into a valid input: the step fails and the routing agent sees why."""
        run = self.run
        if primitive.type == "tool":
            call = {"tool_call_id": ToolCall.new_id(), "tool_name": primitive.id, "args": None}
            run.emit("tool-execution-start", {**call, "iteration": run.state.iteration})
            run.emit("tool-execution-end", {**call, "result": message, "is_error": True, "declined": False,
                                            "iteration": run.state.iteration})
        else:
            run.emit("workflow-execution-start", {"workflow_id": primitive.id, "workflow_run_id": None,
                                                  "input": None, "iteration": run.state.iteration})
            run.emit("workflow-execution-end", {"workflow_id": primitive.id, "workflow_run_id": None,
                                                "status": "failed", "result": None, "error": {"message": message},
                                                "iteration": run.state.iteration})
        return StepOutcome(message, is_error=True)

    # --- continuing a suspended step -------------------------------------------------------------------------------

    async def continue_pending(self, primitive: Primitive, pending: dict[str, Any],
                               action: Continuation) -> StepOutcome:
        kind = pending["kind"]
        call = {k: pending.get(k) for k in ("tool_call_id", "tool_name", "args")}
        if kind == "tool-approval":
            if action.kind == "decline":
                return self.declined_tool(call, action.reason)
            return await self.tool(primitive, call)
        if kind == "tool-suspended":
            return await self.tool(primitive, call, resume_data=action.data)
        if kind == "agent":
            return await self.follow_agent(primitive, action.agent_stream)
        if kind == "workflow":
            return await self.follow_workflow(primitive, action.workflow_run, action.workflow_stream)
        raise ValueError(f"unknown pending kind {kind!r}")


def sub_thread_id(thread_id: str, sub: Any) -> str:
    """The thread a sub-agent with its own memory uses inside a network: the network's thread plus its id, so its
    prompts and answers do not read as the user's own messages in the network's conversation."""
    candidate = f"{thread_id}-{getattr(sub, 'id', 'agent')}"[:128]
    return candidate if ID_PATTERN.fullmatch(candidate) and ".." not in candidate else thread_id


async def _create_run(workflow: Any, resource_id: str) -> Any:
    try:
        params = inspect.signature(workflow.create_run).parameters
    except (TypeError, ValueError):
        params = {}
    run = workflow.create_run(resource_id=resource_id) if "resource_id" in params else workflow.create_run()
    if inspect.isawaitable(run):
        run = await run
    return run


def _usage(usage: Any) -> dict[str, int]:
    return {"prompt_tokens": getattr(usage, "prompt_tokens", 0),
            "completion_tokens": getattr(usage, "completion_tokens", 0)}
