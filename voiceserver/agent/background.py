"""Work an agent does off the reply path: memory's ``after_turn`` (working-memory extraction, titles) and tools that
outlived an interrupted run.

A turn never waits for it: the next turn reads working memory as it is at that moment. ``after_turn`` runs one at a
time per thread; a turn that finishes while one is running is queued, and turns that finish meanwhile are merged
into that queued call (one extraction over all of their messages), so the work never falls behind by more than one
call however fast the turns come. Memory sends these model calls with ``priority="background"``, which the engines
serve after live work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

from ..logs import get_logger

log = get_logger("AGENT")
MAX_PENDING_MESSAGES = 200  # messages merged into one queued after_turn at most (the newest are kept)

AfterTurn = Callable[[list[Any]], Awaitable[Any]]


class BackgroundWork:
    """The background tasks of one agent; see the module notes. ``flush()`` waits for all of them."""

    def __init__(self, max_pending_messages: int = MAX_PENDING_MESSAGES):
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[Hashable, asyncio.Task[Any]] = {}
        self._queued: dict[Hashable, tuple[list[Any], AfterTurn]] = {}
        self._max_pending = max_pending_messages
        self.coalesced = 0  # turns merged into another turn's after_turn call (for tests and metrics)

    def track(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a background task that ``flush()`` waits for."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def after_turn(self, key: Hashable, messages: list[Any], run: AfterTurn) -> None:
        """Call ``run(messages)`` for thread ``key`` now, or after the call running for it (merged with any turn
        already queued there). ``run`` is the latest turn's (it carries that turn's model)."""
        if key in self._running:
            queued = self._queued.get(key)
            if queued is not None:
                self.coalesced += 1
                messages = [*queued[0], *messages]
            self._queued[key] = (messages[-self._max_pending:], run)
            return
        self._running[key] = self.track(self._drain(key, messages, run))

    async def _drain(self, key: Hashable, messages: list[Any], run: AfterTurn) -> None:
        try:
            while True:
                try:
                    await run(messages)
                except Exception:
                    log.exception("memory after_turn failed")
                queued = self._queued.pop(key, None)
                if queued is None:
                    return
                messages, run = queued
        except asyncio.CancelledError:
            self._queued.pop(key, None)  # the loop is shutting down: the queued turn goes with it
            raise
        finally:
            self._running.pop(key, None)

    def busy(self, key: Hashable) -> bool:
        """Whether after_turn work is running or queued for ``key``."""
        return key in self._running

    async def flush(self) -> None:
        while self._tasks:
            await asyncio.wait(list(self._tasks))
