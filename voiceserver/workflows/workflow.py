"""The workflow builder (``create_workflow(...).then(...).commit()``) and its runs.

A committed workflow is immutable and can be used as a step of another workflow. Runs are created with
:meth:`Workflow.create_run`; their snapshots go to the workflow's RunStore (kind "workflow", owner_id = the
workflow id), so ``create_run(run_id=...)`` reopens a run another process started.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from voiceserver.ids import validate_id
from voiceserver.runs.store import InMemoryRunStore, RunStore
from voiceserver.workflows.graph import (
    DEFAULT_MAX_ITERATIONS,
    MAX_FOREACH_CONCURRENCY,
    MAX_SLEEP_MS,
    BranchEntry,
    Entry,
    ForeachEntry,
    LoopEntry,
    MapEntry,
    ParallelEntry,
    SleepEntry,
    StepEntry,
    steps_of,
)
from voiceserver.workflows.schema import WorkflowError, dump, json_schema
from voiceserver.workflows.step import Step

if TYPE_CHECKING:
    from voiceserver.workflows.run import Run, WorkflowResult

RUN_KIND = "workflow"


class WorkflowBuildError(WorkflowError, ValueError):
    """The workflow graph is malformed (duplicate ids, wrong arguments, not committed)."""

    code = "invalid_workflow"


class Workflow:
    """A workflow: a committed list of entries plus the schemas of its input, output and state."""

    is_workflow = True
    kind = "workflow"
    retries = 0
    resume_schema = None
    suspend_schema = None

    def __init__(self, id: str, description: str = "", input_schema: Any = None, output_schema: Any = None,
                 state_schema: Any = None, storage: RunStore | None = None):
        validate_id(id, "workflow")
        self.id = id
        self.description = description
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.state_schema = state_schema
        self.storage: RunStore = storage if storage is not None else InMemoryRunStore()
        self.entries: list[Entry] = []
        self.committed = False
        self._steps: dict[str, Any] = {}
        self._active: dict[str, Run] = {}

    # --- building ---------------------------------------------------------------------------------------------

    def then(self, step: Any) -> Workflow:
        """Run ``step`` on the previous output."""
        return self._add(StepEntry(self._check_step(step)))

    def parallel(self, steps: Sequence[Any]) -> Workflow:
        """Run ``steps`` concurrently on the previous output; the output is ``{step_id: output}``."""
        if not isinstance(steps, list | tuple) or not steps:
            raise WorkflowBuildError("parallel() takes a non-empty list of steps")
        return self._add(ParallelEntry([self._check_step(s) for s in steps]))

    def branch(self, branches: Sequence[tuple[Callable[[Any], Any], Any]]) -> Workflow:
        """Run the first step whose condition (``cond(ctx)``, may be async) is true; output ``{step_id: output}``."""
        if not isinstance(branches, list | tuple) or not branches:
            raise WorkflowBuildError("branch() takes a non-empty list of (condition, step) pairs")
        pairs = []
        for pair in branches:
            if not isinstance(pair, list | tuple) or len(pair) != 2 or not callable(pair[0]):
                raise WorkflowBuildError("branch() takes (condition, step) pairs with a callable condition")
            pairs.append((pair[0], self._check_step(pair[1])))
        return self._add(BranchEntry(pairs))

    def dowhile(self, step: Any, condition: Callable[[Any], Any],
                max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Workflow:
        """Run ``step`` again while ``condition(ctx)`` is true.

        The condition sees the step's output as ``ctx.input_data`` and the runs so far as ``ctx.iteration_count``.
        """
        return self._loop(step, condition, False, max_iterations)

    def dountil(self, step: Any, condition: Callable[[Any], Any],
                max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Workflow:
        """Run ``step`` again until ``condition(ctx)`` is true."""
        return self._loop(step, condition, True, max_iterations)

    def foreach(self, step: Any, concurrency: int = 1) -> Workflow:
        """Run ``step`` for each item of the previous output (a list), ``concurrency`` at a time."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
                or not 1 <= concurrency <= MAX_FOREACH_CONCURRENCY:
            raise WorkflowBuildError(f"foreach concurrency must be 1..{MAX_FOREACH_CONCURRENCY}, got {concurrency!r}")
        return self._add(ForeachEntry(self._check_step(step), concurrency))

    def map(self, fn: Callable[[Any], Any], id: str | None = None) -> Workflow:
        """Reshape the data: ``fn(ctx)`` (may be async) returns the next step's input."""
        if not callable(fn):
            raise WorkflowBuildError("map() takes a function of the context")
        return self._add(MapEntry(self._entry_id("map", id), fn))

    def sleep(self, ms: int | float | Callable[[Any], Any], id: str | None = None) -> Workflow:
        """Wait ``ms`` milliseconds (or ``ms(ctx)``), then pass the previous output on."""
        bad_number = isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= MAX_SLEEP_MS
        if not callable(ms) and bad_number:
            raise WorkflowBuildError(f"sleep() takes 0..{MAX_SLEEP_MS} milliseconds or a function, got {ms!r}")
        return self._add(SleepEntry(self._entry_id("sleep", id), ms=ms))

    def sleep_until(self, when: dt.datetime | Callable[[Any], Any], id: str | None = None) -> Workflow:
        """Wait until ``when`` (a datetime, or ``when(ctx)``), then pass the previous output on."""
        if not callable(when) and not isinstance(when, dt.datetime):
            raise WorkflowBuildError("sleep_until() takes a datetime or a function returning one")
        return self._add(SleepEntry(self._entry_id("sleep", id), until=when))

    def commit(self) -> Workflow:
        """Freeze the graph (step ids must be unique); a workflow runs, or serves as a step, only once committed."""
        if not self.entries:
            raise WorkflowBuildError(f"workflow {self.id!r} has no steps")
        self.committed = True
        return self

    def _loop(self, step: Any, condition: Any, until: bool, max_iterations: int) -> Workflow:
        if not callable(condition):
            raise WorkflowBuildError("the loop condition must be callable")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
            raise WorkflowBuildError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        return self._add(LoopEntry(self._check_step(step), condition, until, max_iterations))

    def _entry_id(self, kind: str, given: str | None) -> str:
        return validate_id(given, "step") if given is not None else f"{kind}-{len(self.entries) + 1}"

    def _check_step(self, step: Any) -> Any:
        if getattr(step, "is_workflow", False):
            if not step.committed:
                raise WorkflowBuildError(f"workflow {step.id!r} must be committed before it is used as a step")
            if step is self:
                raise WorkflowBuildError("a workflow cannot contain itself")
            return step
        if not isinstance(step, Step):
            raise WorkflowBuildError(f"expected a step (create_step) or a workflow, got {type(step).__name__}; "
                                     "wrap agents and tools with create_step(agent_or_tool)")
        return step

    def _add(self, entry: Entry) -> Workflow:
        if self.committed:
            raise WorkflowBuildError(f"workflow {self.id!r} is committed; build a new workflow to change it")
        ids = [s.id for s in steps_of(entry)] or [entry.id]  # type: ignore[union-attr]
        for step_id in ids:
            if step_id in self._steps or ids.count(step_id) > 1:
                raise WorkflowBuildError(f"duplicate step id {step_id!r} in workflow {self.id!r}: step ids must be "
                                         "unique (results are keyed by step id)")
        for step in steps_of(entry):
            self._steps[step.id] = step
        for step_id in ids:
            self._steps.setdefault(step_id, None)
        self.entries.append(entry)
        return self

    # --- introspection ----------------------------------------------------------------------------------------

    @property
    def steps(self) -> dict[str, Any]:
        """The steps (and nested workflows) of this workflow by id."""
        return {k: v for k, v in self._steps.items() if v is not None}

    def find_step(self, path: Sequence[str]) -> Any:
        """The step at a path of ids (into nested workflows), or None."""
        workflow: Any = self
        step = None
        for i, step_id in enumerate(path):
            step = workflow.steps.get(step_id) if getattr(workflow, "is_workflow", False) else None
            if step is None:
                return None
            if i < len(path) - 1:
                workflow = step
        return step

    def describe(self) -> dict[str, Any]:
        """A JSON description of the workflow: id, description, schemas and graph."""
        return {"id": self.id, "kind": "workflow", "description": self.description,
                "input_schema": json_schema(self.input_schema), "output_schema": json_schema(self.output_schema),
                "graph": [e.describe() for e in self.entries]}

    def initial_state(self, given: Any) -> dict[str, Any]:
        """The state a run starts with, validated against ``state_schema``."""
        state = dump(self.state_schema, {} if given is None else given, f"initial state of workflow {self.id!r}",
                     "invalid_input")
        if not isinstance(state, dict):
            raise WorkflowBuildError("a workflow state must be an object")
        return state

    def _require_committed(self) -> None:
        if not self.committed:
            raise WorkflowBuildError(f"workflow {self.id!r} is not committed: call .commit() first")

    # --- runs -------------------------------------------------------------------------------------------------

    async def create_run(self, run_id: str | None = None, resource_id: str | None = None) -> Run:
        """A new run, or with ``run_id`` the existing run of that id (active here, or loaded from storage).

        ``resource_id`` (a caller) is stored with a new run; for an existing run it must match.
        """
        from voiceserver.workflows.run import Run

        self._require_committed()
        if resource_id is not None:
            validate_id(resource_id, "resource")
        if run_id is None:
            return Run(self, str(uuid.uuid4()), resource_id)
        validate_id(run_id, "run")
        run = self._active.get(run_id)
        if run is None:
            record = await self.storage.load_run(RUN_KIND, run_id)
            if record is None:
                return Run(self, run_id, resource_id)
            if record.owner_id != self.id:
                raise WorkflowError(f"run {run_id!r} belongs to workflow {record.owner_id!r}, not {self.id!r}")
            run = Run.from_record(self, record)
        if resource_id is not None and run.resource_id != resource_id:
            # a run's resource never changes: one caller cannot reopen another caller's run by its id
            raise WorkflowError(f"run {run_id!r} belongs to another resource")
        return run

    async def get_run(self, run_id: str) -> WorkflowResult | None:
        """The current status and result of a run, or None if it is unknown."""
        from voiceserver.workflows.run import result_from_record

        validate_id(run_id, "run")
        active = self._active.get(run_id)
        if active is not None:
            return active.current_result()
        record = await self.storage.load_run(RUN_KIND, run_id)
        if record is None or record.owner_id != self.id:
            return None
        return result_from_record(record)

    async def list_runs(self, resource_id: str | None = None, status: str | None = None,
                        limit: int = 100) -> list[WorkflowResult]:
        """This workflow's runs, newest first (e.g. a caller's suspended runs: resource_id=..., status="suspended")."""
        from voiceserver.workflows.run import result_from_record

        if resource_id is not None:
            validate_id(resource_id, "resource")
        records = await self.storage.list_runs(RUN_KIND, owner_id=self.id, resource_id=resource_id, status=status,
                                               limit=max(1, min(int(limit), 1000)))
        return [result_from_record(r) for r in records]


def create_workflow(id: str, description: str = "", input_schema: Any = None, output_schema: Any = None,
                    state_schema: Any = None, storage: RunStore | None = None) -> Workflow:
    """A new workflow to build with ``.then(...)`` and friends, then ``.commit()``."""
    return Workflow(id=id, description=description, input_schema=input_schema, output_schema=output_schema,
                    state_schema=state_schema, storage=storage)
