"""Per-step overhead of the workflow engine on pure steps (no I/O).

A chain of N trivial steps (``.then`` x N, input and output schemas on each) runs many times; the baseline calls
the same step functions directly in the same process. Overhead per step = (run time - median baseline time) / N.
Variants: a store that keeps nothing (engine only), the default InMemoryRunStore (snapshot every step end), the
same with a watcher (every event built and delivered), and LanceDBStore when it exists (measured separately: each
snapshot is a LanceDB write).

    .venv/bin/python scripts/bench_workflow.py [--steps 100] [--runs 200] [--lancedb-runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from voiceserver.runs.store import InMemoryRunStore, RunRecord
from voiceserver.workflows import create_step, create_workflow

TARGET_US = 1000.0


class Num(BaseModel):
    value: int


def inc(ctx: Any) -> dict[str, int]:
    return {"value": ctx.input_data.value + 1}


class NullRunStore:
    """Accepts snapshots and keeps nothing: isolates the engine from storage cost."""

    async def save_run(self, record: RunRecord) -> None:
        return None

    async def load_run(self, kind: str, run_id: str) -> RunRecord | None:
        return None

    async def list_runs(self, kind: str, owner_id: str | None = None, resource_id: str | None = None,
                        status: str | None = None, limit: int = 100) -> list[RunRecord]:
        return []

    async def delete_run(self, kind: str, run_id: str) -> None:
        return None


def build(steps: int, storage: Any) -> Any:
    wf = create_workflow(id="bench", input_schema=Num, output_schema=Num, storage=storage)
    for i in range(steps):
        wf.then(create_step(id=f"s{i}", input_schema=Num, output_schema=Num, execute=inc))
    return wf.commit()


def baseline_run(fns: list[Any]) -> float:
    t0 = time.perf_counter()
    value = 0
    for fn in fns:
        value = fn(SimpleNamespace(input_data=SimpleNamespace(value=value)))["value"]
    elapsed = time.perf_counter() - t0
    assert value == len(fns)
    return elapsed


async def engine_runs(wf: Any, runs: int, steps: int, watch: bool) -> list[float]:
    times = []
    for _ in range(runs):
        run = await wf.create_run()
        if watch:
            run.watch(lambda event: None)
        t0 = time.perf_counter()
        result = await run.start(input_data={"value": 0})
        times.append(time.perf_counter() - t0)
        assert result.status == "success" and result.result == {"value": steps}, result.error
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def report(name: str, times: list[float], base: float, steps: int, against_target: bool = True) -> None:
    per_step = [(t - base) / steps * 1e6 for t in times]
    med = statistics.median(per_step)
    verdict = (f"{'under' if med < TARGET_US else 'OVER'} {TARGET_US:.0f} us target" if against_target
               else "storage-bound (one LanceDB write per step end)")
    print(f"{name:<34} median {med:8.1f} us/step   p95 {p95(per_step):8.1f} us/step   "
          f"run {statistics.median(times) * 1e3:8.2f} ms   x{statistics.median(times) / base:8.1f} baseline   "
          f"{verdict}")


def lancedb_store(directory: str) -> Any:
    try:
        from voiceserver.memory import LanceDBStore
    except ImportError:
        try:
            from voiceserver import LanceDBStore  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return None
    return LanceDBStore(uri=directory)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--lancedb-runs", type=int, default=5)
    args = parser.parse_args()
    steps = args.steps

    fns = [inc] * steps
    for _ in range(50):
        baseline_run(fns)
    base_times = [baseline_run(fns) for _ in range(max(args.runs, 200))]
    base = statistics.median(base_times)
    print(f"chain of {steps} pure steps, {args.runs} runs each; baseline (direct calls) "
          f"median {base * 1e6:.1f} us per run = {base / steps * 1e6:.2f} us per step")

    for name, storage, watch in (("engine only (null store)", NullRunStore(), False),
                                 ("InMemoryRunStore, snapshot/step", InMemoryRunStore(), False),
                                 ("InMemoryRunStore + watcher", InMemoryRunStore(), True)):
        wf = build(steps, storage)
        await engine_runs(wf, 5, steps, watch)  # warm-up: pydantic validators, code paths
        report(name, await engine_runs(wf, args.runs, steps, watch), base, steps)

    with tempfile.TemporaryDirectory() as directory:
        store = lancedb_store(directory)
        if store is None:
            print("LanceDBStore: not available (voiceserver.memory.LanceDBStore not importable), not measured")
            return
        wf = build(steps, store)
        await engine_runs(wf, 1, steps, False)
        report("LanceDBStore, snapshot/step", await engine_runs(wf, args.lancedb_runs, steps, False), base, steps,
               against_target=False)
        close = getattr(store, "close", None)
        if close is not None:
            await close()


if __name__ == "__main__":
    asyncio.run(main())
