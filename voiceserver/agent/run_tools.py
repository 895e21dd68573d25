"""The tool half of an agent run: resolve the model's calls (approval, validation), run them concurrently, record
their outcomes exactly once, and stop them on abort (cancelling those that allow it).

Composed into :class:`~voiceserver.agent.run.AgentRun` as ``run.calls``; it reads and writes the run's state.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..llm.base import ChatMessage, ToolCall
from ..logs import log_context
from ..runs.tool_context import ToolContext
from .chunks import PendingToolCall, StepResult, ToolCallRecord, ToolResultRecord
from .memory_bridge import WORKING_MEMORY_TOOL
from .tools import Tool, ToolOutcome

if TYPE_CHECKING:
    from .run import AgentRun

TOOL_CANCEL_GRACE_S = 5.0  # how long an abort waits for cancelled tools to unwind

Running = tuple[asyncio.Task[ToolOutcome], ToolCall, Tool]


class RunTools:
    """Executes the tool calls of one run (see the module notes)."""

    def __init__(self, run: AgentRun, max_parallel: int):
        # Held weakly: the run holds this as ``run.calls``, and a strong reference back would make every run a
        # reference cycle, left (with its prompt and chunks) for a full collection, which a served process runs
        # rarely (server/run.py). Whatever outlives the run's own calls holds the run itself (finish_in_background).
        self._run = weakref.ref(run)
        self.running: dict[str, Running] = {}
        self._slots = asyncio.Semaphore(max_parallel)

    @property
    def run(self) -> AgentRun:
        run = self._run()
        if run is None:  # pragma: no cover - a caller that outlived the run without holding it is a bug
            raise RuntimeError("the agent run these tool calls belong to is gone")
        return run

    async def resolve(self, calls: list[ToolCall]) -> None:
        """Decide each call: an error the model sees, waiting for approval, or run now (concurrently)."""
        run = self.run
        to_run: list[tuple[ToolCall, Tool]] = []
        for call in calls:
            if call.id in run.state.outcomes or any(p.tool_call_id == call.id for p in run.state.pending):
                continue
            tool = run.tools.get(call.name)
            if run.opts.tool_choice == "none":
                await self.record(call, ToolOutcome("error", "tools are disabled for this request"))
            elif tool is None:
                known = ", ".join(sorted(run.tools)) or "none"
                await self.record(call, ToolOutcome("error", f"unknown tool {call.name!r}; available tools: {known}"))
            elif self._needs_approval(call, tool):
                try:
                    tool.parse_args(call.arguments)
                except ValueError as exc:  # do not ask a person to approve arguments that cannot run
                    await self.record(call, ToolOutcome("error", f"invalid arguments for tool {call.name!r}: {exc}"))
                    continue
                run.state.pending.append(PendingToolCall(call.id, call.name, call.arguments, "approval"))
            else:
                to_run.append((call, tool))
        await self.execute(to_run)

    def _needs_approval(self, call: ToolCall, tool: Tool) -> bool:
        if call.name == WORKING_MEMORY_TOOL or call.id in self.run.state.approved:
            return False
        return bool(self.run.opts.require_tool_approval or tool.require_approval)

    async def execute(self, pairs: list[tuple[ToolCall, Tool]], resume_data: Any = None) -> None:
        """Run the calls concurrently (at most ``max_parallel`` at once) and record each outcome as it ends."""
        run = self.run
        target = run.opts.memory
        tasks: dict[asyncio.Task[ToolOutcome], ToolCall] = {}
        for call, tool in pairs:
            ctx = ToolContext(run_id=run.state.run_id, tool_call_id=call.id, tool_name=call.name, agent=run.agent,
                              resource_id=target[0] if target else None, thread_id=target[1] if target else None,
                              context=run.opts.context, resume_data=resume_data, memory=run.memory,
                              suspend_schema=tool.suspend_schema)
            task = asyncio.create_task(self._run_one(tool, call, ctx), name=f"tool-{call.name}-{call.id}")
            tasks[task] = call
            self.running[call.id] = (task, call, tool)
        waiting = set(tasks)
        while waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                call = tasks[task]
                self.running.pop(call.id, None)
                await self.record(call, task_outcome(task))

    async def _run_one(self, tool: Tool, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        if ctx.resume_data is not None:
            try:
                ctx.resume_data = tool.parse_resume_data(ctx.resume_data)
            except ValueError as exc:
                return ToolOutcome("error", f"invalid resume data for tool {call.name!r}: {exc}")
        async with self._slots:
            return await tool.run(call.arguments, ctx)

    async def record(self, call: ToolCall, outcome: ToolOutcome, *, emit: bool = True) -> None:
        """Keep a call's outcome (never run again), for the state, memory and the stream."""
        state = self.run.state
        if outcome.status == "suspended":
            state.pending.append(PendingToolCall(call.id, call.name, call.arguments, "suspended",
                                                 outcome.suspend_payload))
            return
        state.outcomes[call.id] = outcome
        base = {"tool_call_id": call.id, "tool_name": call.name, "args": call.arguments}
        if outcome.status != "denied":
            value = outcome.value if outcome.status == "ok" else outcome.model_content()
            state.tool_results.append(ToolResultRecord(call.id, call.name, call.arguments, value, outcome.is_error))
        self.run.turn.add_tool_result(call, outcome)
        if not emit:
            return
        if outcome.status == "ok":
            await self.run.emit("tool-result", {**base, "result": outcome.value})
        elif outcome.status == "denied":
            await self.run.emit("tool-output-denied", {**base, "reason": outcome.value or None})
        else:
            await self.run.emit("tool-error", {**base, "error": outcome.model_content().removeprefix("Error: ")})

    async def complete_step(self) -> None:
        """Every call of the current step has an outcome: feed them to the model as tool messages."""
        state = self.run.state
        cur = state.current_step
        assert cur is not None
        results = []
        for call in cur.calls:
            outcome = state.outcomes[call.id]
            state.messages.append(ChatMessage("tool", outcome.model_content(), tool_call_id=call.id, name=call.name))
            results.extend(r for r in state.tool_results if r.tool_call_id == call.id)
        calls = [ToolCallRecord(c.id, c.name, c.arguments) for c in cur.calls]
        state.current_step = None
        await self.run.step_finished(StepResult(cur.step, cur.text, calls, results, cur.finish_reason, cur.usage))

    async def stop(self, *, cancel_all: bool) -> list[Running]:
        """Cancel running tools that allow it; return the others, which finish in the background."""
        cancelled, background = [], []
        for task, call, tool in list(self.running.values()):
            if task.done():
                await self.record(call, task_outcome(task), emit=False)
            elif tool.cancel_on_interrupt or cancel_all:
                task.cancel()
                cancelled.append((task, call))
            else:
                background.append((task, call, tool))
        self.running.clear()
        if cancelled:
            await asyncio.wait([t for t, _ in cancelled], timeout=TOOL_CANCEL_GRACE_S)
            for task, call in cancelled:
                outcome = task_outcome(task) if task.done() else ToolOutcome("cancelled")
                await self.record(call, outcome, emit=False)
        return background

    def finish_in_background(self, task: asyncio.Task[ToolOutcome], call: ToolCall) -> Coroutine[Any, Any, None]:
        """A non-cancellable tool outlived an abort: a coroutine that records its result once it ends (it is never
        run again). It holds the run until then."""
        return self._finish_in_background(self.run, task, call)

    async def _finish_in_background(self, run: AgentRun, task: asyncio.Task[ToolOutcome], call: ToolCall) -> None:
        try:
            outcome = await task
        except asyncio.CancelledError:
            outcome = ToolOutcome("cancelled")
        with log_context(run_id=run.state.run_id):
            await self.record(call, outcome, emit=False)
            await run.turn.save_background_call(call.id)
            await run.persist()
            run.log.info("tool finished after the run was aborted", fields={"tool": call.name,
                                                                            "status": outcome.status})


def task_outcome(task: asyncio.Task[ToolOutcome]) -> ToolOutcome:
    if task.cancelled():
        return ToolOutcome("cancelled")
    exc = task.exception()
    if exc is not None:
        return ToolOutcome("error", f"{type(exc).__name__}: {exc}")
    return task.result()
