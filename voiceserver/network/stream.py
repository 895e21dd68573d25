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

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..llm.base import Usage
from ..logs import get_logger
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


class NetworkStream:
    """Async iterable of :class:`NetworkEvent`; ``await result()`` gives the :class:`NetworkResult`.

    The run executes in its own task, started when the stream is created inside a running event loop. Events are
    kept (up to ``max_events``) so every iterator sees the whole run and ``result()`` never waits on a reader.
    Cancelling a task that iterates the stream (or awaits ``result()``) cancels the run, like ``cancel()``.
    """

    def __init__(self, runner: _Runner, run_id: str, *, max_events: int = DEFAULT_MAX_EVENTS):
        self.run_id = run_id
        self._runner = runner
        self._max_events = max_events
        self._events: list[NetworkEvent] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._abort_requested = False
        self._finished = False
        self._result: NetworkResult | None = None

    def __aiter__(self) -> AsyncIterator[NetworkEvent]:
        return _EventIterator(self)

    @property
    def events(self) -> list[NetworkEvent]:
        """The events emitted so far."""
        return list(self._events)

    @property
    def done(self) -> bool:
        return self._finished

    async def result(self) -> NetworkResult:
        """Wait for the run to end or suspend. Raises the run's NetworkError when it failed."""
        self._ensure_started()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self._request_abort()
            raise
        result = self._final()
        if result.status == "failed" and result.error is not None:
            raise result.error
        return result

    async def cancel(self) -> NetworkResult:
        """Stop the run; the running primitive is cancelled. Returns the final result (status "aborted")."""
        self._request_abort()
        self._ensure_started()
        assert self._task is not None
        await asyncio.shield(self._task)
        return self._final()

    # --- producing (used by the runner) ----------------------------------------------------------------------------

    def emit(self, event_type: str, payload: dict[str, Any]) -> NetworkEvent:
        if len(self._events) >= self._max_events:
            raise NetworkError("stream_overflow", f"the network run produced more than {self._max_events} events")
        event = NetworkEvent(event_type, self.run_id, payload)
        self._events.append(event)
        event_set, self._wakeup = self._wakeup, asyncio.Event()
        event_set.set()
        return event

    def start(self) -> None:
        """Start the run now if an event loop is running."""
        with contextlib.suppress(RuntimeError):
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._produce(), name=f"network-run-{self.run_id}")

    def _request_abort(self) -> None:
        if self._finished:
            return
        if self._task is not None and self._running and not self._task.done():
            self._task.cancel()
        else:
            self._abort_requested = True

    async def _produce(self) -> None:
        self._running = True
        result: NetworkResult | None = None
        try:
            try:
                if self._abort_requested:
                    raise asyncio.CancelledError
                result = await self._runner.execute(self)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # this task owns its cancellation: the abort below must be able to await
                result = await self._runner.abort(self)
            except Exception as exc:  # noqa: BLE001 - every failure becomes the run's error event and result
                result = await self._runner.fail(self, exc)
        except asyncio.CancelledError:
            pass  # cancelled again while aborting (loop shutdown): end with an aborted result
        except Exception as exc:
            log.exception("network run failed while finishing")
            result = NetworkResult(self.run_id, "failed", error=NetworkError("network_failed", str(exc)))
        finally:
            self._result = result or NetworkResult(self.run_id, "aborted")
            self._finished = True
            event, self._wakeup = self._wakeup, asyncio.Event()
            event.set()

    def _final(self) -> NetworkResult:
        assert self._result is not None
        return self._result


class _EventIterator:
    """One reader's cursor over the stream's events."""

    def __init__(self, stream: NetworkStream):
        self._stream = stream
        self._index = 0
        stream._ensure_started()

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> NetworkEvent:
        stream = self._stream
        while True:
            if self._index < len(stream._events):
                event = stream._events[self._index]
                self._index += 1
                return event
            if stream._finished:
                raise StopAsyncIteration
            wakeup = stream._wakeup
            try:
                await wakeup.wait()
            except asyncio.CancelledError:
                stream._request_abort()
                raise
