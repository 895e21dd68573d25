"""Agent: instructions, a model, tools, sub-agents, workflows, memory and a voice (Mastra's ``Agent``).

    agent = Agent(name="Assistant", instructions="You are helpful.", model="openai/gpt-4o-mini",
                  tools={"weather": weather})
    result = await agent.generate("What's the weather in London?")
    stream = agent.stream("...")
    async for chunk in stream: ...
    final = await stream.result()

Tool approval: a run that needs approval ends with finish_reason "suspended"; ``approve_tool_call`` /
``decline_tool_call`` / ``resume_stream`` continue it (from this object or any Agent with the same id and storage)
and return a new stream.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from typing import Any, Literal

from ..engines import NotConfiguredError
from ..ids import new_id, validate_id
from ..llm.base import ChatModel
from ..logs import get_logger
from ..network import api as network_api
from ..runs.claims import claim_suspended_run, persistable_context, restore_structured, save_as_running
from ..runs.messages import normalize_input
from ..runs.ports import is_workflow
from ..runs.prompt import DEFAULT_PROMPT_BUDGET_TOKENS, HistoryWindows
from ..runs.store import InMemoryRunStore, RunRecord, RunStore
from ..runs.structured import StructuredOutput
from .background import BackgroundWork
from .chunks import AgentResult
from .delegation import sub_agent_tool, workflow_tool
from .errors import AgentError, ToolDefinitionError
from .memory_bridge import WORKING_MEMORY_TOOL
from .processors import Processor, RunContext
from .run import AgentRun, ResumeAction, RunOptions, RunServices
from .run_state import RunState
from .stream import AgentStream
from .tools import TOOL_NAME, Tool

log = get_logger("AGENT")
MAX_STEPS_LIMIT = 100
OPTION_KEYS = ("memory", "max_steps", "tool_choice", "instructions", "structured_output", "require_tool_approval",
               "on_finish", "on_step_finish", "on_chunk", "context", "model_settings")
MODEL_SETTING_KEYS = ("max_tokens", "temperature", "stop")
MAX_PROMPT_BUDGET_TOKENS = 1_000_000
VoiceMode = Literal["agent", "network"]
VOICE_MODES = ("agent", "network")


class _NoVoice:
    """``agent.voice`` when no voice is configured: every operation raises a clear error."""

    def __init__(self, agent_name: str):
        self._agent_name = agent_name

    def __bool__(self) -> bool:
        return False

    def _fail(self, *_: Any, **__: Any) -> Any:
        raise NotConfiguredError(f"No voice provider configured for agent {self._agent_name!r}")

    async def listen(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    async def speak(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    async def get_speakers(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()


def slug_id(name: str) -> str:
    """An agent id from its name: "Research Assistant" -> "research-assistant"."""
    slug = re.sub(r"[^a-z0-9._:@-]+", "-", name.strip().lower()).strip("-")[:128]
    return slug or "agent"


class Agent:
    """A Mastra-style agent. All arguments are keywords; see docs/agents.md."""

    def __init__(
        self,
        *,
        name: str,
        instructions: str | list[str] | Callable[..., Any] = "",
        model: str | ChatModel | list[str | ChatModel],
        id: str | None = None,
        description: str = "",
        tools: dict[str, Tool] | list[Tool] | None = None,
        agents: dict[str, Agent] | None = None,
        workflows: dict[str, Any] | None = None,
        memory: Any = None,
        voice: Any = None,
        default_options: dict[str, Any] | None = None,
        model_registry: Any = None,
        storage: RunStore | None = None,
        input_processors: list[Processor] | None = None,
        output_processors: list[Processor] | None = None,
        max_parallel_tools: int = 4,
        prompt_budget_tokens: int = DEFAULT_PROMPT_BUDGET_TOKENS,
        voice_mode: VoiceMode = "agent",
        warm_next_prompt: bool = True,
    ):
        if not name or not isinstance(name, str):
            raise ValueError("an agent needs a name")
        self.name = name
        self.id = validate_id(id, "agent") if id is not None else slug_id(name)
        self.description = description
        self.instructions = instructions
        self.model = model
        self.memory = memory
        self._voice = voice
        self.model_registry = model_registry
        self._storage = storage
        self.input_processors = list(input_processors or [])
        self.output_processors = list(output_processors or [])
        if not 1 <= max_parallel_tools <= 64:
            raise ValueError("max_parallel_tools must be between 1 and 64")
        self.max_parallel_tools = max_parallel_tools
        if isinstance(prompt_budget_tokens, bool) or not isinstance(prompt_budget_tokens, int) \
                or not 0 <= prompt_budget_tokens <= MAX_PROMPT_BUDGET_TOKENS:
            raise ValueError(f"prompt_budget_tokens must be an integer from 0 (no budget) to "
                             f"{MAX_PROMPT_BUDGET_TOKENS}")
        self.prompt_budget_tokens = prompt_budget_tokens
        # After each turn with memory, a local model reads the next prompt's start while the caller listens
        # (agent.warm): the turn after a history cut does not read the whole history again.
        self.warm_next_prompt = bool(warm_next_prompt)
        if voice_mode not in VOICE_MODES:
            raise ValueError(f"voice_mode must be one of {', '.join(VOICE_MODES)}, got {voice_mode!r}")
        # In voice sessions: answer each request as an agent run, or route it as an agent network (needs memory).
        self.voice_mode: VoiceMode = voice_mode
        self.tools: dict[str, Tool] = _tool_dict(tools)
        self.agents: dict[str, Agent] = dict(agents or {})
        self.workflows: dict[str, Any] = dict(workflows or {})
        self._offered = self._build_offered_tools()
        self.default_options = dict(default_options or {})
        unknown = set(self.default_options) - set(OPTION_KEYS)
        if unknown:
            raise AgentError("invalid_option", f"unknown default_options: {', '.join(sorted(unknown))}")
        self._options({})  # validate the defaults now
        self._resolved_model: ChatModel | None = None
        self._model_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self._background = BackgroundWork()
        self._windows = HistoryWindows()

    def __repr__(self) -> str:
        return f"Agent(id={self.id!r}, name={self.name!r})"

    # --- the public API --------------------------------------------------------------------------------------------

    def stream(
        self,
        input: Any,
        *,
        memory: dict[str, str] | None = None,
        max_steps: int | None = None,
        tool_choice: str | None = None,
        instructions: Any = None,
        structured_output: Any = None,
        require_tool_approval: bool | None = None,
        on_finish: Callable[[AgentResult], Any] | None = None,
        on_step_finish: Callable[[Any], Any] | None = None,
        on_chunk: Callable[[Any], Any] | None = None,
        context: dict[str, Any] | None = None,
        model_settings: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> AgentStream:
        """Start a run and return its stream (the run starts at once when an event loop is running).

        ``input`` is a str or a list of messages (dicts ``{"role", "content"}`` or ChatMessage). With memory, pass
        only the new message(s): the history comes from memory.
        """
        opts = self._options(dict(memory=memory, max_steps=max_steps, tool_choice=tool_choice,
                                  instructions=instructions, structured_output=structured_output,
                                  require_tool_approval=require_tool_approval, on_finish=on_finish,
                                  on_step_finish=on_step_finish, on_chunk=on_chunk, context=context,
                                  model_settings=model_settings))
        messages = normalize_input(input)
        run_id = validate_id(run_id, "run") if run_id is not None else new_id("run")
        state = RunState(run_id=run_id, agent_id=self.id, options=_persisted_options(opts))
        stream = AgentStream(AgentRun(self, state, opts, self._services(), input_messages=messages), run_id)
        stream.start()
        return stream

    async def generate(self, input: Any, **options: Any) -> AgentResult:
        """Run to the end and return the result (same options as :meth:`stream`). Raises the run's error."""
        return await self.stream(input, **options).result()

    async def approve_tool_call(self, *, run_id: str, tool_call_id: str | None = None,
                                **options: Any) -> AgentStream:
        """Run the approved tool call of a suspended run and continue it; returns the continuation stream."""
        return await self._continue(run_id, ResumeAction("approve", tool_call_id or ""), options)

    async def decline_tool_call(self, *, run_id: str, tool_call_id: str | None = None, reason: str | None = None,
                                **options: Any) -> AgentStream:
        """Do not run the call; the model is told it was declined and answers without it (tool-output-denied)."""
        return await self._continue(run_id, ResumeAction("decline", tool_call_id or "", reason=reason), options)

    async def resume_stream(self, resume_data: Any = None, *, run_id: str, tool_call_id: str | None = None,
                            **options: Any) -> AgentStream:
        """Continue a run whose tool suspended itself: the tool's execute runs again with ``ctx.resume_data``."""
        return await self._continue(run_id, ResumeAction("resume", tool_call_id or "", data=resume_data), options)

    async def list_runs(self, status: str | None = "suspended", resource_id: str | None = None,
                        limit: int = 100) -> list[RunRecord]:
        """This agent's persisted runs (suspended ones by default), newest first."""
        return await self.storage.list_runs("agent", owner_id=self.id, resource_id=resource_id, status=status,
                                            limit=limit)

    # --- agent networks (voiceserver.network, which sees an agent only through runs.ports.NetworkHost) ----------

    def network(self, message: Any, **options: Any) -> Any:
        """Route ``message`` over this agent's agents, workflows and tools; a NetworkStream (docs/networks.md)."""
        return network_api.run_network(self, message, **options)

    async def approve_network_tool_call(self, *, run_id: str, tool_call_id: str | None = None, **options: Any) -> Any:
        """Run the tool call a suspended network run waits on and continue the run; returns its NetworkStream."""
        return await network_api.approve_network_tool_call(self, run_id=run_id, tool_call_id=tool_call_id, **options)

    async def decline_network_tool_call(self, *, run_id: str, tool_call_id: str | None = None,
                                        reason: str | None = None, **options: Any) -> Any:
        """Skip the waiting tool call (the step's result says it was declined) and continue the network run."""
        return await network_api.decline_network_tool_call(self, run_id=run_id, tool_call_id=tool_call_id,
                                                           reason=reason, **options)

    async def resume_network(self, resume_data: Any = None, *, run_id: str, **options: Any) -> Any:
        """Continue a network run whose tool, sub-agent tool or workflow step suspended itself."""
        return await network_api.resume_network(self, resume_data, run_id=run_id, **options)

    async def list_network_runs(self, status: str | None = "suspended", resource_id: str | None = None,
                                limit: int = 100) -> list[RunRecord]:
        """This agent's persisted network runs (suspended ones by default), newest first."""
        return await network_api.list_network_runs(self, status=status, resource_id=resource_id, limit=limit)

    async def get_model(self) -> ChatModel:
        """The chat model, resolved through the model registry on first use."""
        if self._resolved_model is None:
            async with self._model_lock:
                if self._resolved_model is None:
                    self._resolved_model = await self._resolve_model()
        return self._resolved_model

    async def resolve_instructions(self, override: Any = None, ctx: RunContext | None = None) -> str:
        """The system prompt for a run: ``override`` or the agent's instructions (str, list, or callable)."""
        value = override if override is not None else self.instructions
        ctx = ctx or RunContext(agent_id=self.id, run_id="")
        if callable(value):
            value = value(ctx) if _takes_argument(value) else value()
            if inspect.isawaitable(value):
                value = await value
        if isinstance(value, list | tuple):
            value = "\n\n".join(str(v) for v in value if v)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise AgentError("invalid_instructions", f"instructions must be text, got {type(value).__name__}")
        return value

    @property
    def voice(self) -> Any:
        """The agent's CompositeVoice; without one, listen/speak raise "No voice provider configured"."""
        return self._voice if self._voice is not None else _NoVoice(self.name)

    @property
    def storage(self) -> RunStore:
        """Where suspended runs are kept: ``storage=``, else the memory's store if it is a RunStore, else in-process."""
        if self._storage is None:
            candidate = getattr(self.memory, "storage", None)
            self._storage = candidate if isinstance(candidate, RunStore) else InMemoryRunStore()
        return self._storage

    @property
    def history_windows(self) -> HistoryWindows:
        """Where each thread's history window starts, shared by this agent's runs and network runs (see
        :mod:`voiceserver.runs.prompt`)."""
        return self._windows

    def list_tools(self) -> list[str]:
        """The tool names the model is offered (memory's working-memory tool is added per run)."""
        return list(self._offered)

    async def flush(self) -> None:
        """Wait for background work: memory ``after_turn`` and tools that outlived an interrupted run."""
        await self._background.flush()

    def _services(self) -> RunServices:
        """What this agent lends a run (its own objects; the run needs nothing private of the agent)."""
        return RunServices(offered_tools=self._offered, background=self._background, windows=self._windows)

    # --- helpers ---------------------------------------------------------------------------------------------------

    async def _resolve_model(self) -> ChatModel:
        if isinstance(self.model, ChatModel):
            return self.model
        registry = self.model_registry
        if registry is None:
            try:
                from ..llm.registry import default_registry
            except ImportError as exc:
                raise AgentError("model_unavailable", f"cannot resolve model {self.model!r}: {exc}") from None
            registry = default_registry()
        model = registry.resolve(self.model)
        if inspect.isawaitable(model):
            model = await model
        return model

    def _build_offered_tools(self) -> dict[str, Tool]:
        offered = dict(self.tools)
        for key, sub in self.agents.items():
            if not callable(getattr(sub, "generate", None)):
                raise ToolDefinitionError(f"agents[{key!r}] is not an agent (it has no generate method)")
            _add_unique(offered, f"agent-{key}", sub_agent_tool(key, sub))
        for key, workflow in self.workflows.items():
            if is_workflow(workflow):
                _add_unique(offered, f"workflow-{key}", workflow_tool(key, workflow))
            else:
                log.debug(f"workflow {key!r} has no create_run/input_schema; it is stored but not offered as a tool")
        if WORKING_MEMORY_TOOL in offered:
            raise ToolDefinitionError(f"the tool name {WORKING_MEMORY_TOOL!r} is reserved for memory")
        return offered

    def _options(self, explicit: dict[str, Any]) -> RunOptions:
        merged = {**self.default_options, **{k: v for k, v in explicit.items() if v is not None}}
        max_steps = merged.get("max_steps", 5)
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= MAX_STEPS_LIMIT:
            raise AgentError("invalid_option", f"max_steps must be an integer from 1 to {MAX_STEPS_LIMIT}")
        tool_choice = merged.get("tool_choice", "auto")
        if tool_choice not in ("auto", "none", "required") and tool_choice not in self._offered:
            allowed = ", ".join(["auto", "none", "required", *self._offered])
            raise AgentError("invalid_option", f"tool_choice {tool_choice!r}: allowed values are {allowed}")
        context = merged.get("context") or {}
        if not isinstance(context, dict):
            raise AgentError("invalid_option", "context must be a dict")
        settings = merged.get("model_settings") or {}
        if not isinstance(settings, dict) or set(settings) - set(MODEL_SETTING_KEYS):
            raise AgentError("invalid_option", f"model_settings keys allowed: {', '.join(MODEL_SETTING_KEYS)}")
        return RunOptions(
            max_steps=max_steps, tool_choice=tool_choice, instructions=merged.get("instructions"),
            structured=StructuredOutput.parse(merged.get("structured_output")),
            require_tool_approval=bool(merged.get("require_tool_approval", False)),
            memory=self._memory_target(merged.get("memory")), context=dict(context), model_settings=dict(settings),
            on_finish=merged.get("on_finish"), on_step_finish=merged.get("on_step_finish"),
            on_chunk=merged.get("on_chunk"),
        )

    def _memory_target(self, option: Any) -> tuple[str, str] | None:
        if option is None:
            return None
        if not isinstance(option, dict):
            raise AgentError("invalid_option", "memory must be {'resource': ..., 'thread': ...}")
        resource = option.get("resource", option.get("resource_id"))
        thread = option.get("thread", option.get("thread_id"))
        if not resource or not thread or self.memory is None:
            return None  # memory is used only with both ids, and only when the agent has a memory
        return validate_id(resource, "resource"), validate_id(thread, "thread")

    async def _continue(self, run_id: str, action: ResumeAction, overrides: dict[str, Any]) -> AgentStream:
        validate_id(run_id, "run")
        allowed = {"on_finish", "on_step_finish", "on_chunk", "structured_output", "context"}
        unknown = set(overrides) - allowed
        if unknown:
            raise AgentError("invalid_option", f"options allowed when continuing a run: {', '.join(sorted(allowed))}")
        store = self.storage
        # A store that cannot be weakly referenced or hashed is serialised within this agent.
        async with claim_suspended_run(store, "agent", run_id, self.id, error=AgentError, label="agent run",
                                       fallback_lock=self._claim_lock) as record:
            state = RunState.from_json(record.snapshot)
            pending = _pick_pending(state, action)
            opts = self._restore_options(state.options, overrides)
            if action.kind == "resume":
                tool = self._offered.get(pending.tool_name)
                if tool is not None:
                    try:
                        tool.parse_resume_data(action.data)
                    except ValueError as exc:
                        raise AgentError("invalid_resume_data", f"resume data for {pending.tool_name!r}: {exc}") \
                            from None
            await save_as_running(store, record, state)
        stream = AgentStream(AgentRun(self, state, opts, self._services(), input_messages=[], action=action,
                                      persisted=True), run_id)
        stream.start()
        return stream

    def _restore_options(self, saved: dict[str, Any], overrides: dict[str, Any]) -> RunOptions:
        structured = overrides.get("structured_output")
        if structured is None and saved.get("structured_output"):
            structured = restore_structured(saved["structured_output"], error=AgentError)
        memory = saved.get("memory")
        return RunOptions(
            max_steps=saved.get("max_steps", 5), tool_choice=saved.get("tool_choice", "auto"),
            structured=StructuredOutput.parse(structured),
            require_tool_approval=bool(saved.get("require_tool_approval")),
            memory=(memory[0], memory[1]) if memory and self.memory is not None else None,
            context={**saved.get("context", {}), **(overrides.get("context") or {})},
            model_settings=dict(saved.get("model_settings") or {}), on_finish=overrides.get("on_finish"),
            on_step_finish=overrides.get("on_step_finish"), on_chunk=overrides.get("on_chunk"),
        )


