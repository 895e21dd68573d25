"""An event loop on a clock the test controls: time moves only when nothing is ready to run.

    from voiceserver.testing.virtual_clock import run_virtual

    def test_barge_in():
        run_virtual(scenario())       # asyncio.sleep(5) inside returns at once, and in order

``loop.time()`` starts at 0 and jumps to the next timer whenever every task is waiting, so a timeline of sleeps,
timeouts and scripted delays runs instantly and always in the same order: a test asserts exact positions instead of
"either of two outcomes". Real I/O still works (the selector is polled first). While work submitted to an executor
(``asyncio.to_thread``, ``run_in_executor``) is running the clock stands still: the loop waits for it in real time,
so a thread's duration never lets a timeout fire early. Drive code whose engines are scripted (voiceserver.testing's
ScriptedSTT, ToneTTS, ScriptedChatModel): a real model's seconds of work would count as no time at all.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
REAL_POLL_S = 0.0005  # how long the selector is polled for real I/O before virtual time jumps ahead


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop):
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # nothing scheduled: only I/O (a thread's call_soon_threadsafe) can wake us
            return super().select(None)
        if self._loop.threads_running:  # work in a thread: wait for it for real, the clock stands still
            return super().select(min(timeout, 0.05))
        ready = super().select(min(timeout, REAL_POLL_S))
        if not ready:
            self._loop.advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (see the module notes)."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        self.threads_running = 0
        super().__init__(selector=_VirtualSelector(self))

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future:
        future = super().run_in_executor(executor, func, *args)
        self.threads_running += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future) -> None:
        self.threads_running -= 1

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself when every task waits)."""
        if seconds > 0:
            self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, debug: bool = True) -> T:
    """Run ``main`` to completion on a new :class:`VirtualClockLoop` (asyncio debug mode on by default)."""
    with asyncio.Runner(loop_factory=VirtualClockLoop, debug=debug) as runner:
        return runner.run(main)
