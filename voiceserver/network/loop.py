"""The network loop of one run: route, run the primitive, check completion, repeat; suspend and continue.

One :class:`NetworkRun` drives one :class:`~voiceserver.network.stream.NetworkStream`. The decisions themselves
(prompts, schemas, parsing) are pure functions in :mod:`.routing`; this module only sends them to the model, runs
what was picked (:mod:`.primitives`), talks to memory and persists the run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..engines import ProviderError
from ..llm.base import ChatMessage, ChatModel, ChatRequest, Finish, TextDelta, Usage
from ..logs import get_logger, log_context
from ..runs.errors import StructuredOutputError
from ..runs.ports import NetworkHost
from ..runs.prompt import layout_prompt, token_counter
from ..runs.records import MemoryRecords, to_storage
from ..runs.store import RunRecord
from ..runs.structured import StructuredOutput, parse_partial_json
from ..runs.values import to_jsonable
from .errors import NetworkError
from .primitives import Continuation, PrimitiveRunner, StepOutcome
from .routing import (
    CompletionCheck,
    DecisionError,
    Primitive,
    RoutingDecision,
    StepRecord,
    completion_messages,
    completion_schema,
    direct_input,
    final_object_messages,
    find_primitive,
    input_messages,
    input_response_schema,
    list_primitives,
    parse_completion,
    parse_input,
    parse_routing_decision,
    routing_messages,
    routing_schema,
    routing_system_prompt,
    routing_user_prompt,
)
from .state import RUN_KIND, NetworkState
from .stream import NetworkResult, NetworkStream

log = get_logger("NETWORK")
DECISION_ATTEMPTS = 2  # a routing or completion answer that cannot be read is asked for once more
INPUT_ATTEMPTS = 2
MAX_HISTORY_MESSAGES = 20  # earlier conversation shown to the routing agent without a prompt budget
MAX_PARTIAL_OBJECT_CHARS = 32_000
MAX_MEMORY_RESULT_CHARS = 4000


@dataclass
class NetworkOptions:
    """The validated options of a run (see :func:`voiceserver.network.run_network`)."""

    structured: StructuredOutput | None = None
    require_tool_approval: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None


class NetworkRun:
    """Executes one network run for a :class:`NetworkStream`: fresh from a message, or continued after a suspension."""

    def __init__(self, agent: NetworkHost, state: NetworkState, opts: NetworkOptions, *,
                 input_messages: list[ChatMessage] | None = None, action: Continuation | None = None):
        self.agent = agent
        self.state = state
        self.opts = opts
        self.input = input_messages or []
        self.action = action
        self.stream: NetworkStream | None = None
        self.model: ChatModel | None = None
        self.instructions = ""
        self.primitives: list[Primitive] = []
        self.history: list[ChatMessage] = []  # working memory and the earlier conversation, after the system prompt
        self.recall: list[ChatMessage] = []  # recalled messages, just before the task (they change every turn)
        self.records = MemoryRecords(state.resource_id, state.thread_id)
        self.runner = PrimitiveRunner(self)

    # --- entry points (called by NetworkStream) --------------------------------------------------------------------

    async def execute(self, stream: NetworkStream) -> NetworkResult:
        self.stream = stream
        with log_context(run_id=self.state.run_id):
            self.model = await self.agent.get_model()
            self.instructions = await self.agent.resolve_instructions(self.opts.instructions)
            self.primitives = list_primitives(self.agent)
            await self._load_memory(save_input=self.action is None)
            if self.action is not None:
                done = await self._continue()
                if isinstance(done, NetworkResult):
                    return done
                if done:
                    return await self._finish()
            while True:
                if self.state.iteration >= self.state.max_steps:
                    last = f": {self.state.reason}" if self.state.reason else ""
                    self.state.reason = f"max_steps ({self.state.max_steps}) reached{last}"
                    return await self._finish()
                self.state.iteration += 1
                decision = await self._route()
                if decision.is_none:
                    self.state.result = decision.prompt.strip() or decision.selection_reason
                    self.state.is_complete = True
                    self.state.reason = decision.selection_reason
                    self._emit_step_finish()
                    return await self._finish()
                primitive = find_primitive(self.primitives, decision.primitive_type, decision.primitive_id)
                assert primitive is not None  # parse_routing_decision only returns known primitives
                self.state.decision = decision
                outcome = await self._run(primitive, decision)
                if outcome.pending is not None:
                    return await self._suspend(outcome.pending)
                if await self._after_step(decision, outcome):
                    return await self._finish()

    async def abort(self, stream: NetworkStream) -> NetworkResult:
        self.stream = stream
        self.state.status = "aborted"
        await self._persist_quietly()
        return self._result()

    async def fail(self, stream: NetworkStream, exc: BaseException) -> NetworkResult:
        self.stream = stream
        if isinstance(exc, NetworkError):
            error: NetworkError = exc
        else:
            code = getattr(exc, "code", None) or "network_failed"
            error = NetworkError(code if isinstance(code, str) else "network_failed",
                                 getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, ProviderError | NetworkError):
                log.error("network run failed", exc_info=exc)
        self.state.status = "failed"
        stream.emit("error", {"code": error.code, "message": error.message})
        await self._persist_quietly()
        result = self._result(error)
        error.result = result
        return result

    # --- one iteration ---------------------------------------------------------------------------------------------

    async def _route(self) -> RoutingDecision:
        st = self.state
        self.emit("routing-agent-start", {"network_id": self.agent.id, "iteration": st.iteration, "task": st.task})
        system = routing_system_prompt(self.instructions, self.primitives)
        messages = routing_messages(system, self.history, st.task, st.steps, st.feedback, self.recall)
        schema = routing_schema(self.primitives)
        usage = Usage()
        problem = ""
        for _ in range(DECISION_ATTEMPTS):
            text = await self._complete(messages, schema, usage)
            try:
                decision = parse_routing_decision(text, self.primitives)
                break
            except DecisionError as exc:
                problem = str(exc)
                messages = [*messages, ChatMessage("assistant", text),
                            ChatMessage("user", f"That answer cannot be used: {problem}. Answer again.")]
        else:
            raise NetworkError("invalid_routing_decision", f"the routing agent gave no usable decision: {problem}")
        self.emit("routing-agent-end", {"task": st.task, **decision.to_json(), "iteration": st.iteration,
                                        "is_complete": decision.is_none, "usage": _usage_json(usage)})
        return decision

    async def _run(self, primitive: Primitive, decision: RoutingDecision) -> StepOutcome:
        if primitive.type == "agent":
            return await self.runner.agent(primitive, decision.prompt)
        data, problem = await self._build_input(primitive, decision.prompt)
        if problem is not None:
            return self.runner.input_failed(primitive, problem)
        if primitive.type == "workflow":
            return await self.runner.workflow(primitive, data)
        call = self.runner.new_tool_call(primitive, data)
        if self.runner.tool_needs_approval(primitive):
            return StepOutcome(pending={"kind": "tool-approval", **call})
        return await self.runner.tool(primitive, call)

    async def _build_input(self, primitive: Primitive, prompt: str) -> tuple[Any, str | None]:
        """The input of a workflow or tool: the prompt itself when it already fits, else via structured output."""
        ok, data = direct_input(primitive, prompt)
        if ok:
            return data, None
        problem = ""
        for _ in range(INPUT_ATTEMPTS):
            text = await self._complete(input_messages(primitive, self.state.task, prompt, problem or None),
                                        input_response_schema(primitive), Usage())
            try:
                return parse_input(primitive, text), None
            except ValueError as exc:
                problem = str(exc)
        return None, f"could not build a valid input for {primitive.type} {primitive.id!r}: {problem}"

    async def _after_step(self, decision: RoutingDecision, outcome: StepOutcome) -> bool:
        """Record the step, run the completion check, emit step-finish. True when the task is complete."""
        st = self.state
        st.steps.append(StepRecord(st.iteration, decision.primitive_type, decision.primitive_id, decision.prompt,
                                   outcome.result, outcome.is_error, decision.selection_reason))
        st.decision, st.pending = None, None
        content = f"[{decision.primitive_type} {decision.primitive_id}] {outcome.result}"[:MAX_MEMORY_RESULT_CHARS]
        await self._save([self.records.make("assistant", content, "text", {"network": {
            "run_id": st.run_id, "iteration": st.iteration, "primitive_type": decision.primitive_type,
            "primitive_id": decision.primitive_id, "is_error": outcome.is_error}})])
        check = await self._completion_check()
        st.is_complete = check.is_complete
        st.reason = check.reason
        st.result = (check.final_result if check.is_complete and check.final_result else outcome.result)
        st.feedback = None if check.is_complete else (check.reason or None)
        self._emit_step_finish()
        return check.is_complete

    async def _completion_check(self) -> CompletionCheck:
        messages = completion_messages(self.instructions, self.history, self.state.task, self.state.steps,
                                       self.recall)
        problem = ""
        for _ in range(DECISION_ATTEMPTS):
            text = await self._complete(messages, completion_schema(), Usage())
            try:
                return parse_completion(text)
            except DecisionError as exc:
                problem = str(exc)
                messages = [*messages, ChatMessage("assistant", text),
                            ChatMessage("user", f"That answer cannot be used: {problem}. Answer again.")]
        return CompletionCheck(False, None, f"the completion check could not be read ({problem})")

    def _emit_step_finish(self) -> None:
        st = self.state
        self.emit("network-execution-event-step-finish", {"task": st.task, "result": st.result,
                                                          "is_complete": st.is_complete, "iteration": st.iteration})

    # --- suspension and continuation -------------------------------------------------------------------------------

    async def _suspend(self, pending: dict[str, Any]) -> NetworkResult:
        """Persist first, then announce: a client that approves on the event finds the run waiting."""
        st = self.state
        st.pending, st.status = pending, "suspended"
        await self._persist()
        kind = pending["kind"]
        call = {k: pending.get(k) for k in ("tool_call_id", "tool_name", "args")}
        if kind == "tool-approval":
            self.emit("tool-execution-approval", call)
        elif kind == "tool-suspended":
            self.emit("tool-execution-suspended", {**call, "suspend_payload": pending.get("suspend_payload")})
        elif kind == "agent":
            ids = {"agent_id": pending["agent_id"], "agent_run_id": pending["agent_run_id"]}
            for c in pending["calls"]:
                body = {**ids, **{k: c[k] for k in ("tool_call_id", "tool_name", "args")}}
                if c["kind"] == "approval":
                    self.emit("agent-execution-approval", body)
                else:
                    self.emit("agent-execution-suspended", {**body, "suspend_payload": c.get("suspend_payload")})
        else:
            self.emit("workflow-execution-suspended", {k: pending.get(k) for k in (
                "workflow_id", "workflow_run_id", "suspended", "suspend_payload")})
        return self._result()

    async def _continue(self) -> bool | NetworkResult:
        """Finish the suspended step with the caller's approval, decline or resume data."""
        st = self.state
        assert self.action is not None and st.pending is not None and st.decision is not None
        decision = st.decision
        primitive = find_primitive(self.primitives, decision.primitive_type, decision.primitive_id)
        if primitive is None:
            raise NetworkError("unknown_primitive", f"the {decision.primitive_type} {decision.primitive_id!r} this run "
                                                    f"waits on is no longer offered by agent {self.agent.id!r}")
        outcome = await self.runner.continue_pending(primitive, st.pending, self.action)
        if outcome.pending is not None:
            return await self._suspend(outcome.pending)
        st.status = "running"
        return await self._after_step(decision, outcome)

    # --- the end ---------------------------------------------------------------------------------------------------

    async def _finish(self) -> NetworkResult:
        st = self.state
        obj = None
        if self.opts.structured is not None:
            obj = await self._structured_object()
        st.status = "success" if st.is_complete else "max_steps"
        if st.result:
            await self._save([self.records.make("assistant", st.result, "text", {"network": {
                "run_id": st.run_id, "final": True}})])
        self.emit("network-execution-event-finish", {
            "task": st.task, "result": st.result, "is_complete": st.is_complete, "iteration": st.iteration,
            "reason": st.reason, "object": to_jsonable(obj) if obj is not None else None,
            "usage": _usage_json(st.usage)})
        await self._persist()
        result = self._result()
        result.object = obj
        return result

    async def _structured_object(self) -> Any:
        """The final answer as the caller's schema; network-object events carry the partial object as it streams."""
        structured = self.opts.structured
        assert structured is not None and self.model is not None
        st = self.state
        request = ChatRequest(messages=final_object_messages(self.instructions, st.task, st.result, st.steps),
                              response_schema=structured.json_schema())
        text = ""
        last: Any = None
        async for chunk in self.model.stream(request):
            if isinstance(chunk, TextDelta):
                text += chunk.text
                if len(text) <= MAX_PARTIAL_OBJECT_CHARS:
                    partial = parse_partial_json(text)
                    if partial is not None and partial != last:
                        last = partial
                        self.emit("network-object", {"object": partial})
            elif isinstance(chunk, Finish):
                st.usage.add(chunk.usage)
        try:
            obj = structured.validate(text)
        except StructuredOutputError as exc:
            if structured.error_strategy == "strict":
                raise NetworkError("structured_output_invalid", exc.message) from None
            log.warning(f"network structured output is invalid: {exc}")
            obj = structured.fallback_value if structured.error_strategy == "fallback" else None
        if obj is not None:
            self.emit("network-object-result", {"object": structured.object_json(obj)})
        return obj

    def _result(self, error: Exception | None = None) -> NetworkResult:
        st = self.state
        return NetworkResult(run_id=st.run_id, status=st.status, task=st.task, result=st.result,
                             is_complete=st.is_complete, iteration=st.iteration, reason=st.reason,
                             steps=[s.to_json() for s in st.steps], pending=st.pending,
                             usage=Usage(st.usage.prompt_tokens, st.usage.completion_tokens), error=error)

    # --- I/O helpers -----------------------------------------------------------------------------------------------

    def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        assert self.stream is not None
        self.stream.emit(event_type, payload)

    def add_usage(self, usage: Usage) -> None:
        self.state.usage.add(usage)

    async def _complete(self, messages: list[ChatMessage], schema: dict[str, Any], usage: Usage) -> str:
        assert self.model is not None
        result = await self.model.complete(ChatRequest(messages=list(messages), response_schema=schema))
        usage.add(result.usage)
        self.state.usage.add(result.usage)
        return result.text

    async def _load_memory(self, save_input: bool) -> None:
        """The earlier conversation for the routing agent, laid out like an agent turn's prompt (working memory,
        history in blocks, recall last: see :mod:`voiceserver.runs.prompt`) within the agent's prompt budget; a
        fresh run then saves the caller's message(s)."""
        memory, st = self.agent.memory, self.state
        ctx = await memory.prepare(resource_id=st.resource_id, thread_id=st.thread_id, query=st.task)
        own = set(st.saved_ids)
        past = [m for m in (getattr(ctx, "history", None) or []) if _get(m, "id") not in own]
        budget = getattr(self.agent, "prompt_budget_tokens", 0) or 0
        windows = getattr(self.agent, "history_windows", None) if budget else None
        key = (st.resource_id, st.thread_id)
        if windows is None:
            budget, past = 0, past[-MAX_HISTORY_MESSAGES:]
        system = ChatMessage("system", routing_system_prompt(self.instructions, self.primitives))
        window = windows.get(key) if windows is not None else None
        plan = await asyncio.to_thread(  # counting tokens is the model's tokenizer: off the loop
            lambda: layout_prompt(system=[system], working_memory=getattr(ctx, "system_message", None) or None,
                                  history=past, recalled=getattr(ctx, "select_recalled", None)
                                  or list(getattr(ctx, "recalled", None) or []),
                                  tail=[ChatMessage("user", routing_user_prompt(st.task, st.steps))],
                                  budget=budget, count=token_counter(self.model), window=window))
        if windows is not None:
            windows.set(key, plan.window)
        self.history, self.recall = plan.prefix[1:], plan.recall
        if save_input:
            records = [r for m in self.input for r in self.records.from_input(m)]
            await self._save(records)

    async def _save(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        await self.agent.memory.save_messages([to_storage(r) for r in records])
        self.state.saved_ids.extend(r["id"] for r in records)

    async def _persist(self) -> None:
        st = self.state
        await self.agent.storage.save_run(RunRecord(
            kind=RUN_KIND, run_id=st.run_id, owner_id=self.agent.id, status=st.status, snapshot=st.to_json(),
            resource_id=st.resource_id, thread_id=st.thread_id))

    async def _persist_quietly(self) -> None:
        try:
            await self._persist()
        except Exception:
            log.exception("could not save the network run state")


def _usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def _get(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, dict) else getattr(message, name, None)
