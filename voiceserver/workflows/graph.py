"""The workflow graph: a flat list of entries, each a plain value the executor interprets.

``.then`` adds a :class:`StepEntry`, ``.parallel`` a :class:`ParallelEntry`, and so on. Entries hold the step
objects and the user's functions (conditions, maps); everything the executor records while running them is JSON
(see executor.py), so the graph plus a snapshot is enough to continue a run in another process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_ITERATIONS = 10_000
MAX_FOREACH_CONCURRENCY = 1_000
MAX_SLEEP_MS = 7 * 24 * 3600 * 1000  # a workflow sleep is an in-process timer; longer waits should suspend instead

Condition = Callable[[Any], Any]


@dataclass(slots=True, eq=False)
class StepEntry:
    """Run one step (or workflow) on the previous output."""

    step: Any
    kind: str = "step"

    def describe(self) -> dict[str, Any]:
        return {"type": "step", "step": self.step.id}


@dataclass(slots=True, eq=False)
class ParallelEntry:
    """Run steps concurrently on the previous output; the output is ``{step_id: output}``."""

    steps: list[Any]
    kind: str = "parallel"

    def describe(self) -> dict[str, Any]:
        return {"type": "parallel", "steps": [s.id for s in self.steps]}


@dataclass(slots=True, eq=False)
class BranchEntry:
    """Run the first step whose condition is true; the output is ``{step_id: output}`` (``{}`` if none ran)."""

    branches: list[tuple[Condition, Any]]
    kind: str = "branch"

    def describe(self) -> dict[str, Any]:
        return {"type": "branch", "steps": [s.id for _, s in self.branches]}


@dataclass(slots=True, eq=False)
class LoopEntry:
    """Run a step repeatedly, each iteration on the previous iteration's output.

    ``until=False`` (dowhile): repeat while the condition is true; ``until=True`` (dountil): until it is true.
    """

    step: Any
    condition: Condition
    until: bool
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    kind: str = "loop"

    def describe(self) -> dict[str, Any]:
        return {"type": "dountil" if self.until else "dowhile", "step": self.step.id}


@dataclass(slots=True, eq=False)
class ForeachEntry:
    """Run a step once per item of the previous output (a list); the output is the list of outputs, in order."""

    step: Any
    concurrency: int = 1
    kind: str = "foreach"

    def describe(self) -> dict[str, Any]:
        return {"type": "foreach", "step": self.step.id, "concurrency": self.concurrency}


@dataclass(slots=True, eq=False)
class MapEntry:
    """Reshape data between steps: ``fn(ctx)`` (sync or async) returns the next step's input."""

    id: str
    fn: Callable[[Any], Any]
    kind: str = "map"

    def describe(self) -> dict[str, Any]:
        return {"type": "map", "id": self.id}


@dataclass(slots=True, eq=False)
class SleepEntry:
    """Wait, then pass the previous output on. ``ms`` (or ``until``) may be a function of the context."""

    id: str
    ms: int | float | Callable[[Any], Any] | None = None
    until: dt.datetime | Callable[[Any], Any] | None = None
    kind: str = "sleep"

    def describe(self) -> dict[str, Any]:
        return {"type": "sleep_until" if self.until is not None else "sleep", "id": self.id}


Entry = StepEntry | ParallelEntry | BranchEntry | LoopEntry | ForeachEntry | MapEntry | SleepEntry


def steps_of(entry: Entry) -> list[Any]:
    """The steps an entry runs (maps and sleeps have none)."""
    if isinstance(entry, StepEntry | LoopEntry | ForeachEntry):
        return [entry.step]
    if isinstance(entry, ParallelEntry):
        return list(entry.steps)
    if isinstance(entry, BranchEntry):
        return [s for _, s in entry.branches]
    return []


def output_schema_of(entry: Entry) -> Any:
    """The schema of an entry's output when it is one step's output (for conditions and maps), else None."""
    if isinstance(entry, StepEntry | LoopEntry):
        return entry.step.output_schema
    return None
