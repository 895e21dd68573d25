"""Benchmark Memory on LanceDB: 100,000 messages over 1,000 callers.

Measures, in one process on one dataset:
  * recall  = Memory.prepare(): history (last 10) + semantic recall (top 3, 2 neighbours, resource scope) +
              working memory, for a random caller and thread;
  * write   = Memory.save_messages() of one turn (user + assistant message, both embedded with WordLlama).
First as the data lands (baseline: 10 bulk fragments plus one small fragment per write, nothing indexed, no
compaction), then after building the scalar indexes and compacting, with background compaction on, and finally over
a long run of interleaved turns (to show latency does not degrade as small appends pile up).

    .venv/bin/python scripts/bench_memory.py                 # full size
    .venv/bin/python scripts/bench_memory.py --messages 20000 --callers 200 --samples 100   # quicker

Prints p50 / p95 in milliseconds and the ratio baseline p95 / indexed p95. Targets: recall p95 <= 30 ms,
write p95 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voiceserver.memory import LanceDBStore, Memory, Message  # noqa: E402
from voiceserver.memory.records import thread_row  # noqa: E402
from voiceserver.memory.schema import THREADS, THREADS_SCHEMA  # noqa: E402
from voiceserver.memory.types import Thread  # noqa: E402

SUBJECTS = ["my sister", "the dog", "our garden", "the new job", "my bike", "the trip to Lisbon", "dinner",
            "the football match", "my phone", "the kitchen", "grandma", "the weather", "the concert", "my back"]
VERBS = ["is", "was", "will be", "seems", "looked", "feels"]
OBJECTS = ["great", "a bit broken", "far too expensive", "blue", "on Tuesday", "really loud", "fine again",
           "in the morning", "better than last year", "a surprise", "complicated", "sold out"]
QUERIES = ["what colour do I like", "when is the concert", "how is my sister", "what did I say about my bike",
           "where am I travelling", "is the kitchen finished"]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."


def pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000


async def timed(n: int, make: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await make(i)
        out.append(time.perf_counter() - start)
    return out


async def build(memory: Memory, store: LanceDBStore, n_messages: int, n_callers: int, batch: int) -> None:
    rng = random.Random(7)
    threads = [Thread(id=f"c{c}-t{t}", resource_id=f"caller-{c}") for c in range(n_callers) for t in range(2)]
    await store.add(THREADS, pa.Table.from_pylist([thread_row(t, None) for t in threads], schema=THREADS_SCHEMA))
    started = time.perf_counter()
    pending: list[Message] = []
    for i in range(n_messages):
        thread = threads[i % len(threads)]
        pending.append(Message("user" if i % 2 == 0 else "assistant", sentence(rng), thread.id, thread.resource_id))
        if len(pending) == batch:
            await memory._store_messages(pending)  # bulk path: one append of `batch` rows (+ their vectors)
            pending = []
    if pending:
        await memory._store_messages(pending)
    print(f"built {n_messages} messages over {n_callers} callers in {time.perf_counter() - started:.1f}s")


async def measure(memory: Memory, n_callers: int, samples: int, seed: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    picks = [(rng.randrange(n_callers), rng.randrange(2)) for _ in range(samples)]

    async def recall(i: int) -> object:
        c, t = picks[i]
        return await memory.prepare(resource_id=f"caller-{c}", thread_id=f"c{c}-t{t}", query=rng.choice(QUERIES))

    async def write(i: int) -> object:
        c, t = picks[i]
        return await memory.save_messages([Message("user", sentence(rng), f"c{c}-t{t}", f"caller-{c}"),
                                           Message("assistant", sentence(rng), f"c{c}-t{t}", f"caller-{c}")])

    return await timed(samples, recall), await timed(samples, write)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--long-run", type=int, default=1_000, help="interleaved turns in the last phase")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="LanceDB directory (default: a temporary one)")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--compact-every", type=int, default=None, help="writes per table between compactions")
    parser.add_argument("--target-rows", type=int, default=None, help="compaction's target rows per fragment")
    parser.add_argument("--full-every", type=int, default=None, help="compaction passes between index updates")
    args = parser.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    tuning = {k: v for k, v in (("compact_every", args.compact_every), ("full_every", args.full_every),
                                ("target_rows_per_fragment", args.target_rows)) if v is not None}
    store = LanceDBStore(root / "memory", maintenance=False, **tuning)
    memory = Memory(storage=store, embedder="wordllama", models_dir=args.models_dir, options={
        "last_messages": 10, "semantic_recall": {"top_k": 3, "message_range": 2, "scope": "resource"},
        "working_memory": {"enabled": True, "scope": "resource"}})
    try:
        await memory.open()
        await build(memory, store, args.messages, args.callers, args.batch)
        # Warm caches (owner cache, embedder) the same way for both phases.
        await measure(memory, args.callers, 20, seed=1)

        base_recall, base_write = await measure(memory, args.callers, args.samples, seed=2)
        print(f"baseline fragments: {await store.fragment_counts()}")

        started = time.perf_counter()
        await store.optimize()
        print(f"indexed + compacted in {time.perf_counter() - started:.1f}s: {await store.fragment_counts()}")
        store.maintenance = True
        idx_recall, idx_write = await measure(memory, args.callers, args.samples, seed=2)

        rng = random.Random(3)
        long_recall: list[float] = []
        long_write: list[float] = []
        for _ in range(args.long_run // args.samples or 1):
            r, w = await measure(memory, args.callers, args.samples, seed=rng.randrange(1 << 30))
            long_recall, long_write = r, w
        await store.close()
        print(f"after {args.long_run} more turns with background compaction: {await store.fragment_counts()} "
              f"(compaction errors: {store.maintenance_errors})")

        rows = [("recall (history + semantic + working memory)", base_recall, idx_recall, long_recall, 30.0),
                ("write one turn (2 messages, embedded)", base_write, idx_write, long_write, 20.0)]
        print(f"\n{'operation':46} {'baseline p50/p95':>18} {'indexed p50/p95':>18} {'long run p50/p95':>18} "
              f"{'ratio p95':>9}  target p95")
        for name, base, idx, long, target in rows:
            b50, b95 = pct(base)
            i50, i95 = pct(idx)
            l50, l95 = pct(long)
            verdict = "ok" if max(i95, l95) <= target else "MISSED"
            print(f"{name:46} {b50:7.2f} /{b95:7.2f}  {i50:7.2f} /{i95:7.2f}  {l50:7.2f} /{l95:7.2f}  "
                  f"{b95 / i95:8.2f}x  <= {target:.0f} ms {verdict}")
        print(f"\n(ms; {args.samples} samples each; {args.messages} messages, {args.callers} callers; "
              f"ratio = baseline p95 / indexed p95)")
    finally:
        await memory.close()
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
