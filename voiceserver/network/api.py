"""The public entry points: start a network run, and continue a suspended one.

    stream = run_network(agent, "Plan my trip to Paris", memory={"resource": "user-1", "thread": "trip"})
    async for event in stream:
        print(event.type, event.payload)
    result = await stream.result()          # result.status, result.result, result.object

    # a tool with require_approval=True stopped the run (event tool-execution-approval):
    stream = await approve_network_tool_call(agent, run_id=result.run_id)
    stream = await decline_network_tool_call(agent, run_id=result.run_id, reason="not now")
    # a tool, a sub-agent's tool or a workflow step suspended itself (event *-suspended):
    stream = await resume_network(agent, {"answer": "yes"}, run_id=result.run_id)

Continuing works from any Agent object with the same id and storage (the run is persisted in ``agent.storage``,
kind "network"), so a run suspended by one process can be approved by another.
"""

from __future__ import annotations

from typing import Any

from ..ids import InvalidIdError, new_id, validate_id
from ..runs.claims import claim_suspended_run, persistable_context, restore_structured, save_as_running
from ..runs.errors import AgentError
from ..runs.messages import last_user_text, normalize_input
from ..runs.ports import NetworkHost
from ..runs.store import RunRecord
from ..runs.structured import StructuredOutput
from ..workflows.schema import WorkflowError
from .errors import NetworkError
from .loop import NetworkOptions, NetworkRun
from .primitives import Continuation
from .state import RUN_KIND, NetworkState
from .stream import NetworkStream

MAX_STEPS_LIMIT = 100
START_OPTIONS = ("run_id", "context", "instructions", "require_tool_approval")
CONTINUE_OPTIONS = ("structured_output", "context")


def run_network(agent: NetworkHost, message: Any, *, memory: dict[str, str] | None = None, max_steps: int = 10,
                structured_output: Any = None, **opts: Any) -> NetworkStream:
    """Start a network run of ``agent`` on ``message`` (a str or a list of messages) and return its stream.

    ``memory={"resource": ..., "thread": ...}`` is required, and so is a memory on the agent: the routing agent
    reads the conversation from it and every step is saved to it. ``max_steps`` bounds the routing decisions
    (1-100). ``structured_output`` (a pydantic model, or ``{"schema", "error_strategy", "fallback_value"}``) adds a
    final object (events network-object and network-object-result, ``result().object``). Other options:
    ``run_id``, ``context`` (a dict handed to tools and sub-agents), ``instructions`` (overrides the agent's),
    ``require_tool_approval`` (every tool call waits for approval, not only tools with ``require_approval``).
    Raises NetworkError at once for a missing memory or a bad option.
    """
    unknown = set(opts) - set(START_OPTIONS)
    if unknown:
        raise NetworkError("invalid_option", f"unknown network options: {', '.join(sorted(unknown))}; "
                                             f"allowed: {', '.join(START_OPTIONS)}")
    if memory is None:
        memory = (getattr(agent, "default_options", None) or {}).get("memory")
    resource_id, thread_id = _memory_target(agent, memory)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS_LIMIT:
        raise NetworkError("invalid_option", f"max_steps must be an integer from 1 to {MAX_STEPS_LIMIT}")
    messages = normalize_input(message)
    task = last_user_text(messages).strip()
    if not task:
        raise NetworkError("invalid_input", "the message has no user text to work on")
    run_id = _valid_id(opts["run_id"], "run") if opts.get("run_id") is not None else new_id("net")
    context = opts.get("context") or {}
    if not isinstance(context, dict):
        raise NetworkError("invalid_option", "context must be a dict")
    instructions = opts.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise NetworkError("invalid_option", "instructions must be a string")
    options = NetworkOptions(structured=StructuredOutput.parse(structured_output),
                             require_tool_approval=bool(opts.get("require_tool_approval", False)),
                             context=dict(context), instructions=instructions)
    state = NetworkState(run_id=run_id, agent_id=agent.id, task=task, resource_id=resource_id, thread_id=thread_id,
                         max_steps=max_steps, options=_persisted_options(options))
    stream = NetworkStream(NetworkRun(agent, state, options, input_messages=messages), run_id)
    stream.start()
    return stream


async def approve_network_tool_call(agent: NetworkHost, *, run_id: str, tool_call_id: str | None = None,
                                    **options: Any) -> NetworkStream:
    """Run the tool call a suspended network run waits on (its own tool, or a sub-agent's) and continue the run."""
    return await _continue(agent, run_id, Continuation("approve", tool_call_id), options)


