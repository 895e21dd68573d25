"""The tool loop of one run: model call, tools, approval and suspension, structured output, memory, abort.

One :class:`AgentRun` drives one :class:`~voiceserver.agent.stream.AgentStream`: a fresh run from its input, or a
suspended run continued by an approval, a decline or a resume. The loop:

1. build the request (instructions, memory system message and history, input), stream the model, emit chunks;
2. no tool calls: the step is the answer (structured output and output processors apply), save memory, finish;
3. tool calls: validate arguments, stop for approval where needed, run the others concurrently, feed the results
   back as "tool" messages, and go round again until there are no tool calls or ``max_steps`` model calls were made.

A tool call id is executed at most once per run: outcomes are recorded in the run state (and in the RunStore when the
run was ever suspended), and calls the model repeats with an id already used get a fresh id.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engines import ProviderError
from ..llm.base import ChatMessage, ChatModel, ChatRequest, Finish, TextDelta, ToolCall, ToolCallChunk, ToolSpec, Usage
from ..logs import get_logger, log_context
from ..storage import RunRecord
from .chunks import AgentChunk, AgentResult, PendingToolCall, StepResult, ToolCallRecord, ToolResultRecord
from .errors import AgentError, StructuredOutputError
from .memory_bridge import WORKING_MEMORY_TOOL, history_to_chat, message_field, recalled_system_message
from .messages import last_user_text, sanitize_tool_pairs
from .processors import RunContext, TripWire, run_input_processors, run_output_processors
from .run_state import CurrentStep, RunState
from .structured import StructuredOutput, parse_partial_json
from .tools import Tool, ToolContext, ToolOutcome
from .turn_memory import TurnMemory

if TYPE_CHECKING:
    from .agent import Agent
    from .stream import AgentStream

log = get_logger("AGENT")
TOOL_CANCEL_GRACE_S = 5.0  # how long an abort waits for cancelled tools to unwind
MAX_PARTIAL_OBJECT_CHARS = 32_000
STRUCTURE_PROMPT = ("Now give your final answer as one JSON value that matches the response schema. "
                    "Answer with the JSON only.")


@dataclass
class RunOptions:
    """The generate/stream options after validation."""

    max_steps: int = 5
    tool_choice: str = "auto"
    instructions: Any = None
    structured: StructuredOutput | None = None
    require_tool_approval: bool = False
    memory: tuple[str, str] | None = None  # (resource, thread)
    context: dict[str, Any] = field(default_factory=dict)
    model_settings: dict[str, Any] = field(default_factory=dict)
    on_finish: Any = None
    on_step_finish: Any = None
    on_chunk: Any = None


@dataclass
class ResumeAction:
    kind: str  # "approve" | "decline" | "resume"
    tool_call_id: str
    reason: str | None = None
    data: Any = None


@dataclass
class _StepOut:
    text: str
    calls: list[ToolCall]
    finish_reason: str
    usage: Usage


class AgentRun:
    """Executes one run for an :class:`AgentStream` (see the module notes)."""

    def __init__(self, agent: Agent, state: RunState, opts: RunOptions, *, input_messages: list[ChatMessage],
                 action: ResumeAction | None = None, persisted: bool = False):
        self.agent = agent
        self.state = state
        self.opts = opts
        self.input = input_messages
        self.action = action
        self.persisted = persisted
        self.stream: AgentStream | None = None
        self.model: ChatModel | None = None
        self.tools: dict[str, Tool] = {}
        self.running: dict[str, tuple[asyncio.Task[ToolOutcome], ToolCall, Tool]] = {}
        self.object: Any = None
        self.final_reason: str | None = None
        self.memory = agent.memory if opts.memory else None
        self.turn = TurnMemory(agent.memory, opts.memory, state)
        self._tool_slots = asyncio.Semaphore(agent.max_parallel_tools)
        if action is None:
            self.turn.add_input(input_messages)

    # --- entry points (called by AgentStream) ----------------------------------------------------------------------

    async def execute(self, stream: AgentStream) -> AgentResult:
        self.stream = stream
        with log_context(run_id=self.state.run_id):
            await self._emit("start", {"agent_id": self.agent.id, "resumed": self.action is not None})
            try:
                self.model = await self.agent.get_model()
                if self.action is None:
                    await self._prepare()
                    return await self._loop()
                return await self._resume()
            except TripWire as wire:
                return await self._tripwire(wire)

    async def abort(self, stream: AgentStream, heard_text: str | None) -> AgentResult:
        self.stream = stream
        with log_context(run_id=self.state.run_id):
            background = await self._stop_tools(cancel_all=False)
            self.state.status = "aborted"
            await self._emit("abort", {"reason": "cancelled", "heard_text": heard_text})
            await self.turn.save(mode="abort", heard_text=heard_text)
            for task, call, _tool in background:
                self.agent._track_background(self._finish_in_background(task, call))
            if background or self.persisted:
                await self._persist()
            self._schedule_after_turn()
            result = self._result("aborted")
            await self._callback(self.opts.on_finish, result)
            log.info("run aborted", fields={"background_tools": len(background)})
            return result

    async def fail(self, stream: AgentStream, exc: BaseException) -> AgentResult:
        self.stream = stream
        with log_context(run_id=self.state.run_id):
            await self._stop_tools(cancel_all=True)
            if isinstance(exc, AgentError | ProviderError) or isinstance(getattr(exc, "code", None), str):
                error: Exception = exc  # it already carries a code (memory errors do too)
            else:
                error = AgentError("agent_failed", f"{type(exc).__name__}: {exc}")
                log.error("agent run failed", exc_info=exc)
            self.state.status = "failed"
            result = self._result("error", error=error)
            if isinstance(error, AgentError):
                error.result = result
            await self._emit("error", {"error": error, "code": getattr(error, "code", "agent_failed"),
                                       "message": getattr(error, "message", str(error))})
            if self.persisted:
                await self._persist()
            await self._callback(self.opts.on_finish, result)
            return result

    async def apply_heard_text(self, heard_text: str) -> None:
        """After the run ended: make memory hold exactly what the caller heard of the reply."""
        await self.turn.apply_heard_text(heard_text, self.final_reason)

    # --- the loop --------------------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        ctx = self._run_context()
        instructions = await self.agent.resolve_instructions(self.opts.instructions, ctx)
        system = [ChatMessage("system", instructions)] if instructions else []
        history: list[ChatMessage] = []
        if self.memory is not None and self.opts.memory is not None:
            resource, thread = self.opts.memory
            await self.agent._wait_after_turn((resource, thread))
            mctx = await self.memory.prepare(resource_id=resource, thread_id=thread, query=last_user_text(self.input))
            past = list(getattr(mctx, "history", None) or [])
            if getattr(mctx, "system_message", None):
                system.append(ChatMessage("system", mctx.system_message))
            recalled = recalled_system_message(list(getattr(mctx, "recalled", None) or []),
                                               {message_field(m, "id") for m in past})
            if recalled:
                system.append(ChatMessage("system", recalled))
            history = history_to_chat(past)
            spec = getattr(mctx, "working_memory_tool", None)
            if spec:
                self.state.options["working_memory_tool"] = dict(spec)
        self.tools = self.agent._tools_for_run(self)
        messages = await run_input_processors(self.agent.input_processors, system + history + self.input, ctx)
        self.state.messages = sanitize_tool_pairs(messages)
        self.state.response_start = len(self.state.messages)

    async def _loop(self) -> AgentResult:
        while True:
            first = self.state.step == 0
            specs, choice = self._tool_specs(first)
            schema = self.opts.structured.json_schema() if self.opts.structured and not specs else None
            out = await self._model_step(self.state.step + 1, specs, choice, schema, self.state.messages)
            self.state.step += 1
            content = out.text if out.text or not out.calls else None  # OpenAI's shape for a pure tool call
            self.state.messages.append(ChatMessage("assistant", content, tool_calls=out.calls or None))
            if out.text:
                self.state.text_parts.append(out.text)
                self.turn.add_text(out.text)
            if not out.calls:
                await self._step_finished(StepResult(self.state.step, out.text, [], [], out.finish_reason, out.usage))
                return await self._finish(out.finish_reason, out.text, structured_in_step=schema is not None)
            self.state.current_step = CurrentStep(self.state.step, out.text, out.finish_reason, out.usage, out.calls)
            for call in out.calls:
                self.state.tool_calls.append(ToolCallRecord(call.id, call.name, call.arguments))
                self.turn.add_tool_call(call)
            await self._resolve_calls(out.calls)
            if self.state.pending:
                return await self._suspend()
            await self._complete_step()
            if self.state.step >= self.opts.max_steps:
                return await self._finish("max_steps", "", structured_in_step=False)

    async def _resume(self) -> AgentResult:
        action = self.action
        assert action is not None and self.state.current_step is not None
        self.tools = self.agent._tools_for_run(self)
        pending = next(p for p in self.state.pending if p.tool_call_id == action.tool_call_id)
        self.state.pending.remove(pending)
        call = next(c for c in self.state.current_step.calls if c.id == action.tool_call_id)
        tool = self.tools.get(call.name)
        if action.kind == "decline":
            await self._record(call, ToolOutcome("denied", action.reason or ""))
        elif tool is None:
            await self._record(call, ToolOutcome("error", f"tool {call.name!r} is no longer available"))
        else:
            if action.kind == "approve":
                self.state.approved.add(call.id)
            await self._run_tools([(call, tool)], resume_data=action.data if action.kind == "resume" else None)
        if self.state.pending:
            return await self._suspend()
        await self._complete_step()
        if self.state.step >= self.opts.max_steps:
            return await self._finish("max_steps", "", structured_in_step=False)
        return await self._loop()

    def _tool_specs(self, first: bool) -> tuple[list[ToolSpec], str]:
        if self.opts.tool_choice == "none" or not self.tools:
            return [], "auto"
        specs = [ToolSpec(name, t.description, t.parameters_schema()) for name, t in self.tools.items()]
        # A forced choice applies to the first model call only, so the model can answer after the tool ran.
        return specs, self.opts.tool_choice if first else "auto"

    async def _model_step(self, step: int, specs: list[ToolSpec], choice: str, schema: dict[str, Any] | None,
                          messages: list[ChatMessage]) -> _StepOut:
        assert self.model is not None
        await self._emit("step-start", {"step": step})
        settings = self.opts.model_settings
        request = ChatRequest(messages=list(messages), tools=specs, tool_choice=choice, response_schema=schema,
                              max_tokens=settings.get("max_tokens"), temperature=settings.get("temperature"),
                              stop=settings.get("stop"))
        text_id: str | None = None
        parts: list[str] = []
        calls: list[ToolCall] = []
        finish = Finish()
        last_object: Any = None
        async for chunk in self.model.stream(request):
            if isinstance(chunk, TextDelta):
                if not chunk.text:
                    continue
                if text_id is None:
                    text_id = "txt_" + uuid.uuid4().hex[:12]
                    await self._emit("text-start", {"id": text_id})
                parts.append(chunk.text)
                await self._emit("text-delta", {"id": text_id, "text": chunk.text})
                if schema is not None and sum(map(len, parts)) <= MAX_PARTIAL_OBJECT_CHARS:
                    partial = parse_partial_json("".join(parts))
                    if partial is not None and partial != last_object:
                        last_object = partial
                        await self._emit("object", {"object": partial})
            elif isinstance(chunk, ToolCallChunk):
                call = chunk.call
                if not call.id or call.id in self.state.seen_call_ids:
                    call = ToolCall(ToolCall.new_id(), call.name, call.arguments)  # never reuse an executed id
                self.state.seen_call_ids.add(call.id)
                calls.append(call)
                await self._emit("tool-call", {"tool_call_id": call.id, "tool_name": call.name,
                                               "args": call.arguments})
            elif isinstance(chunk, Finish):
                finish = chunk
        if text_id is not None:
            await self._emit("text-end", {"id": text_id})
        self.state.usage.add(finish.usage)
        reason = "stop" if finish.reason == "tool_calls" and not calls else finish.reason
        return _StepOut("".join(parts), calls, reason, finish.usage)

    # --- tools -----------------------------------------------------------------------------------------------------

    async def _resolve_calls(self, calls: list[ToolCall]) -> None:
        to_run: list[tuple[ToolCall, Tool]] = []
        for call in calls:
            if call.id in self.state.outcomes or any(p.tool_call_id == call.id for p in self.state.pending):
                continue
            tool = self.tools.get(call.name)
            if self.opts.tool_choice == "none":
                await self._record(call, ToolOutcome("error", "tools are disabled for this request"))
            elif tool is None:
                known = ", ".join(sorted(self.tools)) or "none"
                await self._record(call, ToolOutcome("error", f"unknown tool {call.name!r}; available tools: {known}"))
            elif self._needs_approval(call, tool):
                try:
                    tool.parse_args(call.arguments)
                except ValueError as exc:  # do not ask a person to approve arguments that cannot run
                    await self._record(call, ToolOutcome("error", f"invalid arguments for tool {call.name!r}: {exc}"))
                    continue
                self.state.pending.append(PendingToolCall(call.id, call.name, call.arguments, "approval"))
            else:
                to_run.append((call, tool))
        await self._run_tools(to_run)

    def _needs_approval(self, call: ToolCall, tool: Tool) -> bool:
        if call.name == WORKING_MEMORY_TOOL or call.id in self.state.approved:
            return False
        return bool(self.opts.require_tool_approval or tool.require_approval)

    async def _run_tools(self, pairs: list[tuple[ToolCall, Tool]], resume_data: Any = None) -> None:
        tasks: dict[asyncio.Task[ToolOutcome], ToolCall] = {}
        for call, tool in pairs:
            ctx = ToolContext(run_id=self.state.run_id, tool_call_id=call.id, tool_name=call.name, agent=self.agent,
                              resource_id=self.opts.memory[0] if self.opts.memory else None,
                              thread_id=self.opts.memory[1] if self.opts.memory else None,
                              context=self.opts.context, resume_data=resume_data, memory=self.memory,
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
                await self._record(call, _task_outcome(task))

    async def _run_one(self, tool: Tool, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        if ctx.resume_data is not None:
            try:
                ctx.resume_data = tool.parse_resume_data(ctx.resume_data)
            except ValueError as exc:
                return ToolOutcome("error", f"invalid resume data for tool {call.name!r}: {exc}")
        async with self._tool_slots:
            return await tool.run(call.arguments, ctx)

    async def _record(self, call: ToolCall, outcome: ToolOutcome, *, emit: bool = True) -> None:
        if outcome.status == "suspended":
            self.state.pending.append(PendingToolCall(call.id, call.name, call.arguments, "suspended",
                                                      outcome.suspend_payload))
            return
        self.state.outcomes[call.id] = outcome
        base = {"tool_call_id": call.id, "tool_name": call.name, "args": call.arguments}
        if outcome.status != "denied":
            value = outcome.value if outcome.status == "ok" else outcome.model_content()
            self.state.tool_results.append(ToolResultRecord(call.id, call.name, call.arguments, value,
                                                            outcome.is_error))
        self.turn.add_tool_result(call, outcome)
        if not emit:
            return
        if outcome.status == "ok":
            await self._emit("tool-result", {**base, "result": outcome.value})
        elif outcome.status == "denied":
            await self._emit("tool-output-denied", {**base, "reason": outcome.value or None})
        else:
            await self._emit("tool-error", {**base, "error": outcome.model_content().removeprefix("Error: ")})

    async def _complete_step(self) -> None:
        cur = self.state.current_step
        assert cur is not None
        results = []
        for call in cur.calls:
            outcome = self.state.outcomes[call.id]
            self.state.messages.append(ChatMessage("tool", outcome.model_content(), tool_call_id=call.id,
                                                   name=call.name))
            results.extend(r for r in self.state.tool_results if r.tool_call_id == call.id)
        calls = [ToolCallRecord(c.id, c.name, c.arguments) for c in cur.calls]
        self.state.current_step = None
        await self._step_finished(StepResult(cur.step, cur.text, calls, results, cur.finish_reason, cur.usage))

    async def _stop_tools(self, *, cancel_all: bool) -> list[tuple[asyncio.Task[ToolOutcome], ToolCall, Tool]]:
        """Cancel running tools that allow it; return the others, which finish in the background."""
        cancelled, background = [], []
        for task, call, tool in list(self.running.values()):
            if task.done():
                await self._record(call, _task_outcome(task), emit=False)
            elif tool.cancel_on_interrupt or cancel_all:
                task.cancel()
                cancelled.append((task, call))
            else:
                background.append((task, call, tool))
        self.running.clear()
        if cancelled:
            await asyncio.wait([t for t, _ in cancelled], timeout=TOOL_CANCEL_GRACE_S)
            for task, call in cancelled:
                outcome = _task_outcome(task) if task.done() else ToolOutcome("cancelled")
                await self._record(call, outcome, emit=False)
        return background

    async def _finish_in_background(self, task: asyncio.Task[ToolOutcome], call: ToolCall) -> None:
        """A non-cancellable tool outlived an abort: record its result once it ends (it is never run again)."""
        try:
            outcome = await task
        except asyncio.CancelledError:
            outcome = ToolOutcome("cancelled")
        with log_context(run_id=self.state.run_id):
            await self._record(call, outcome, emit=False)
            await self.turn.save_background_call(call.id)
            await self._persist()
            log.info("tool finished after the run was aborted", fields={"tool": call.name, "status": outcome.status})

    # --- endings ---------------------------------------------------------------------------------------------------

    async def _finish(self, reason: str, last_text: str, *, structured_in_step: bool) -> AgentResult:
        if self.opts.structured is not None:
            self.object = await self._structured_object(last_text, structured_in_step)
        text = "".join(self.state.text_parts)
        if self.agent.output_processors:
            processed = await run_output_processors(self.agent.output_processors, text, self._run_context())
            if processed != text:
                self.turn.replace_text(processed)
                self.state.text_parts = [processed]
        assert self.stream is not None
        self.stream.finishing = True
        self.state.status = "finished"
        await self.turn.save(mode="finish")
        if self.persisted:
            await self._persist()
        result = self._result(reason)
        await self._emit("finish", {"finish_reason": reason, "text": result.text, "usage": _usage(result.usage),
                                    "object": self.opts.structured.object_json(self.object)
                                    if self.opts.structured and self.object is not None else None})
        self._schedule_after_turn()
        await self._callback(self.opts.on_finish, result)
        return result

    async def _structured_object(self, last_text: str, structured_in_step: bool) -> Any:
        so = self.opts.structured
        assert so is not None
        text = last_text
        if not structured_in_step:
            try:
                obj = so.validate(last_text) if last_text.strip() else None
            except StructuredOutputError:
                obj = None
            if obj is not None:
                await self._emit("object-result", {"object": so.object_json(obj)})
                return obj
            # The conversational steps are done; one more call, without tools, in JSON mode.
            messages = [*self.state.messages, ChatMessage("user", STRUCTURE_PROMPT)]
            out = await self._model_step(self.state.step + 1, [], "auto", so.json_schema(), messages)
            self.state.step += 1
            await self._step_finished(StepResult(self.state.step, out.text, [], [], out.finish_reason, out.usage))
            text = out.text
        try:
            obj = so.validate(text)
        except StructuredOutputError as exc:
            if so.error_strategy == "strict":
                raise
            log.warning(f"structured output did not validate ({so.error_strategy}): {exc.message}")
            if so.error_strategy == "warn":
                return None
            obj = so.fallback_value
        await self._emit("object-result", {"object": so.object_json(obj)})
        return obj

    async def _suspend(self) -> AgentResult:
        assert self.stream is not None
        self.stream.finishing = True
        self.state.status = "suspended"
        await self.turn.save(mode="suspend")
        await self._persist()  # before the approval chunk: an approval may arrive the moment it is seen
        for p in self.state.pending:
            base = {"tool_call_id": p.tool_call_id, "tool_name": p.tool_name, "args": p.args}
            if p.kind == "approval":
                await self._emit("tool-call-approval", base)
            else:
                await self._emit("tool-call-suspended", {**base, "suspend_payload": p.suspend_payload})
        result = self._result("suspended")
        await self._emit("finish", {"finish_reason": "suspended", "text": result.text, "usage": _usage(result.usage),
                                    "object": None, "pending": [p.tool_call_id for p in self.state.pending]})
        await self._callback(self.opts.on_finish, result)
        return result

    async def _tripwire(self, wire: TripWire) -> AgentResult:
        assert self.stream is not None
        self.stream.finishing = True
        self.state.status = "finished"
        self.turn.drop_unsaved()  # a guardrail that aborts saves nothing
        await self._emit("tripwire", {"reason": wire.reason, "processor": wire.processor})
        if self.persisted:
            await self._persist()
        result = self._result("tripwire")
        result.tripwire_reason = wire.reason
        await self._emit("finish", {"finish_reason": "tripwire", "text": result.text, "usage": _usage(result.usage),
                                    "object": None})
        await self._callback(self.opts.on_finish, result)
        return result

    # --- memory and persistence ------------------------------------------------------------------------------------

    def _schedule_after_turn(self) -> None:
        if self.memory is None or self.opts.memory is None or not hasattr(self.memory, "after_turn"):
            return
        saved = list(self.turn.saved_messages)
        if not saved:
            return
        resource, thread = self.opts.memory
        self.agent._schedule_after_turn(
            (resource, thread),
            self.memory.after_turn(resource_id=resource, thread_id=thread, messages=saved, model=self.model),
        )

    async def _persist(self) -> None:
        resource, thread = self.opts.memory if self.opts.memory else (None, None)
        record = RunRecord(kind="agent", run_id=self.state.run_id, owner_id=self.agent.id, status=self.state.status,
                           snapshot=self.state.to_json(), resource_id=resource, thread_id=thread)
        await self.agent.storage.save_run(record)
        self.persisted = True

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _run_context(self) -> RunContext:
        resource, thread = self.opts.memory if self.opts.memory else (None, None)
        return RunContext(agent_id=self.agent.id, run_id=self.state.run_id, resource_id=resource, thread_id=thread,
                          context=self.opts.context)

    async def _emit(self, type: str, payload: dict[str, Any]) -> None:
        assert self.stream is not None
        chunk = AgentChunk(type, self.state.run_id, payload, from_agent=self.agent.id)  # type: ignore[arg-type]
        self.stream.emit(chunk)
        await self._callback(self.opts.on_chunk, chunk)

    async def _step_finished(self, step: StepResult) -> None:
        self.state.steps.append(step)
        await self._emit("step-finish", {"step": step.step, "finish_reason": step.finish_reason, "text": step.text,
                                         "tool_calls": [c.tool_call_id for c in step.tool_calls],
                                         "usage": _usage(step.usage)})
        await self._callback(self.opts.on_step_finish, step)

    async def _callback(self, fn: Any, arg: Any) -> None:
        if fn is None:
            return
        try:
            out = fn(arg)
            if inspect.isawaitable(out):
                await out
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"callback {getattr(fn, '__name__', fn)!r} failed")

    def _result(self, reason: str, error: Exception | None = None) -> AgentResult:
        self.final_reason = reason
        s = self.state
        return AgentResult(
            run_id=s.run_id, text="".join(s.text_parts), finish_reason=reason, tool_calls=list(s.tool_calls),
            tool_results=list(s.tool_results), usage=Usage(s.usage.prompt_tokens, s.usage.completion_tokens),
            object=self.object, steps=list(s.steps), pending=list(s.pending),
            response_messages=list(s.messages[s.response_start:]), error=error,
        )


def _task_outcome(task: asyncio.Task[ToolOutcome]) -> ToolOutcome:
    if task.cancelled():
        return ToolOutcome("cancelled")
    exc = task.exception()
    if exc is not None:
        return ToolOutcome("error", f"{type(exc).__name__}: {exc}")
    return task.result()


def _usage(u: Usage) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}
