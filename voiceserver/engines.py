"""Shared plumbing for providers: errors with codes, bounded engine concurrency, the call policy.

Every stage base class (speech-to-text, text-to-speech, chat model) has a public method that owns timeout, retries,
metrics and error mapping through :func:`call_with_policy`; a provider writes only its ``_transcribe`` /
``_synthesize`` / ``_stream`` method. Blocking engines (faster-whisper, Piper, llama.cpp) cross into asyncio through an
:class:`EngineGate`, which bounds how many calls run at once and measures how long the others wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from .metrics import Metrics

T = TypeVar("T")


class ProviderError(Exception):
    """A provider failure with a stable code. ``retryable`` errors may be retried or fall back."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, provider: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.provider = provider

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class NotConfiguredError(ProviderError):
    """No provider is configured for an operation (for example "No speech-to-text provider configured")."""

    def __init__(self, message: str):
        super().__init__("not_configured", message)


# Transport failures, by class name (the openai SDK's and httpx's): the provider could not be reached or the
# connection broke (a reset mid-stream is a ReadError or RemoteProtocolError), so another try may succeed.
CONNECTION_ERRORS = ("APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout", "ReadTimeout",
                     "WriteTimeout", "PoolTimeout", "ReadError", "WriteError", "RemoteProtocolError", "NetworkError")


def map_exception(exc: BaseException, provider: str, operation: str) -> ProviderError:
    """Turn any exception from a provider into a ProviderError with a code a client can act on."""
    if isinstance(exc, ProviderError):
        if exc.provider is None:
            exc.provider = provider
        return exc
    if isinstance(exc, TimeoutError):
        return ProviderError(f"{operation}_timeout", f"{provider} {operation} timed out", retryable=True,
                             provider=provider)
    name = type(exc).__name__
    # The openai SDK's error classes, matched by name so this module does not import the SDK.
    status = getattr(exc, "status_code", None)
    if name in CONNECTION_ERRORS or (
        isinstance(status, int) and (status == 429 or status >= 500)
    ):
        return ProviderError(f"{operation}_unavailable", f"{provider} {operation} failed: {exc}", retryable=True,
                             provider=provider)
    if name == "AuthenticationError" or status in (401, 403):
        return ProviderError("provider_auth", f"{provider} rejected the credentials", provider=provider)
    return ProviderError(f"{operation}_failed", f"{provider} {operation} failed: {name}: {exc}", provider=provider)


async def call_with_policy(
    fn: Callable[[], Awaitable[T]],
    *,
    provider: str,
    operation: str,
    timeout_s: float,
    retries: int = 0,
    metrics: Metrics | None = None,
) -> T:
    """Run ``fn`` with a timeout, retry retryable failures with backoff, count outcomes, map errors."""
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                result = await fn()
            if metrics:
                metrics.provider_calls.labels(provider, operation, "ok").inc()
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = map_exception(exc, provider, operation)
            if metrics:
                metrics.provider_calls.labels(provider, operation, error.code).inc()
            if not error.retryable or attempt >= retries:
                raise error from exc
            attempt += 1
            await asyncio.sleep(backoff_s(attempt))


def backoff_s(attempt: int) -> float:
    """Wait before retry number ``attempt`` (1-based): 0.2 s, doubling, at most 2 s."""
    return min(0.2 * 2 ** (attempt - 1), 2.0)


async def stream_with_policy(
    open_stream: Callable[[], AsyncIterator[T]],
    *,
    provider: str,
    operation: str,
    call_label: str,
    timeout_s: float,
    first_item_timeout_s: float | None = None,
    retries: int = 0,
    metrics: Metrics,
    first_item_stage: str | None = None,
    log: Any = None,
    name: str | None = None,
) -> AsyncIterator[T]:
    """Stream a provider's items with the call policy: a timeout to the first item and for the whole stream,
    retries of retryable errors only before the first item (after it the caller has already used output),
    outcome counts (``voiceserver_provider_calls_total{operation=call_label}``), errors mapped to ProviderError
    (codes from ``operation``), and the provider's generator always closed."""
    attempt = 0
    while True:
        started = time.perf_counter()
        deadline = started + timeout_s
        produced = False
        items = open_stream().__aiter__()
        try:
            while True:
                limit = deadline - time.perf_counter()
                if not produced and first_item_timeout_s is not None:
                    limit = min(limit, first_item_timeout_s)
                try:
                    async with asyncio.timeout(max(limit, 0.001)):
                        item = await items.__anext__()
                except StopAsyncIteration:
                    break
                if not produced and first_item_stage:
                    metrics.stage_seconds.labels(first_item_stage).observe(time.perf_counter() - started)
                produced = True
                yield item
            metrics.provider_calls.labels(provider, call_label, "ok").inc()
            return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            error = map_exception(exc, provider, operation)
            metrics.provider_calls.labels(provider, call_label, error.code).inc()
            if produced or not error.retryable or attempt >= retries:
                raise error from exc
            attempt += 1
            if log is not None:
                log.warning(f"{name or provider}: {error}; retrying ({attempt}/{retries})")
            await asyncio.sleep(backoff_s(attempt))
        finally:
            await items.aclose()


