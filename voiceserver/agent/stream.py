"""AgentStream: the handle on one run. Iterate it for chunks, await ``result()``, or ``cancel()`` it.

The run executes in its own task, started as soon as the stream is created inside a running event loop. Chunks are
kept (up to ``max_chunks``) so every iterator sees the whole run from its start and ``result()`` never deadlocks
when nobody iterates. Rules a caller can rely on:

- Cancelling a task that is iterating the stream (or awaiting ``result()``) cancels the run, exactly like
  ``await stream.cancel()``: the model stops, cancellable tools are cancelled, an abort chunk ends the stream.
- ``await stream.cancel(heard_text)`` during the run: as above, and with memory the turn is saved as the user
  message plus an assistant message holding exactly ``heard_text`` (metadata ``{"interrupted": true}``).
- ``await stream.cancel(heard_text)`` after the run ended (the reply was still being spoken, or the iterating task
  was cancelled first): nothing is re-run; with memory the saved reply is corrected to ``heard_text``.
- ``result()`` raises the run's :class:`AgentError` when it failed (the stream then ended with an error chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from ..logs import get_logger
from .chunks import AgentChunk, AgentResult
from .errors import AgentError

log = get_logger("AGENT")
DEFAULT_MAX_CHUNKS = 20_000


class _Runner(Protocol):
    async def execute(self, stream: AgentStream) -> AgentResult: ...
    async def abort(self, stream: AgentStream, heard_text: str | None) -> AgentResult: ...
    async def fail(self, stream: AgentStream, exc: BaseException) -> AgentResult: ...
    async def apply_heard_text(self, heard_text: str) -> None: ...


class AgentStream:
    """Async iterable of :class:`AgentChunk`; ``await result()`` gives the :class:`AgentResult`."""

    def __init__(self, runner: _Runner, run_id: str, *, max_chunks: int = DEFAULT_MAX_CHUNKS):
        self.run_id = run_id
        self._runner = runner
        self._max_chunks = max_chunks
        self._chunks: list[AgentChunk] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._abort_requested = False
        self._cancel_sent = False
        self._heard: str | None = None
        self._heard_applied = False
        self.finishing = False  # set by the runner once the run is past the point where cancelling makes sense
        self._finished = False
        self._result: AgentResult | None = None

    # --- consuming -------------------------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[AgentChunk]:
        return _ChunkIterator(self)

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Only the text deltas (Mastra's ``textStream``)."""
        return self._text_deltas()

    async def _text_deltas(self) -> AsyncIterator[str]:
        async for chunk in self:
            if chunk.type == "text-delta":
                yield chunk.payload.get("text", "")

    @property
    def chunks(self) -> list[AgentChunk]:
        """The chunks emitted so far."""
        return list(self._chunks)

    @property
    def done(self) -> bool:
        return self._finished

    async def result(self) -> AgentResult:
        """Wait for the run to end; the same object ``generate`` returns. Raises AgentError if the run failed."""
        self._ensure_started()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._finished:
                self._consumer_cancelled()
            raise
        result = self._final()
        if result.finish_reason == "error" and result.error is not None:
            raise result.error
        return result

    async def cancel(self, heard_text: str | None = None) -> AgentResult:
        """Stop the run (see the module notes); returns the final result ("aborted" when this stopped it)."""
        if heard_text is not None and not heard_text.strip():
            heard_text = None
        if not self._finished and not self.finishing and not self._cancel_sent:
            self._heard = heard_text
            self._request_abort()
        self._ensure_started()
        assert self._task is not None
        await asyncio.shield(self._task)
        result = self._final()
        if heard_text and not self._heard_applied and self._heard != heard_text:
            self._heard_applied = True
            try:
                await self._runner.apply_heard_text(heard_text)
            except Exception:
                log.exception("could not record what the caller heard")
        return result

    # --- producing (used by the runner) ----------------------------------------------------------------------------

    def emit(self, chunk: AgentChunk) -> None:
        if len(self._chunks) >= self._max_chunks and chunk.type not in ("finish", "error", "abort"):
            raise AgentError("stream_overflow", f"the run produced more than {self._max_chunks} chunks")
        self._chunks.append(chunk)
        self._wake()

    def _wake(self) -> None:
        event, self._wakeup = self._wakeup, asyncio.Event()
        event.set()

    def _ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._produce(), name=f"agent-run-{self.run_id}")

    def start(self) -> None:
        """Start the run now if an event loop is running (``Agent.stream`` does this)."""
        with contextlib.suppress(RuntimeError):
            self._ensure_started()

    def _request_abort(self) -> None:
        self._cancel_sent = True
        if self._task is not None and self._running and not self._task.done():
            self._task.cancel()
        else:
            self._abort_requested = True  # not running yet: the task goes straight to the abort path

    def _consumer_cancelled(self) -> None:
        if not self._finished and not self.finishing and not self._cancel_sent:
            self._heard = None
            self._request_abort()

    async def _produce(self) -> None:
        self._running = True
        result: AgentResult | None = None
        try:
            try:
                if self._abort_requested:
                    raise asyncio.CancelledError
                result = await self._runner.execute(self)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # this task handles its own cancellation: the abort below must be able to await
                result = await self._runner.abort(self, self._heard)
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error chunk and result
                result = await self._runner.fail(self, exc)
        except asyncio.CancelledError:
            pass  # cancelled again while aborting (event loop shutdown): end with an aborted result
        except Exception as exc:
            log.exception("agent run failed while finishing")
            result = AgentResult(run_id=self.run_id, finish_reason="error", error=AgentError("agent_failed", str(exc)))
        finally:
            if result is None:
                result = AgentResult(run_id=self.run_id, finish_reason="aborted")
            self._result = result
            self._finished = True
            self._wake()

    def _final(self) -> AgentResult:
        assert self._result is not None
        return self._result


class _ChunkIterator:
    """One reader's cursor over the stream's chunks."""

    def __init__(self, stream: AgentStream):
        self._stream = stream
        self._index = 0
        stream._ensure_started()

    def __aiter__(self) -> _ChunkIterator:
        return self

    async def __anext__(self) -> AgentChunk:
        stream = self._stream
        while True:
            if self._index < len(stream._chunks):
                chunk = stream._chunks[self._index]
                self._index += 1
                return chunk
            if stream._finished:
                raise StopAsyncIteration
            event = stream._wakeup
            try:
                await event.wait()
            except asyncio.CancelledError:
                stream._consumer_cancelled()
                raise

    def __repr__(self) -> str:
        return f"<AgentStream iterator run_id={self._stream.run_id} at={self._index}>"

