"""RunStream: the handle machinery shared by :class:`~voiceserver.agent.stream.AgentStream` and
:class:`~voiceserver.network.stream.NetworkStream`.

One run executes in its own task (started when the stream is created inside a running event loop). What it emits is
kept in an in-memory log, bounded by the subclass, so every reader iterates the whole run from its start with its own
cursor and waiting for the result never depends on a reader. The run ends with exactly one result: the run's own, the
abort path's when it was cancelled, or a fallback when even that failed.

A subclass supplies what differs: the run itself (``_execute``), the abort and failure paths (``_abort``, ``_fail``),
the fallback results, what an append may add (its own bound and error), and what happens when a consumer task is
cancelled while it waits on the stream (``_consumer_cancelled``; by default: stop the run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Generic, TypeVar

from ..logs import ComponentLogger, get_logger

E = TypeVar("E")
R = TypeVar("R")


class RunStream(Generic[E, R]):
    """Base class: a replayable log of ``E`` values produced by one background run whose outcome is an ``R``."""

    _kind: ClassVar[str] = "run"  # names the task ("<kind>-run-<run_id>") and the finishing-failure log line
    _log: ClassVar[ComponentLogger] = get_logger("RUN")

    def __init__(self, run_id: str, *, max_items: int):
        self.run_id = run_id
        self._max_items = max_items
        self._items: list[E] = []
        self._wakeup = asyncio.Event()  # replaced on every wake-up: each waiter waits on the event it saw
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._abort_requested = False
        self._finished = False
        self._result: R | None = None

    # --- hooks for subclasses ----------------------------------------------------------------------------------------

    async def _execute(self) -> R:
        """Run to the end and return the result."""
        raise NotImplementedError

    async def _abort(self) -> R:
        """The run was cancelled (or asked to stop before it started): finish it and return the aborted result."""
        raise NotImplementedError

    async def _fail(self, exc: Exception) -> R:
        """The run raised ``exc``: record the failure and return the failed result."""
        raise NotImplementedError

    def _failed_result(self, exc: Exception) -> R:
        """The result when the abort or failure path itself raised ``exc`` (already logged)."""
        raise NotImplementedError

    def _aborted_result(self) -> R:
        """The result when the run was cancelled again while aborting (event loop shutdown)."""
        raise NotImplementedError

    def _failure(self, result: R) -> BaseException | None:
        """The error :meth:`result` raises for this result: the run's error when the run failed, else None."""
        raise NotImplementedError

    def _consumer_cancelled(self) -> None:
        """A task iterating the stream or awaiting its result was cancelled: by default that stops the run."""
        self._request_abort()

    # --- consuming ---------------------------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[E]:
        return RunStreamCursor(self)

    @property
    def done(self) -> bool:
        return self._finished

    async def result(self) -> R:
        """Wait for the run to end (or suspend) and return its result; raises the run's error when it failed.

        Cancelling the awaiting task counts as its consumer going away (see ``_consumer_cancelled``).
        """
        result = await self._join_as_consumer()
        error = self._failure(result)
        if error is not None:
            raise error
        return result

    async def _join(self) -> R:
        """Wait for the run to end and return its result; cancelling the waiter does not stop the run."""
        self._ensure_started()
        assert self._task is not None
        await asyncio.shield(self._task)
        return self._final()

    async def _join_as_consumer(self) -> R:
        """Like :meth:`_join`, but a waiter cancelled meanwhile is a consumer gone: see ``_consumer_cancelled``."""
        try:
            return await self._join()
        except asyncio.CancelledError:
            self._consumer_cancelled()
            raise

    # --- producing ---------------------------------------------------------------------------------------------------

    @property
    def _full(self) -> bool:
        return len(self._items) >= self._max_items

    def _append(self, item: E) -> None:
        """Add ``item`` to the log and wake the readers (the subclass checks its bound first)."""
        self._items.append(item)
        self._wake()

    def _wake(self) -> None:
        event, self._wakeup = self._wakeup, asyncio.Event()
        event.set()

    def start(self) -> None:
        """Start the run now if an event loop is running."""
        with contextlib.suppress(RuntimeError):
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._produce(), name=f"{self._kind}-run-{self.run_id}")

    def _request_abort(self) -> None:
        """Stop the run: cancel its task while it runs; before that, the task goes straight to the abort path."""
        if self._finished:
            return
        if self._task is not None and self._running and not self._task.done():
            self._task.cancel()
        else:
            self._abort_requested = True

    async def _produce(self) -> None:
        self._running = True
        result: R | None = None
        try:
            try:
                if self._abort_requested:
                    raise asyncio.CancelledError
                result = await self._execute()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # this task handles its own cancellation: the abort below must be able to await
                result = await self._abort()
            except Exception as exc:  # noqa: BLE001 - any failure becomes the run's error event and result
                result = await self._fail(exc)
        except asyncio.CancelledError:
            pass  # cancelled again while aborting (event loop shutdown): end with an aborted result
        except Exception as exc:  # noqa: BLE001 - logged with its traceback just below
            self._log.exception(f"{self._kind} run failed while finishing")
            result = self._failed_result(exc)
        finally:
            self._result = result if result is not None else self._aborted_result()
            self._finished = True
            self._wake()

    def _final(self) -> R:
        assert self._result is not None
        return self._result


class RunStreamCursor(Generic[E]):
    """One reader's cursor over a :class:`RunStream`'s log: replays it from the start, then waits for more."""

    def __init__(self, stream: RunStream[E, Any]):
        self._stream = stream
        self._index = 0
        stream._ensure_started()

    def __aiter__(self) -> RunStreamCursor[E]:
        return self

    async def __anext__(self) -> E:
        stream = self._stream
        while True:
            if self._index < len(stream._items):
                item = stream._items[self._index]
                self._index += 1
                return item
            if stream._finished:
                raise StopAsyncIteration
            wakeup = stream._wakeup
            try:
                await wakeup.wait()
            except asyncio.CancelledError:
                stream._consumer_cancelled()
                raise

    def __repr__(self) -> str:
        return f"<{type(self._stream).__name__} iterator run_id={self._stream.run_id} at={self._index}>"
