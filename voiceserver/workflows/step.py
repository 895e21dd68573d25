"""Steps: the unit of work in a workflow, and the context a step's ``execute`` receives.

A step is data (id, schemas, retries) plus an ``execute(ctx)`` function (sync or async). Steps can also be made
from an agent (anything with ``async generate(prompt, ...)`` returning an object with ``.text``) or a tool (anything
with ``id``, ``input_schema``, ``output_schema`` and ``async execute(input, ctx)``), by duck typing so this module
never imports the agent package.

Suspending, bailing out and aborting stop the step at once: they raise signals derived from BaseException (like
asyncio.CancelledError) so an ``except Exception`` in user code does not swallow them.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import BaseModel

from voiceserver.ids import validate_id
from voiceserver.workflows.schema import dump, validate

if TYPE_CHECKING:
    from voiceserver.workflows.executor import Executor

MAX_RETRIES = 100
RESERVED_EVENT_PREFIX = "workflow-"


class SuspendSignal(BaseException):
    """Raised by ``ctx.suspend``: the step pauses until resumed. Do not catch."""

    def __init__(self, payload: Any):
        super().__init__("step suspended")
        self.payload = payload


class BailSignal(BaseException):
    """Raised by ``ctx.bail``: the workflow ends successfully with ``result``. Do not catch."""

    def __init__(self, result: Any):
        super().__init__("workflow bailed out")
        self.result = result


class AbortSignal(BaseException):
    """Raised by ``ctx.abort``: the run ends as canceled. Do not catch."""

    def __init__(self) -> None:
        super().__init__("workflow aborted")


StepFunction = Callable[["StepContext"], Any | Awaitable[Any]]


@dataclass(slots=True, eq=False)
class Step:
    """One step. Build with :func:`create_step`."""

    id: str
    execute: StepFunction
    description: str = ""
    input_schema: Any = None
    output_schema: Any = None
    resume_schema: Any = None
    suspend_schema: Any = None
    state_schema: Any = None
    retries: int = 0
    kind: str = "step"

    def describe(self) -> dict[str, Any]:
        """A JSON description (id, kind, description, schemas) for listings and routing."""
        from voiceserver.workflows.schema import json_schema

        return {"id": self.id, "kind": self.kind, "description": self.description,
                "input_schema": json_schema(self.input_schema), "output_schema": json_schema(self.output_schema),
                "resume_schema": json_schema(self.resume_schema)}


class AgentPrompt(BaseModel):
    """Input of a step made from an agent."""

    prompt: str


class AgentText(BaseModel):
    """Output of a step made from an agent (without a structured output schema)."""

    text: str


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:@-]+", "-", name).strip("-")[:128] or "agent"


def create_step(
    source: Any = None,
    /,
    *,
    id: str | None = None,
    description: str = "",
    input_schema: Any = None,
    output_schema: Any = None,
    resume_schema: Any = None,
    suspend_schema: Any = None,
    state_schema: Any = None,
    retries: int = 0,
    execute: StepFunction | None = None,
) -> Any:
    """Make a step.

    Either from keywords (``id`` and ``execute(ctx)`` required), or from ``source``: an agent (input
    ``{"prompt": str}``, output ``{"text": str}``, or the agent's structured object when ``output_schema`` is
    given), a tool (its own schemas; ``execute(input, ctx)`` receives the validated input), or a committed
    workflow (returned as is: a workflow is a step).
    """
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be an integer from 0 to {MAX_RETRIES}, got {retries!r}")
    if source is not None:
        if getattr(source, "is_workflow", False):
            return source
        if execute is not None:
            raise TypeError("create_step(source, execute=...): give either a source or an execute function")
        if callable(getattr(source, "generate", None)):
            return _agent_step(source, id, description, output_schema, retries)
        if callable(getattr(source, "execute", None)) and hasattr(source, "id"):
            return _tool_step(source, id, description, retries)
        raise TypeError(f"cannot make a step from {type(source).__name__}: expected an agent (with generate), "
                        "a tool (with id and execute) or a workflow")
    if id is None:
        raise TypeError("create_step() needs id=...")
    if execute is None or not callable(execute):
        raise TypeError(f"create_step(id={id!r}) needs a callable execute=...")
    validate_id(id, "step")
    return Step(id=id, execute=execute, description=description, input_schema=input_schema,
                output_schema=output_schema, resume_schema=resume_schema, suspend_schema=suspend_schema,
                state_schema=state_schema, retries=retries)


def _agent_step(agent: Any, id: str | None, description: str, output_schema: Any, retries: int) -> Step:
    step_id = id or _slug(str(getattr(agent, "id", None) or getattr(agent, "name", None) or "agent"))
    validate_id(step_id, "step")

    async def execute(ctx: StepContext) -> Any:
        if output_schema is not None:
            result = await agent.generate(ctx.input_data.prompt, structured_output={"schema": output_schema})
            return result.object
        result = await agent.generate(ctx.input_data.prompt)
        return {"text": result.text}

    return Step(id=step_id, execute=execute, description=description or str(getattr(agent, "description", "") or ""),
                input_schema=AgentPrompt, output_schema=output_schema or AgentText, retries=retries, kind="agent")


def _tool_step(tool: Any, id: str | None, description: str, retries: int) -> Step:
    step_id = id or str(tool.id)
    validate_id(step_id, "step")

    async def execute(ctx: StepContext) -> Any:
        return await tool.execute(ctx.input_data, ctx)

    return Step(id=step_id, execute=execute, description=description or str(getattr(tool, "description", "") or ""),
                input_schema=getattr(tool, "input_schema", None), output_schema=getattr(tool, "output_schema", None),
                resume_schema=getattr(tool, "resume_schema", None),
                suspend_schema=getattr(tool, "suspend_schema", None), retries=retries, kind="tool")


class StepWriter:
    """``ctx.writer``: emit custom events into the run's stream and to its watchers."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: StepContext):
        self._ctx = ctx

    async def write(self, data: dict[str, Any]) -> None:
        """Emit ``data`` (a JSON object; ``type`` defaults to "custom" and may not start with "workflow-")."""
        if not isinstance(data, dict):
            raise TypeError("writer.write() takes a dict")
        event_type = data.get("type", "custom")
        if not isinstance(event_type, str) or not event_type or event_type.startswith(RESERVED_EVENT_PREFIX):
            raise ValueError(f"custom event type {event_type!r} is not allowed (types starting with "
                             f"{RESERVED_EVENT_PREFIX!r} are the engine's)")
        payload = dump(None, data, "custom event")
        await self._ctx._executor.emit_custom(event_type, self._ctx.step_id, self._ctx.path, payload)


