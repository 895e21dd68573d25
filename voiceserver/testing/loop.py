"""Check that work stays off the event loop: count loop ticks while it runs.

    async with LoopTicker() as ticker:
        await engine.transcribe(audio)
    assert ticker.ticks >= 10   # blocking work on the loop would have stopped the count

Assert on the count, never on time.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LoopTicker:
    """A task that counts how often it gets to run (every ``interval_s``) while the block is inside."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> LoopTicker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)  # let it start counting
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
