"""The tool loop of one run: model call, tools, approval and suspension, structured output, memory, abort.

One :class:`AgentRun` drives one :class:`~voiceserver.agent.stream.AgentStream`: a fresh run from its input, or a
suspended run continued by an approval, a decline or a resume. The loop:

1. build the prompt (:mod:`.prompt`: instructions, working memory, history, recall, input, within the token
   budget), stream the model (:mod:`.run_model`, behind the repetition guard), emit chunks;
2. no tool calls: the step is the answer (structured output and output processors apply), save memory, finish;
3. tool calls: validate arguments, stop for approval where needed, run the others concurrently, feed the results
   back as "tool" messages, and go round again until there are no tool calls or ``max_steps`` model calls were made.

Tools are run by :class:`~voiceserver.agent.run_tools.RunTools`. A tool call id is executed at most once per run:
outcomes are recorded in the run state (and in the RunStore when the run was ever suspended), and calls the model
repeats with an id already used get a fresh id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engines import ProviderError
from ..llm.base import ChatMessage, ChatModel, ToolSpec
from ..logs import get_logger, log_context
from ..runs.messages import last_user_text, sanitize_tool_pairs
from ..runs.prompt import HistoryWindows, PromptPlan, estimate_tokens, layout_prompt, token_counter, tools_tokens
from ..runs.store import RunRecord
from ..runs.structured import StructuredOutput
from .background import BackgroundWork
from .chunks import AgentChunk, AgentResult, StepResult, ToolCallRecord
from .errors import AgentError, StructuredOutputError
from .memory_bridge import WORKING_MEMORY_TOOL, working_memory_tool
from .processors import RunContext, TripWire, run_input_processors, run_output_processors
from .repetition import replies_to_other_questions
from .run_model import ModelStep, StepOut, build_request, earlier_replies, usage_json
from .run_state import CurrentStep, RunState
from .run_tools import RunTools
from .tools import Tool, ToolOutcome
from .turn_memory import TurnMemory
from .warm import NextPrompt, warm_next_prompt

if TYPE_CHECKING:
    from .agent import Agent
    from .stream import AgentStream

log = get_logger("AGENT")
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
class RunServices:
    """What an agent lends each of its runs: the tools it offers, its background work, its history windows."""

    offered_tools: dict[str, Tool]
    background: BackgroundWork
    windows: HistoryWindows


class AgentRun:
    """Executes one run for an :class:`AgentStream` (see the module notes)."""

    log = log

    def __init__(self, agent: Agent, state: RunState, opts: RunOptions, services: RunServices, *,
                 input_messages: list[ChatMessage], action: ResumeAction | None = None, persisted: bool = False):
        self.agent = agent
        self.state = state
        self.opts = opts
        self.services = services
        self.input = input_messages
        self.action = action
        self.persisted = persisted
        self.stream: AgentStream | None = None
        self.model: ChatModel | None = None
        self.tools: dict[str, Tool] = {}
        self.object: Any = None
        self.final_reason: str | None = None
        # assistant replies recalled from other calls, with the question each answered (for the guard)
        self.recalled_replies: list[tuple[str | None, str]] = []
        self._next_prompt: NextPrompt | None = None  # what the finished turn knows of the next prompt
        self.memory = agent.memory if opts.memory else None
        self.turn = TurnMemory(agent.memory, opts.memory, state)
        self.calls = RunTools(self, agent.max_parallel_tools)
        if action is None:
            self.turn.add_input(input_messages)

    # --- entry points (called by AgentStream) ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _driving(self, stream: AgentStream) -> Iterator[None]:
        """Emit to ``stream`` inside the block only. The stream holds this run (to correct memory after a
        barge-in); holding it back after the run would make every run a reference cycle, left with its prompt and
        chunks for a full collection, which a served process runs rarely (server/run.py)."""
        self.stream = stream
        try:
            with log_context(run_id=self.state.run_id):
                yield
        finally:
            self.stream = None

    async def execute(self, stream: AgentStream) -> AgentResult:
        with self._driving(stream):
            await self.emit("start", {"agent_id": self.agent.id, "resumed": self.action is not None})
            try:
                self.model = await self.agent.get_model()
                if self.action is None:
                    await self._prepare()
                    return await self._loop()
                return await self._resume()
            except TripWire as wire:
                return await self._tripwire(wire)

    async def abort(self, stream: AgentStream, heard_text: str | None) -> AgentResult:
        with self._driving(stream):
            background = await self.calls.stop(cancel_all=False)
            self.state.status = "aborted"
            await self.emit("abort", {"reason": "cancelled", "heard_text": heard_text})
            await self.turn.save(mode="abort", heard_text=heard_text)
            for task, call, _tool in background:
                self.services.background.track(self.calls.finish_in_background(task, call))
            if background or self.persisted:
                await self.persist()
            self._schedule_after_turn()
            result = self._result("aborted")
            await self._callback(self.opts.on_finish, result)
            log.info("run aborted", fields={"background_tools": len(background)})
            return result

    async def fail(self, stream: AgentStream, exc: BaseException) -> AgentResult:
        with self._driving(stream):
            await self.calls.stop(cancel_all=True)
            if isinstance(exc, AgentError | ProviderError) or isinstance(getattr(exc, "code", None), str):
                error: Exception = exc  # it already carries a code (memory errors do too)
            else:
                error = AgentError("agent_failed", f"{type(exc).__name__}: {exc}")
                log.error("agent run failed", exc_info=exc)
            self.state.status = "failed"
            result = self._result("error", error=error)
            if isinstance(error, AgentError):
                error.result = result
            await self.emit("error", {"error": error, "code": getattr(error, "code", "agent_failed"),
                                      "message": getattr(error, "message", str(error))})
            if self.persisted:
                await self.persist()
            await self._callback(self.opts.on_finish, result)
            return result

    async def apply_heard_text(self, heard_text: str) -> None:
        """After the run ended: make memory hold exactly what the caller heard of the reply."""
        await self.turn.apply_heard_text(heard_text, self.final_reason)

    # --- the prompt ------------------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Lay out the prompt (see :mod:`.prompt`) and announce it with the ``context`` chunk."""
        started = time.perf_counter()
        memory_ms = 0.0
        ctx = self._run_context()
        instructions = await self.agent.resolve_instructions(self.opts.instructions, ctx)
        system = [ChatMessage("system", instructions)] if instructions else []
        history: list[Any] = []
        recalled: Any = []
        working: str | None = None
        if self.memory is not None and self.opts.memory is not None:
            resource, thread = self.opts.memory
            read_started = time.perf_counter()
            mctx = await self.memory.prepare(resource_id=resource, thread_id=thread, query=last_user_text(self.input))
            memory_ms = (time.perf_counter() - read_started) * 1000
            history = list(getattr(mctx, "history", None) or [])
            # Recall is selected once the window is known: what the window leaves out may be recalled.
            recalled = getattr(mctx, "select_recalled", None) or list(getattr(mctx, "recalled", None) or [])
            working = getattr(mctx, "system_message", None) or None
            spec = getattr(mctx, "working_memory_tool", None)
            if spec:
                self.state.options["working_memory_tool"] = dict(spec)
        self.tools = self._tools_for_run()
        count = token_counter(self.model)
        window_key = self._window_key()
        windows = self.services.windows
        window = windows.get(window_key) if window_key else None
        specs, choice = self._tool_specs(True)

        def layout() -> PromptPlan:
            return layout_prompt(system=system, working_memory=working, history=history, recalled=recalled,
                                 tail=self.input, budget=self.agent.prompt_budget_tokens, count=count,
                                 window=window, extra_tokens=tools_tokens(specs, count))

        # In a thread when counting tokens is the model's tokenizer (llama.cpp, tens of microseconds a message).
        # The estimate (cloud and scripted models) is a division per message: inline, which spares every turn a
        # thread hop (about 7% of the event loop's time with 1,000 sessions, scripts/load_sessions.py).
        plan = layout() if count is estimate_tokens else await asyncio.to_thread(layout)
        if window_key is not None:
            windows.set(window_key, plan.window)
            # (a window key means memory: the thread's ids are in opts.memory)
            self._next_prompt = NextPrompt(self.model, self.memory, *self.opts.memory, window_key, plan.window,
                                           system, specs, choice, self.agent.prompt_budget_tokens, count)
        self.recalled_replies = plan.recalled_replies
        messages = await run_input_processors(self.agent.input_processors, plan.messages, ctx)
        self.state.messages = sanitize_tool_pairs(messages)
        self.state.response_start = len(self.state.messages)
        # Where a turn's time before the first token goes: memory (history, working memory, recall) and the layout.
        timing = {"memory_ms": round(memory_ms, 1), "prepare_ms": round((time.perf_counter() - started) * 1000, 1)}
        await self.emit("context", {**plan.report.payload(), **timing})

    def _window_key(self) -> Hashable | None:
        """The prompt window's key: the thread, and the conversation within it when the caller names one (a voice
        session passes its id, so each call starts its own window)."""
        if self.memory is None or self.opts.memory is None:
            return None
        conversation = self.opts.context.get("conversation_id")
        return (*self.opts.memory, conversation) if isinstance(conversation, str) else self.opts.memory

    def _tools_for_run(self) -> dict[str, Tool]:
        tools = dict(self.services.offered_tools)
        spec = self.state.options.get("working_memory_tool")
        if spec and self.memory is not None and self.opts.memory is not None:
            tools[WORKING_MEMORY_TOOL] = working_memory_tool(self.memory, spec, *self.opts.memory)
        return tools

    # --- the loop --------------------------------------------------------------------------------------------------

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
                await self.step_finished(StepResult(self.state.step, out.text, [], [], out.finish_reason, out.usage))
                return await self._finish(out.finish_reason, out.text, structured_in_step=schema is not None)
            self.state.current_step = CurrentStep(self.state.step, out.text, out.finish_reason, out.usage, out.calls)
            for call in out.calls:
                self.state.tool_calls.append(ToolCallRecord(call.id, call.name, call.arguments))
                self.turn.add_tool_call(call)
            await self.calls.resolve(out.calls)
            if self.state.pending:
                return await self._suspend()
            await self.calls.complete_step()
            if self.state.step >= self.opts.max_steps:
                return await self._finish("max_steps", "", structured_in_step=False)

    async def _resume(self) -> AgentResult:
        action = self.action
        assert action is not None and self.state.current_step is not None
        self.tools = self._tools_for_run()
        pending = next(p for p in self.state.pending if p.tool_call_id == action.tool_call_id)
        self.state.pending.remove(pending)
        call = next(c for c in self.state.current_step.calls if c.id == action.tool_call_id)
        tool = self.tools.get(call.name)
        if action.kind == "decline":
            await self.calls.record(call, ToolOutcome("denied", action.reason or ""))
        elif tool is None:
            await self.calls.record(call, ToolOutcome("error", f"tool {call.name!r} is no longer available"))
        else:
            if action.kind == "approve":
                self.state.approved.add(call.id)
            await self.calls.execute([(call, tool)], resume_data=action.data if action.kind == "resume" else None)
        if self.state.pending:
            return await self._suspend()
        await self.calls.complete_step()
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
                          messages: list[ChatMessage]) -> StepOut:
        assert self.model is not None
        await self.emit("step-start", {"step": step})
        request = build_request(messages, specs, choice, schema, self.opts.model_settings)
        # Every earlier reply the model can see: the history's, and those recalled from other calls.
        # An answer to this same question is no parroting; an echo of the question is (see agent.repetition).
        question = last_user_text(self.input)
        earlier = replies_to_other_questions(
            [*earlier_replies(self.state.messages[: self.state.response_start]), *self.recalled_replies], question)
        out = await ModelStep(self.model, self.emit, self.state.seen_call_ids).run(request, earlier_replies=earlier,
                                                                                  question=question)
        self.state.usage.add(out.usage)
        return out

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
            await self.persist()
        result = self._result(reason)
        await self.emit("finish", {"finish_reason": reason, "text": result.text, "usage": usage_json(result.usage),
                                   "object": self.opts.structured.object_json(self.object)
                                   if self.opts.structured and self.object is not None else None})
        self._schedule_after_turn()
        self._schedule_warm_next_prompt()
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
                await self.emit("object-result", {"object": so.object_json(obj)})
                return obj
            # The conversational steps are done; one more call, without tools, in JSON mode.
            messages = [*self.state.messages, ChatMessage("user", STRUCTURE_PROMPT)]
            out = await self._model_step(self.state.step + 1, [], "auto", so.json_schema(), messages)
            self.state.step += 1
            await self.step_finished(StepResult(self.state.step, out.text, [], [], out.finish_reason, out.usage))
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
        await self.emit("object-result", {"object": so.object_json(obj)})
        return obj

    async def _suspend(self) -> AgentResult:
        assert self.stream is not None
        self.stream.finishing = True
        self.state.status = "suspended"
        await self.turn.save(mode="suspend")
        await self.persist()  # before the approval chunk: an approval may arrive the moment it is seen
        for p in self.state.pending:
            base = {"tool_call_id": p.tool_call_id, "tool_name": p.tool_name, "args": p.args}
            if p.kind == "approval":
                await self.emit("tool-call-approval", base)
            else:
                await self.emit("tool-call-suspended", {**base, "suspend_payload": p.suspend_payload})
        result = self._result("suspended")
        await self.emit("finish", {"finish_reason": "suspended", "text": result.text,
                                   "usage": usage_json(result.usage), "object": None,
                                   "pending": [p.tool_call_id for p in self.state.pending]})
        await self._callback(self.opts.on_finish, result)
        return result

    async def _tripwire(self, wire: TripWire) -> AgentResult:
        assert self.stream is not None
        self.stream.finishing = True
        self.state.status = "finished"
        self.turn.drop_unsaved()  # a guardrail that aborts saves nothing
        await self.emit("tripwire", {"reason": wire.reason, "processor": wire.processor})
        if self.persisted:
            await self.persist()
        result = self._result("tripwire")
        result.tripwire_reason = wire.reason
        await self.emit("finish", {"finish_reason": "tripwire", "text": result.text,
                                   "usage": usage_json(result.usage), "object": None})
        await self._callback(self.opts.on_finish, result)
        return result

    # --- memory and persistence ------------------------------------------------------------------------------------

    def _schedule_after_turn(self) -> None:
        """Memory's after_turn for this turn's saved messages, in the background (merged with a queued turn)."""
        if self.memory is None or self.opts.memory is None or not hasattr(self.memory, "after_turn"):
            return
        saved = list(self.turn.saved_messages)
        if not saved:
            return
        resource, thread = self.opts.memory
        memory, model = self.memory, self.model

        async def after_turn(messages: list[Any]) -> None:
            await memory.after_turn(resource_id=resource, thread_id=thread, messages=messages, model=model)

        self.services.background.after_turn((resource, thread), saved, after_turn)

    def _schedule_warm_next_prompt(self) -> None:
        """Have the model read the next prompt's start while the caller listens (:mod:`.warm`)."""
        next_prompt, self._next_prompt = self._next_prompt, None
        if next_prompt is None or not self.agent.warm_next_prompt or not next_prompt.model.warms_prompts \
                or next_prompt.budget <= 0:
            return
        self.services.background.track(warm_next_prompt(next_prompt, self.services.windows))

    async def persist(self) -> None:
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

    async def emit(self, type: str, payload: dict[str, Any]) -> None:
        assert self.stream is not None
        chunk = AgentChunk(type, self.state.run_id, payload, from_agent=self.agent.id)  # type: ignore[arg-type]
        self.stream.emit(chunk)
        await self._callback(self.opts.on_chunk, chunk)

    async def step_finished(self, step: StepResult) -> None:
        self.state.steps.append(step)
        await self.emit("step-finish", {"step": step.step, "finish_reason": step.finish_reason, "text": step.text,
                                        "tool_calls": [c.tool_call_id for c in step.tool_calls],
                                        "usage": usage_json(step.usage)})
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
            tool_results=list(s.tool_results), usage=dataclasses.replace(s.usage),
            object=self.object, steps=list(s.steps), pending=list(s.pending),
            response_messages=list(s.messages[s.response_start:]), error=error,
        )