class StepContext:
    """What ``execute(ctx)`` (and branch / loop conditions and map functions) receive.

    ``input_data`` is validated against the step's input schema (a model instance for a model schema);
    ``resume_data`` is set when the step runs again after a suspension (validated against ``resume_schema``).
    """

    __slots__ = ("_executor", "step_id", "path", "input_data", "resume_data", "iteration_count", "attempt",
                 "_step", "_writer")

    def __init__(self, executor: Executor, step: Step | None, step_id: str, path: tuple[str, ...], input_data: Any,
                 resume_data: Any = None, iteration_count: int = 0, attempt: int = 0):
        self._executor = executor
        self._step = step
        self.step_id = step_id
        self.path = path
        self.input_data = input_data
        self.resume_data = resume_data
        self.iteration_count = iteration_count
        self.attempt = attempt
        self._writer: StepWriter | None = None

    @property
    def run_id(self) -> str:
        return self._executor.run_id

    @property
    def workflow_id(self) -> str:
        return self._executor.workflow.id

    @property
    def writer(self) -> StepWriter:
        if self._writer is None:
            self._writer = StepWriter(self)
        return self._writer

    @property
    def state(self) -> Any:
        """The workflow state: a model instance if the step has a state_schema, else a copy of the dict."""
        current = self._executor.state["state"]
        schema = self._step.state_schema if self._step is not None else None
        if schema is not None:
            return validate(schema, current, f"state for step {self.step_id!r}", "invalid_state")
        return copy.deepcopy(current)  # a copy: changes go through set_state, never into the snapshot directly

    def set_state(self, update: Any) -> None:
        """Merge ``update`` (a dict or model) into the workflow state, validated against the step's state_schema."""
        schema = self._step.state_schema if self._step is not None else None
        new = dump(schema, update, f"state from step {self.step_id!r}", "invalid_state")
        if not isinstance(new, dict):
            raise TypeError("set_state() takes a dict or a model")
        self._executor.state["state"] = {**self._executor.state["state"], **new}

    def suspend(self, payload: Any = None) -> NoReturn:
        """Pause this step (``return await ctx.suspend(...)`` or just ``ctx.suspend(...)``); resumed by run.resume."""
        schema = self._step.suspend_schema if self._step is not None else None
        raise SuspendSignal(dump(schema, payload, f"suspend payload of step {self.step_id!r}", "invalid_suspend"))

    def bail(self, result: Any = None) -> NoReturn:
        """End the workflow now, successfully, with ``result`` as its result."""
        raise BailSignal(result)

    def abort(self) -> NoReturn:
        """End the run now with status canceled."""
        raise AbortSignal()

    def get_step_result(self, step: Any) -> Any:
        """The output of an earlier step (a step, workflow or id), or None if it has not succeeded."""
        step_id = step if isinstance(step, str) else getattr(step, "id", None)
        record = self._executor.state["steps"].get(step_id)
        if record is None or record.get("status") != "success":
            return None
        return record.get("output")

    def get_init_data(self) -> Any:
        """The input the workflow was started with."""
        return self._executor.state["input"]


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; await the result if it is awaitable (steps, conditions and maps may be sync or async)."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
