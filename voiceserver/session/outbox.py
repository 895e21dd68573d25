"""A bounded, flushable queue of outbound events for one session.

Producers ``await put(event)`` and wait while the outbox is full (backpressure on the turn, never unbounded growth);
the gateway's send task ``await get()``. On barge-in :meth:`flush` drops every queued event whose class is
``flushable`` (reply text and audio) in one step, keeping control events in order. Once closed, ``put`` discards and
``get`` raises :class:`OutboxClosed` after the remaining events are drained.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .events import Event


class OutboxClosed(Exception):
    """The session is over and everything queued has been taken."""


class Outbox:
    def __init__(self, maxsize: int = 1000):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[Event] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self.closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, event: Event) -> None:
        """Queue an event, waiting while the outbox is full."""
        while not self.closed and len(self._items) >= self.maxsize:
            self._not_full.clear()
            await self._not_full.wait()
        self.put_nowait(event, force=True)

    def put_nowait(self, event: Event, *, force: bool = False) -> bool:
        """Queue without waiting. Control events are always accepted (``force``); returns False if dropped."""
        if self.closed:
            self.dropped += 1
            return False
        if not force and len(self._items) >= self.maxsize:
            self.dropped += 1
            return False
        self._items.append(event)
        self._not_empty.set()
        return True

    async def get(self) -> Event:
        while not self._items:
            if self.closed:
                raise OutboxClosed
            self._not_empty.clear()
            await self._not_empty.wait()
        event = self._items.popleft()
        if len(self._items) < self.maxsize:
            self._not_full.set()
        return event

    def flush(self) -> int:
        """Drop queued flushable events (reply text and audio); returns how many were dropped."""
        before = len(self._items)
        self._items = deque(e for e in self._items if not e.flushable)
        self._not_full.set()
        return before - len(self._items)

    def close(self) -> None:
        """No more events; waiting producers and the consumer are released."""
        self.closed = True
        self._not_empty.set()
        self._not_full.set()
