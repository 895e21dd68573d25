"""Prometheus metrics, one registry per server (no process-global state, so two servers fit in one process).

Stages receive a :class:`Metrics` at construction; ``Metrics.null()`` gives a private registry for code and tests
that do not care.
"""

from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric the server exports, names prefixed ``voiceserver_``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "voiceserver_stage_seconds", "Latency of a pipeline stage", ["stage"], registry=r, buckets=_LATENCY_BUCKETS
        )
        self.voice_to_voice_seconds = Histogram(
            "voiceserver_voice_to_voice_seconds", "End of user speech to first reply audio byte sent",
            registry=r, buckets=_LATENCY_BUCKETS,
        )
        self.engine_wait_seconds = Histogram(
            "voiceserver_engine_wait_seconds", "Time a call waited for a free engine slot", ["engine"],
            registry=r, buckets=_LATENCY_BUCKETS,
        )
        self.engine_queue_depth = Gauge(
            "voiceserver_engine_queue_depth", "Calls waiting for an engine slot", ["engine"], registry=r
        )
        self.engine_busy = Gauge("voiceserver_engine_busy", "Calls running on an engine", ["engine"], registry=r)
        self.provider_calls = Counter(
            "voiceserver_provider_calls_total", "Provider calls by outcome", ["provider", "operation", "outcome"],
            registry=r,
        )
        self.provider_fallbacks = Counter(
            "voiceserver_provider_fallbacks_total", "Switches to a fallback provider", ["operation"], registry=r
        )
        self.sessions = Gauge("voiceserver_sessions", "Open voice sessions", ["gateway"], registry=r)
        self.turns = Counter("voiceserver_turns_total", "Completed user turns", ["outcome"], registry=r)
        self.barge_ins = Counter("voiceserver_barge_ins_total", "Replies interrupted by the caller", registry=r)
        self.backchannels = Counter("voiceserver_backchannels_total",
                                    "Sounds during a reply that paused it and let it go on (a cough, a mm-hmm)",
                                    registry=r)
        self.errors = Counter("voiceserver_errors_total", "Errors sent to clients, by code", ["code"], registry=r)
        self.vad_lag_seconds = Histogram(
            "voiceserver_vad_lag_seconds", "From an audio frame's arrival to its VAD decision", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )
        self.engines_loaded = Gauge("voiceserver_engine_loaded", "1 once an engine is loaded", ["engine"], registry=r)
        self.gc_pause_seconds = Histogram(
            "voiceserver_gc_pause_seconds", "Python garbage collections, by generation: the event loop stands still "
            "for each", ["generation"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )

    @classmethod
    def null(cls) -> Metrics:
        return cls(CollectorRegistry())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GcPauses:
    """Times every garbage collection of the process (``gc.callbacks``) into ``voiceserver_gc_pause_seconds``.

    A full collection walks every tracked object and stops the event loop meanwhile: with hundreds of sessions it is
    the usual suspect for a p99 frame lag far above the p95. ``install()`` once per process; ``remove()`` undoes it.
    """

    def __init__(self, metrics: Metrics):
        self._histogram = metrics.gc_pause_seconds
        self._by_generation = {g: self._histogram.labels(str(g)) for g in range(3)}
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info.get("generation", 2)].observe(time.perf_counter() - self._started)

    def install(self) -> GcPauses:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