def _tool_dict(tools: Any) -> dict[str, Tool]:
    if tools is None:
        return {}
    items = [(t.id if isinstance(t, Tool) else str(t), t) for t in tools] if isinstance(tools, list | tuple) \
        else list(dict(tools).items())
    out: dict[str, Tool] = {}
    for key, value in items:
        if not isinstance(value, Tool):
            raise ToolDefinitionError(f"tools[{key!r}] is a {type(value).__name__}, not a Tool: build it with "
                                      "create_tool(...) or the @tool decorator")
        if not TOOL_NAME.fullmatch(key):
            raise ToolDefinitionError(f"tool name {key!r} must be 1-64 letters, digits, '_' or '-'")
        _add_unique(out, key, value)
    return out


def _add_unique(tools: dict[str, Tool], name: str, value: Tool) -> None:
    if name in tools:
        raise ToolDefinitionError(f"two tools are named {name!r}")
    if not TOOL_NAME.fullmatch(name):
        raise ToolDefinitionError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
    tools[name] = value


def _pick_pending(state: RunState, action: ResumeAction) -> Any:
    if not state.pending or state.current_step is None:
        raise AgentError("run_not_suspended", f"run {state.run_id!r} has no tool call waiting")
    if action.tool_call_id:
        match = next((p for p in state.pending if p.tool_call_id == action.tool_call_id), None)
        if match is None:
            waiting = ", ".join(p.tool_call_id for p in state.pending)
            raise AgentError("unknown_tool_call",
                             f"tool call {action.tool_call_id!r} is not waiting in run {state.run_id!r}; "
                             f"waiting: {waiting}")
    else:
        kinds = [p for p in state.pending if (p.kind == "suspended") == (action.kind == "resume")] or state.pending
        if len(kinds) != 1:
            raise AgentError("ambiguous_tool_call", f"{len(kinds)} tool calls are waiting; pass tool_call_id")
        match = kinds[0]
    if action.kind == "approve" and match.kind != "approval":
        raise AgentError("not_awaiting_approval", f"tool call {match.tool_call_id!r} suspended itself: "
                                                  "use resume_stream")
    if action.kind == "resume" and match.kind != "suspended":
        raise AgentError("not_suspended_by_tool", f"tool call {match.tool_call_id!r} is waiting for approval: "
                                                  "use approve_tool_call or decline_tool_call")
    action.tool_call_id = match.tool_call_id
    return match


def _persisted_options(opts: RunOptions) -> dict[str, Any]:
    return {
        "max_steps": opts.max_steps,
        "tool_choice": "none" if opts.tool_choice == "none" else "auto",
        "require_tool_approval": opts.require_tool_approval,
        "structured_output": opts.structured.persistable() if opts.structured else None,
        "memory": list(opts.memory) if opts.memory else None,
        "context": persistable_context(opts.context),
        "model_settings": opts.model_settings,
    }


def _takes_argument(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)
