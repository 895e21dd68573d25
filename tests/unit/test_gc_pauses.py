"""voiceserver_gc_pause_seconds: every collection of the process is timed, by generation, while installed."""

import gc

from voiceserver.metrics import GcPauses, Metrics


def count(metrics: Metrics, generation: int) -> float:
    return metrics.registry.get_sample_value("voiceserver_gc_pause_seconds_count", {"generation": str(generation)})


def test_each_collection_is_timed_by_generation_until_removed():
    metrics = Metrics.null()
    pauses = GcPauses(metrics).install()
    try:
        assert pauses.install() is pauses and gc.callbacks.count(pauses) == 1  # installing twice adds nothing
        gc.collect()
        gc.collect(0)
        assert count(metrics, 2) >= 1 and count(metrics, 0) >= 1
        total = metrics.registry.get_sample_value("voiceserver_gc_pause_seconds_sum", {"generation": "2"})
        assert 0 < total < 10
    finally:
        pauses.remove()
    before = count(metrics, 2)
    gc.collect()
    assert count(metrics, 2) == before and pauses not in gc.callbacks
