"""Benchmark what durability costs a turn's write: Memory.save_messages of one turn (user + assistant message, both
embedded with WordLlama) on local disk, with ``storage.fsync`` off (the baseline), ``files`` (fsync of each commit's
new files and directories) and ``filesystem`` (one syncfs per write), in the same process, on one dataset each,
interleaved round by round so machine noise hits all alike. For reference it also times the outage path: one
journaled write (append + fsync of the local journal, what a write costs while storage is unreachable).

    .venv/bin/python scripts/bench_durability.py                       # 300 turns each
    .venv/bin/python scripts/bench_durability.py --turns 60 --dir data/bench-durability   # quicker, on this disk

Prints p50 / p95 in milliseconds of each, and the ratio of each p95 to the baseline's. The directory must be on the disk
whose cost is wanted (not a tmpfs: there fsync is free); the default is a temporary directory under ./data.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voiceserver.memory import LanceDBStore, Memory, Message  # noqa: E402
from voiceserver.memory.journal import JournalEntry, StorageJournal  # noqa: E402
from voiceserver.memory.records import message_row  # noqa: E402
from voiceserver.memory.schema import MESSAGES, MESSAGES_SCHEMA  # noqa: E402


def pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000


def turn(i: int, caller: int) -> list[Message]:
    thread, resource = f"call-{caller}", f"caller-{caller}"
    return [Message("user", f"Question number {i}: what is on my list for today?", thread, resource),
            Message("assistant", f"Answer number {i}: your list has three things on it.", thread, resource)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=300, help="turns written with each setting")
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="where the two databases go (default: under ./data)")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args()

    if args.dir is None:
        (REPO / "data").mkdir(exist_ok=True)  # on the repository's disk: /tmp may be a tmpfs
        base = Path(tempfile.mkdtemp(prefix="bench-durability-", dir=REPO / "data"))
    else:
        base = args.dir
        base.mkdir(parents=True, exist_ok=True)
    memories = {}
    modes = {"baseline": False, "files": "files", "filesystem": "filesystem"}
    for name, fsync in modes.items():
        store = LanceDBStore(base / name, fsync=fsync, maintenance=True)
        memories[name] = Memory(store, embedder="wordllama", models_dir=args.models_dir,
                                options={"semantic_recall": {"enabled": True}})
        await memories[name].open()
    journal = StorageJournal(base / "journal", max_entries=10_000_000, max_bytes=1 << 40)
    journal.open()
    samples: dict[str, list[float]] = {name: [] for name in (*modes, "journal")}
    try:
        for i in range(args.warmup + args.turns):
            order = list(modes)[i % len(modes):] + list(modes)[:i % len(modes)]  # rotate who goes first
            for name in order:
                started = time.perf_counter()
                await memories[name].save_messages(turn(i, i % args.callers))
                if i >= args.warmup:
                    samples[name].append(time.perf_counter() - started)
            rows = pa.Table.from_pylist([message_row(m) for m in turn(i, i % args.callers)], schema=MESSAGES_SCHEMA)
            started = time.perf_counter()
            await asyncio.to_thread(journal.append, JournalEntry("add", MESSAGES, "id", rows))
            if i >= args.warmup:
                samples["journal"].append(time.perf_counter() - started)
        synced = memories["files"].storage._local_sync.synced_files
    finally:
        for memory in memories.values():
            await memory.close()
        journal.entries.clear()
        journal.close()
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)

    print(f"one turn's write (2 messages + vectors), {args.turns} turns each, interleaved, on {base}")
    base_p50, base_p95 = pct(samples["baseline"])
    for name, label in (("baseline", "fsync off (baseline)"), ("files", "storage.fsync: files"),
                        ("filesystem", "storage.fsync: filesystem"), ("journal", "journaled (outage)")):
        p50, p95 = pct(samples[name])
        print(f"  {label:<26} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   p95 ratio {p95 / base_p95:5.2f}")
    print(f"  files fsynced in files mode: {synced} ({synced / max(args.warmup + args.turns, 1):.1f} per turn)")


if __name__ == "__main__":
    asyncio.run(main())
