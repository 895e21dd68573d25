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

from collections.abc import AsyncIterator
from typing import Protocol

from ..logs import get_logger
from ..runs.stream import RunStream
from .chunks import AgentChunk, AgentResult
from .errors import AgentError

log = get_logger("AGENT")
DEFAULT_MAX_CHUNKS = 20_000
_TERMINAL_CHUNKS = ("finish", "error", "abort")  # always fit: a full stream can still end


class _Runner(Protocol):
    async def execute(self, stream: AgentStream) -> AgentResult: ...
    async def abort(self, stream: AgentStream, heard_text: str | None) -> AgentResult: ...
    async def fail(self, stream: AgentStream, exc: BaseException) -> AgentResult: ...
    async def apply_heard_text(self, heard_text: str) -> None: ...


class AgentStream(RunStream[AgentChunk, AgentResult]):
    """Async iterable of :class:`AgentChunk`; ``await result()`` gives the :class:`AgentResult` (the same object
    ``generate`` returns) and raises the run's :class:`AgentError` if the run failed."""

    _kind = "agent"
    _log = log

    def __init__(self, runner: _Runner, run_id: str, *, max_chunks: int = DEFAULT_MAX_CHUNKS):
        super().__init__(run_id, max_items=max_chunks)
        self._runner = runner
        self._cancel_sent = False
        self._heard: str | None = None
        self._heard_applied: str | None = None  # the heard text last applied after the run ended
        self.finishing = False  # set by the runner once the run is past the point where cancelling makes sense

    # --- consuming -------------------------------------------------------------------------------------------------

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
        return list(self._items)

    async def cancel(self, heard_text: str | None = None) -> AgentResult:
        """Stop the run (see the module notes); returns the final result ("aborted" when this stopped it)."""
        if heard_text is not None and not heard_text.strip():
            heard_text = None
        if not self._finished and not self.finishing and not self._cancel_sent:
            self._heard = heard_text
            self._request_abort()
        result = await self._join()
        # A reply may be cut twice: at its length limit (memory keeps what will be spoken), then by a barge-in
        # (memory keeps what was heard): each different heard text replaces the previous one.
        if heard_text and self._heard != heard_text and self._heard_applied != heard_text:
            self._heard_applied = heard_text
            try:
                await self._runner.apply_heard_text(heard_text)
            except Exception:
                log.exception("could not record what the caller heard")
        return result

    # --- producing (used by the runner) ----------------------------------------------------------------------------

    def emit(self, chunk: AgentChunk) -> None:
        if self._full and chunk.type not in _TERMINAL_CHUNKS:
            raise AgentError("stream_overflow", f"the run produced more than {self._max_items} chunks")
        self._append(chunk)

    # --- RunStream hooks -------------------------------------------------------------------------------------------

    def _request_abort(self) -> None:
        self._cancel_sent = True
        super()._request_abort()

    def _consumer_cancelled(self) -> None:
        # A consumer going away stops the run, unless it is already stopping or past the point of no return.
        if not self._finished and not self.finishing and not self._cancel_sent:
            self._heard = None
            self._request_abort()

    async def _execute(self) -> AgentResult:
        return await self._runner.execute(self)

    async def _abort(self) -> AgentResult:
        return await self._runner.abort(self, self._heard)

    async def _fail(self, exc: Exception) -> AgentResult:
        return await self._runner.fail(self, exc)

    def _failed_result(self, exc: Exception) -> AgentResult:
        return AgentResult(run_id=self.run_id, finish_reason="error", error=AgentError("agent_failed", str(exc)))

    def _aborted_result(self) -> AgentResult:
        return AgentResult(run_id=self.run_id, finish_reason="aborted")

    def _failure(self, result: AgentResult) -> BaseException | None:
        return result.error if result.finish_reason == "error" else None
