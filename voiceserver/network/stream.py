"""NetworkStream: the handle on one network run. Iterate it for events, ``await result()``, or ``cancel()`` it.

Event types (every event has ``type``, ``run_id`` (the network run) and a JSON-able ``payload``):

=========================================== ==========================================================================
routing-agent-start                         ``{network_id, iteration, task}``
routing-agent-end                           ``{task, primitive_id, primitive_type, prompt, selection_reason,
                                            iteration, is_complete, usage}``
agent-execution-start                       ``{agent_id, agent_run_id, prompt, iteration}``
agent-execution-event-<chunk type>          the inner agent chunk's payload plus ``{agent_id, agent_run_id}``
agent-execution-approval                    ``{agent_id, agent_run_id, tool_call_id, tool_name, args}``
agent-execution-suspended                   ``{agent_id, agent_run_id, tool_call_id, tool_name, args,
                                            suspend_payload}``
agent-execution-end                         ``{agent_id, agent_run_id, result, finish_reason, iteration, usage}``
workflow-execution-start                    ``{workflow_id, workflow_run_id, input, iteration}``
workflow-execution-event-<workflow event>   the workflow event's payload plus ``{workflow_id, workflow_run_id}``
workflow-execution-suspended                ``{workflow_id, workflow_run_id, suspended, suspend_payload}``
workflow-execution-end                      ``{workflow_id, workflow_run_id, status, result, error, iteration}``
tool-execution-start                        ``{tool_call_id, tool_name, args, iteration}``
tool-execution-approval                     ``{tool_call_id, tool_name, args}``
tool-execution-suspended                    ``{tool_call_id, tool_name, args, suspend_payload}``
tool-execution-end                          ``{tool_call_id, tool_name, args, result, is_error, declined,
                                            iteration}``
network-execution-event-step-finish         ``{task, result, is_complete, iteration}``
network-object                              ``{object}``: the partial structured object so far
network-object-result                       ``{object}``: the validated structured object (JSON form)
network-execution-event-finish              ``{task, result, is_complete, iteration, reason, object, usage}``
error                                       ``{code, message}``
=========================================== ==========================================================================

A run that waits for an approval or a resume ends its stream after the ``*-approval`` / ``*-suspended`` event;
``result().status`` is then "suspended" and ``result().pending`` says what it waits for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..llm.base import Usage
from ..logs import get_logger
from ..runs.stream import RunStream
from .errors import NetworkError

log = get_logger("NETWORK")
DEFAULT_MAX_EVENTS = 20_000


@dataclass(slots=True)
class NetworkEvent:
    """One event of a network run."""

    type: str
    run_id: str
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "run_id": self.run_id, "payload": self.payload}


@dataclass
class NetworkResult:
    """How a network run ended.

    ``status``: "success" (the routing agent or the completion check said done), "max_steps" (stopped at the
    limit), "suspended" (waiting: see ``pending``), "failed" (see ``error``) or "aborted".
    ``result`` is the answer for the user; ``object`` the validated structured output when one was asked for.
    """

    run_id: str
    status: str
    task: str = ""
    result: str = ""
    is_complete: bool = False
    iteration: int = 0
    reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    object: Any = None
    pending: dict[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    error: Exception | None = None

    @property
    def suspended(self) -> bool:
        return self.status == "suspended"


class _Runner(Protocol):
    async def execute(self, stream: NetworkStream) -> NetworkResult: ...
    async def abort(self, stream: NetworkStream) -> NetworkResult: ...
    async def fail(self, stream: NetworkStream, exc: BaseException) -> NetworkResult: ...


class NetworkStream(RunStream[NetworkEvent, NetworkResult]):
    """Async iterable of :class:`NetworkEvent`; ``await result()`` gives the :class:`NetworkResult` once the run
    ends or suspends, and raises the run's :class:`NetworkError` when it failed.

    The run executes in its own task, started when the stream is created inside a running event loop. Events are
    kept (up to ``max_events``) so every iterator sees the whole run and ``result()`` never waits on a reader.
    Cancelling a task that iterates the stream (or awaits ``result()``) cancels the run, like ``cancel()``.
    """

    _kind = "network"
    _log = log

    def __init__(self, runner: _Runner, run_id: str, *, max_events: int = DEFAULT_MAX_EVENTS):
        super().__init__(run_id, max_items=max_events)
        self._runner = runner

    @property
    def events(self) -> list[NetworkEvent]:
        """The events emitted so far."""
        return list(self._items)

    async def cancel(self, heard_text: str | None = None) -> NetworkResult:
        """Stop the run; the running primitive is cancelled. Returns the final result (status "aborted").

        ``heard_text`` is accepted so a voice session can cancel any stream alike; a network run keeps its own
        record of the steps, so it is not used."""
        self._request_abort()
        return await self._join()

    # --- producing (used by the runner) ----------------------------------------------------------------------------

    def emit(self, event_type: str, payload: dict[str, Any]) -> NetworkEvent:
        if self._full:
            raise NetworkError("stream_overflow", f"the network run produced more than {self._max_items} events")
        event = NetworkEvent(event_type, self.run_id, payload)
        self._append(event)
        return event

    # --- RunStream hooks (a cancelled consumer stops the run: the base class default) -------------------------------

    async def _execute(self) -> NetworkResult:
        return await self._runner.execute(self)

    async def _abort(self) -> NetworkResult:
        return await self._runner.abort(self)

    async def _fail(self, exc: Exception) -> NetworkResult:
        return await self._runner.fail(self, exc)

    def _failed_result(self, exc: Exception) -> NetworkResult:
        return NetworkResult(self.run_id, "failed", error=NetworkError("network_failed", str(exc)))

    def _aborted_result(self) -> NetworkResult:
        return NetworkResult(self.run_id, "aborted")

    def _failure(self, result: NetworkResult) -> BaseException | None:
        return result.error if result.status == "failed" else None