async def decline_network_tool_call(agent: NetworkHost, *, run_id: str, tool_call_id: str | None = None,
                                    reason: str | None = None, **options: Any) -> NetworkStream:
    """Do not run the call; the step's result says it was declined (with ``reason``) and the run goes on."""
    return await _continue(agent, run_id, Continuation("decline", tool_call_id, reason=reason), options)


async def resume_network(agent: NetworkHost, resume_data: Any = None, *, run_id: str, tool_call_id: str | None = None,
                         step: Any = None, **options: Any) -> NetworkStream:
    """Continue a run whose tool, sub-agent tool or workflow step suspended itself, with ``resume_data``.

    ``step`` picks the suspended workflow step when several wait; ``tool_call_id`` the sub-agent's tool call.
    """
    action = Continuation("resume", tool_call_id, data=resume_data)
    return await _continue(agent, run_id, action, options, step=step)


async def list_network_runs(agent: NetworkHost, status: str | None = "suspended", resource_id: str | None = None,
                            limit: int = 100) -> list[RunRecord]:
    """The agent's persisted network runs (suspended ones by default), newest first."""
    if resource_id is not None:
        _valid_id(resource_id, "resource")
    return await agent.storage.list_runs(RUN_KIND, owner_id=agent.id, resource_id=resource_id, status=status,
                                         limit=max(1, min(int(limit), 1000)))


# --- continuing ----------------------------------------------------------------------------------------------------


async def _continue(agent: NetworkHost, run_id: str, action: Continuation, overrides: dict[str, Any],
                    step: Any = None) -> NetworkStream:
    _valid_id(run_id, "run")
    unknown = set(overrides) - set(CONTINUE_OPTIONS)
    if unknown:
        raise NetworkError("invalid_option", f"options allowed when continuing a network run: "
                                             f"{', '.join(CONTINUE_OPTIONS)}")
    if agent.memory is None:
        raise NetworkError("memory_required", f"agent {agent.id!r} has no memory; a network run needs one")
    store = agent.storage
    async with claim_suspended_run(store, RUN_KIND, run_id, agent.id, error=NetworkError,
                                   label="network run") as record:
        state = NetworkState.from_json(record.snapshot)
        if state.pending is None or state.decision is None:
            raise NetworkError("run_not_suspended", f"network run {run_id!r} waits on nothing")
        opts = _restore_options(state.options, overrides)
        await _prepare(agent, state.pending, action, step)
        await save_as_running(store, record, state)
    stream = NetworkStream(NetworkRun(agent, state, opts, action=action), run_id)
    stream.start()
    return stream


async def _prepare(agent: NetworkHost, pending: dict[str, Any], action: Continuation, step: Any) -> None:
    """Check that the action fits what the run waits on; prepare a sub-agent's or workflow's continuation."""
    kind = pending["kind"]
    if kind in ("tool-approval", "tool-suspended"):
        if action.tool_call_id and action.tool_call_id != pending["tool_call_id"]:
            raise NetworkError("unknown_tool_call", f"tool call {action.tool_call_id!r} is not waiting; "
                                                    f"waiting: {pending['tool_call_id']}")
        _check_kind(action, waits_for_approval=kind == "tool-approval")
        if kind == "tool-suspended":
            tool = agent.tools.get(pending["tool_name"])
            if tool is None:
                raise NetworkError("unknown_primitive", f"tool {pending['tool_name']!r} is no longer offered")
            try:
                tool.parse_resume_data(action.data)  # checked now; the tool gets it parsed when it runs
            except ValueError as exc:
                raise NetworkError("invalid_resume_data",
                                   f"resume data for tool {pending['tool_name']!r}: {exc}") from None
        return
    if kind == "agent":
        sub = agent.agents.get(pending["agent_id"])
        if sub is None:
            raise NetworkError("unknown_primitive", f"agent {pending['agent_id']!r} is no longer in the network")
        call = _pick_call(pending["calls"], action)
        _check_kind(action, waits_for_approval=call["kind"] == "approval")
        sub_run = pending["agent_run_id"]
        if action.kind == "approve":
            action.agent_stream = await sub.approve_tool_call(run_id=sub_run, tool_call_id=call["tool_call_id"])
        elif action.kind == "decline":
            action.agent_stream = await sub.decline_tool_call(run_id=sub_run, tool_call_id=call["tool_call_id"],
                                                              reason=action.reason)
        else:
            action.agent_stream = await sub.resume_stream(action.data, run_id=sub_run,
                                                          tool_call_id=call["tool_call_id"])
        return
    if kind == "workflow":
        if action.kind != "resume":
            raise NetworkError("not_awaiting_approval", f"workflow {pending['workflow_id']!r} is suspended, not "
                                                        "waiting for a tool approval: use resume_network")
        wf = agent.workflows.get(pending["workflow_id"])
        if wf is None:
            raise NetworkError("unknown_primitive", f"workflow {pending['workflow_id']!r} is no longer offered")
        wf_run = await wf.create_run(run_id=pending["workflow_run_id"])
        try:
            action.workflow_stream = wf_run.resume_stream(step=step, resume_data=action.data)
        except (WorkflowError, ValueError) as exc:  # schema, unknown step, run state: the run stays suspended
            raise NetworkError(getattr(exc, "code", None) or "invalid_resume_data",
                               f"cannot resume workflow {pending['workflow_id']!r}: {exc}") from None
        action.workflow_run = wf_run
        return
    raise NetworkError("run_not_suspended", f"unknown pending kind {kind!r}")


