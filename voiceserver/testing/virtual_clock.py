"""An event loop on a clock the test controls: time moves only when nothing is ready to run.

    from voiceserver.testing.virtual_clock import run_virtual

    def test_barge_in():
        run_virtual(scenario())       # asyncio.sleep(5) inside returns at once, and in order

``loop.time()`` starts at 0 and jumps to the next timer whenever every task is waiting, so a timeline of sleeps,
timeouts and scripted delays runs instantly and always in the same order: a test asserts exact positions instead of
"either of two outcomes". Real I/O still works (the selector is polled first), but work in threads does not advance
the virtual clock: drive code whose engines are scripted (voiceserver.testing's ScriptedSTT, ToneTTS,
ScriptedChatModel), not real models.
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
        ready = super().select(min(timeout, REAL_POLL_S))
        if not ready:
            self._loop.advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (see the module notes)."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_VirtualSelector(self))

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