class EngineGate:
    """Bounded concurrency for one engine, with queue depth and wait time exported.

    ``async with gate:`` waits for a slot; :meth:`run` runs a blocking function in a worker thread inside a slot.
    """

    def __init__(self, name: str, concurrency: int, metrics: Metrics | None = None):
        self.name = name
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._metrics = metrics or Metrics.null()
        self.waiting = 0
        self.busy = 0

    async def __aenter__(self) -> EngineGate:
        start = time.perf_counter()
        self.waiting += 1
        self._metrics.engine_queue_depth.labels(self.name).set(self.waiting)
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
            self._metrics.engine_queue_depth.labels(self.name).set(self.waiting)
        self._metrics.engine_wait_seconds.labels(self.name).observe(time.perf_counter() - start)
        self.busy += 1
        self._metrics.engine_busy.labels(self.name).set(self.busy)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Free a slot taken with ``async with`` / ``acquire`` (sync, so a thread's done-callback can call it)."""
        self.busy -= 1
        self._metrics.engine_busy.labels(self.name).set(self.busy)
        self._sem.release()

    async def acquire(self) -> None:
        """Take a slot (waiting, measured); pair with :meth:`release`."""
        await self.__aenter__()

    def hold_until_done(self, future: asyncio.Future) -> None:
        """Keep the slot until ``future`` (a worker thread) ends, then free it.

        Threads cannot be killed: a caller who stops waiting (barge-in, timeout) returns at once, while the slot
        stays taken until the thread really finishes, so the engine is never over-subscribed.
        """
        future.add_done_callback(lambda _f: self.release())

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a worker thread inside a slot; cancelling the caller returns immediately."""
        await self.acquire()
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self.hold_until_done(future)
        return await asyncio.shield(future)


class LiveActivity:
    """Counts the live engine work in progress in one server: a speech-to-text transcription, a speech synthesis, a
    live chat-model call. Background work (working-memory extraction, titles, summaries) waits while it is busy.

    One per server, built by the composition root and handed to every engine (no process-global state: two servers
    in one process do not slow each other's background work). Thread-safe: live work is marked from the event loop,
    background work polls it from worker threads (:meth:`wait_idle`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._idle = threading.Event()
        self._idle.set()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.started = 0  # live operations begun since creation (tests and metrics read it)

    @property
    def busy(self) -> bool:
        """True while any live work runs."""
        return not self._idle.is_set()

    @property
    def active(self) -> int:
        """How many live operations are running now."""
        return self._count

    def begin(self) -> None:
        """Mark the start of one live operation; pair with :meth:`end`."""
        with self._lock:
            self._count += 1
            self.started += 1
            self._idle.clear()

    def end(self) -> None:
        """Mark the end of one live operation."""
        with self._lock:
            self._count = max(0, self._count - 1)
            if self._count != 0:
                return
            self._idle.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future)

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        """``with activity.live():`` around one live operation (sync or async code alike)."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block the calling (worker) thread until no live work runs, at most ``timeout`` s; True if idle."""
        return self._idle.wait(timeout)

    async def wait_idle_async(self, timeout: float | None = None) -> bool:
        """Wait on the event loop until no live work runs, at most ``timeout`` s; True if idle."""
        with self._lock:
            if self._count == 0:
                return True
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((asyncio.get_running_loop(), future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            # a waiter that gave up is not kept: a caller polling while busy would pile them up
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((asyncio.get_running_loop(), future))
            return not self.busy
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def live_scope(activity: LiveActivity | None) -> contextlib.AbstractContextManager[None]:
    """``activity.live()``, or nothing when the engine was built without a LiveActivity."""
    return activity.live() if activity is not None else contextlib.nullcontext()


async def iterate_in_thread(
    gate: EngineGate, produce: Callable[[Callable[[Any], bool]], None], maxsize: int = 8,
    executor: Executor | None = None,
) -> AsyncIterator[Any]:
    """Stream items from a blocking producer running in a worker thread, through a bounded queue.

    ``produce(emit)`` runs in the thread and calls ``emit(item)`` for each item; ``emit`` returns False once the
    consumer has gone away, and the producer should stop then. The whole generator is consumed inside the thread.
    Closing the iterator early returns at once; the engine slot is freed when the thread has stopped.
    ``executor``: run the producer there instead of asyncio's default executor (background work runs on threads of
    its own, with a lower OS priority).
    """
    loop = asyncio.get_running_loop()
    # The queue itself is unbounded but at most `maxsize` items (plus one end marker) are ever in it: `space`
    # counts free places and the producer thread waits on it.
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stopped = threading.Event()
    space = threading.Semaphore(maxsize)

    def emit(item: Any) -> bool:
        # Block the worker thread (not the loop) while the queue is full: backpressure on the engine.
        while not space.acquire(timeout=0.1):
            if stopped.is_set():
                return False
        if stopped.is_set():
            return False
        loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
        return True

    def run() -> None:
        try:
            produce(emit)
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    await gate.acquire()
    worker = asyncio.ensure_future(asyncio.to_thread(run) if executor is None
                                   else loop.run_in_executor(executor, run))
    gate.hold_until_done(worker)
    worker.add_done_callback(_retrieve)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                space.release()
                yield value
            elif kind == "error":
                raise value
            else:
                break
    finally:
        stopped.set()
        space.release()  # unblock a producer waiting for space; it sees `stopped` and returns


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # the consumer already got any error through the queue