def _check_kind(action: Continuation, *, waits_for_approval: bool) -> None:
    if waits_for_approval and action.kind == "resume":
        raise NetworkError("not_suspended", "the run waits for a tool approval: use approve_network_tool_call or "
                                            "decline_network_tool_call")
    if not waits_for_approval and action.kind != "resume":
        raise NetworkError("not_awaiting_approval", "the run waits for resume data (a tool suspended itself): "
                                                    "use resume_network")


def _pick_call(calls: list[dict[str, Any]], action: Continuation) -> dict[str, Any]:
    if action.tool_call_id:
        match = next((c for c in calls if c["tool_call_id"] == action.tool_call_id), None)
        if match is None:
            waiting = ", ".join(c["tool_call_id"] for c in calls)
            raise NetworkError("unknown_tool_call", f"tool call {action.tool_call_id!r} is not waiting; "
                                                    f"waiting: {waiting}")
        return match
    fitting = [c for c in calls if (c["kind"] == "suspended") == (action.kind == "resume")] or calls
    if len(fitting) != 1:
        raise NetworkError("ambiguous_tool_call", f"{len(fitting)} tool calls are waiting; pass tool_call_id")
    return fitting[0]


# --- options -------------------------------------------------------------------------------------------------------


def _memory_target(agent: NetworkHost, memory: Any) -> tuple[str, str]:
    if getattr(agent, "memory", None) is None:
        raise NetworkError("memory_required", f"agent {agent.id!r} has no memory: a network run keeps its task and "
                                              "steps in memory; build the agent with memory=Memory(...)")
    if not isinstance(memory, dict):
        raise NetworkError("memory_required", "a network run needs memory={'resource': ..., 'thread': ...}")
    resource = memory.get("resource", memory.get("resource_id"))
    thread = memory.get("thread", memory.get("thread_id"))
    if not resource or not thread:
        raise NetworkError("memory_required", "a network run needs both a resource and a thread: "
                                              "memory={'resource': ..., 'thread': ...}")
    return _valid_id(resource, "resource"), _valid_id(thread, "thread")


def _valid_id(value: Any, what: str) -> str:
    try:
        return validate_id(value, what)
    except InvalidIdError as exc:
        raise NetworkError("invalid_id", str(exc)) from None


def _persisted_options(opts: NetworkOptions) -> dict[str, Any]:
    return {"structured_output": opts.structured.persistable() if opts.structured else None,
            "require_tool_approval": opts.require_tool_approval, "context": persistable_context(opts.context),
            "instructions": opts.instructions}


def _restore_options(saved: dict[str, Any], overrides: dict[str, Any]) -> NetworkOptions:
    structured = overrides.get("structured_output")
    if structured is None and saved.get("structured_output"):
        structured = restore_structured(saved["structured_output"], error=NetworkError)
    context = overrides.get("context") or {}
    if not isinstance(context, dict):
        raise NetworkError("invalid_option", "context must be a dict")
    try:
        parsed = StructuredOutput.parse(structured)
    except AgentError as exc:
        raise NetworkError(exc.code, exc.message) from None
    return NetworkOptions(structured=parsed, require_tool_approval=bool(saved.get("require_tool_approval")),
                          context={**(saved.get("context") or {}), **context}, instructions=saved.get("instructions"))

