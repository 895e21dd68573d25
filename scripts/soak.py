#!/usr/bin/env python
"""Soak: real-time conversations for a set duration, sampling what would leak, then the slopes and the errors.

Two server processes on 127.0.0.1: the scripted target (voiceserver.testing.fuzz_target: instant fake engines,
reply audio paced in real time, real LanceDB memory with its compaction) takes ``--sessions`` conversations
(default 50), and `voiceserver serve` with the local models (Whisper, Piper, SmolLM2, LanceDB + WordLlama) takes
``--real-sessions`` (default 2). Each conversation is a native WebSocket caller streaming 20 ms frames in real
time, silence between turns like an open microphone: it says a sentence (Piper speech), hears the reply out
(reporting ``response.played``) or, one turn in five, talks over it (barge-in), waits a moment, says the next;
after a few turns it hangs up and calls again (a new session, the same caller).

Every ``--sample-s`` (10) seconds, per server: RSS, open file descriptors, threads, asyncio tasks, sessions and
their outbox sizes (GET /v1/debug/stats, served with ``debug_stats`` on), and the LanceDB tables' versions plus
the files and bytes on disk (read from the store's directory). At the end: each series' slope after the warm-up
(least squares), the error counts (error events, dropped connections, turns that never finished, stack traces or
error lines in the servers' JSON logs), and whether the targets hold: RSS slope under 1 MiB per 10 minutes, tasks
and fds flat, 0 errors.

    .venv/bin/python scripts/soak.py --minutes 60                # the full soak
    .venv/bin/python scripts/soak.py --minutes 3 --sessions 10   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import fuzz_live  # noqa: E402 - the server process helpers and the log check are shared

FRAME_MS = 20
FRAME_BYTES = 16000 * 2 * FRAME_MS // 1000
SENTENCES = ["Hello, what can you do for me today?", "What is the weather like in Paris?",
             "Can you book a table for two tonight?", "Tell me something interesting about the moon."]
TURN_TIMEOUT_S = 90.0
TARGETS = {"rss_mib_per_10min": 1.0, "fds_per_10min": 1.0, "tasks_per_10min": 1.0}


# --- one caller ----------------------------------------------------------------------------------------------------

@dataclass
class CallerStats:
    turns: int = 0
    barge_ins: int = 0
    calls: int = 0
    errors: Counter = field(default_factory=Counter)
    voice_to_voice_ms: list[float] = field(default_factory=list)


class Caller:
    """One conversation: an open microphone in real time, a sentence per turn, a new call every few turns."""

    def __init__(self, url: str, index: int, speech: list[bytes], stats: CallerStats, rng: random.Random,
                 turns_per_call: int = 5):
        self.url = url
        self.index = index
        self.speech = speech
        self.stats = stats
        self.rng = rng
        self.turns_per_call = turns_per_call

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(self.rng.uniform(0, 5))  # spread the first calls
        while not stop.is_set():
            try:
                await self._call(stop)
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                self.stats.errors[f"connection: {type(exc).__name__}"] += 1
                await asyncio.sleep(1)

    async def _call(self, stop: asyncio.Event) -> None:
        self.stats.calls += 1
        query = f"resource=soak-{self.index}&thread=soak-{self.index}-{self.stats.calls % 3}"
        async with websockets.connect(f"{self.url}?{query}", max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            state = _CallState()
            reader = asyncio.create_task(self._read(ws, state))
            try:
                for _ in range(self.turns_per_call):
                    if stop.is_set() or reader.done():
                        break
                    await self._turn(ws, state)
                await ws.send(json.dumps({"type": "session.end"}))
                await asyncio.wait_for(reader, 10)
            finally:
                reader.cancel()
        if ws.close_code not in (1000, 1001):
            self.stats.errors[f"closed {ws.close_code}"] += 1

    async def _turn(self, ws: Any, state: _CallState) -> None:
        state.done.clear()
        speech = self.rng.choice(self.speech)
        barge = self.rng.random() < 0.2
        await self._stream(ws, speech)
        said_at = time.monotonic()
        state.spoke_at = said_at
        deadline = said_at + TURN_TIMEOUT_S
        interrupted = False
        while not state.done.is_set():  # an open microphone: silence until the reply is over
            if time.monotonic() > deadline:
                self.stats.errors["turn_never_finished"] += 1
                return
            if barge and not interrupted and state.audio_ms > 600:
                interrupted = True  # talk over the reply
                await self._stream(ws, self.rng.choice(self.speech)[: FRAME_BYTES * 40])
                self.stats.barge_ins += 1
                continue
            await self._stream(ws, bytes(FRAME_BYTES * 5))
            if state.turn_id and state.audio_ms:
                await ws.send(json.dumps({"type": "response.played", "turn_id": state.turn_id,
                                          "played_ms": int(state.audio_ms)}))
        self.stats.turns += 1
        await self._stream(ws, bytes(FRAME_BYTES * int(self.rng.uniform(50, 150))))  # 1-3 s before the next

    async def _stream(self, ws: Any, pcm: bytes) -> None:
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
            await ws.send(pcm[offset:offset + FRAME_BYTES])
            delay = start + (i + 1) * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _read(self, ws: Any, state: _CallState) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if isinstance(message, bytes):
                    state.audio_ms += len(message) / 32  # 16 kHz pcm16: 32 bytes a millisecond
                    continue
                event = json.loads(message)
                kind = event.get("type")
                if kind == "response.started":
                    state.turn_id, state.audio_ms = event.get("turn_id"), 0.0
                elif kind == "response.done":
                    state.done.set()
                elif kind == "metrics" and event.get("voice_to_voice_ms") is not None:
                    self.stats.voice_to_voice_ms.append(event["voice_to_voice_ms"])
                elif kind == "error":
                    self.stats.errors[event.get("code")] += 1
                elif kind == "session.closed":
                    return


@dataclass
class _CallState:
    turn_id: str | None = None
    audio_ms: float = 0.0
    spoke_at: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


# --- sampling -----------------------------------------------------------------------------------------------------

def lancedb_sample(path: Path) -> dict[str, Any]:
    """Table versions (latest and how many are kept) and the files and bytes under the store's directory."""
    out: dict[str, Any] = {"files": 0, "bytes": 0, "versions": {}, "kept_versions": {}}
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                out["bytes"] += os.path.getsize(os.path.join(root, name))
                out["files"] += 1
    with contextlib.suppress(Exception):
        import lancedb

        db = lancedb.connect(str(path))
        for name in db.list_tables().tables:
            table = db.open_table(name)
            out["versions"][name] = table.version
            out["kept_versions"][name] = len(table.list_versions())
    return out


async def detail(http: httpx.AsyncClient) -> dict[str, Any]:
    """The tasks by coroutine, the fds by kind and the Python object types (a walk of the heap: run it rarely)."""
    try:
        return (await http.get("/v1/debug/stats", params={"objects": 1})).json()
    except (httpx.HTTPError, ValueError):
        return {}


def growth(before: dict[str, int], after: dict[str, int], top: int = 8) -> str:
    """The keys whose counts changed most between two samples, biggest change first."""
    changes = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    changes = {k: v for k, v in sorted(changes.items(), key=lambda kv: -abs(kv[1]))[:top] if v}
    return ", ".join(f"{k} {v:+d}" for k, v in changes.items()) or "none"


async def sample(http: httpx.AsyncClient, store: Path) -> dict[str, Any] | None:
    try:
        stats = (await http.get("/v1/debug/stats")).json()
    except (httpx.HTTPError, ValueError):
        return None
    stats.update(await asyncio.to_thread(lancedb_sample, store))
    stats["t"] = time.monotonic()
    return stats


def slope_per_10min(samples: list[dict[str, Any]], key: Any) -> float:
    """Least-squares slope of ``key(sample)`` per 10 minutes."""
    if len(samples) < 3:
        return float("nan")
    t = np.array([s["t"] for s in samples]) - samples[0]["t"]
    y = np.array([float(key(s)) for s in samples])
    return float(np.polyfit(t, y, 1)[0] * 600)


# --- the run ------------------------------------------------------------------------------------------------------

@dataclass
class Served:
    name: str
    server: fuzz_live.ServerProcess
    store: Path
    stats: CallerStats = field(default_factory=CallerStats)
    samples: list[dict[str, Any]] = field(default_factory=list)
    # ?objects=1 at the end of the warm-up and at the end: what the growth in between is made of.
    details: list[dict[str, Any]] = field(default_factory=list)


def speech_clips(models_dir: Path) -> list[bytes]:
    from voiceserver.testing.speech import speak

    return [speak(models_dir, text, lead_silence_ms=0) for text in SENTENCES]


async def run(args: argparse.Namespace, work: Path) -> int:
    models = Path(os.environ.get("VOICESERVER_MODELS_DIR") or REPO / "models")
    speech = await asyncio.to_thread(speech_clips, models)
    fake_dir, real_dir = work / "fake", work / "real"
    fake_dir.mkdir(parents=True, exist_ok=True)
    real_dir.mkdir(parents=True, exist_ok=True)
    served = [Served("fake", await fuzz_live.start_server(fake_dir, ms_per_char=60.0), fake_dir / "memory")]
    if args.real_sessions:
        served.append(Served("real", await fuzz_live.start_server(real_dir, real=True), real_dir / "memory"))
    stop = asyncio.Event()
    rng = random.Random(args.seed)
    callers = []
    for s, count in zip(served, (args.sessions, args.real_sessions), strict=False):
        url = f"ws://127.0.0.1:{s.server.port}/v1/voice"
        callers += [Caller(url, i, speech, s.stats, random.Random(rng.random())) for i in range(count)]
    tasks = [asyncio.create_task(c.run(stop)) for c in callers]
    started = time.monotonic()
    end = started + args.minutes * 60
    try:
        clients = [httpx.AsyncClient(base_url=s.server.http_url, timeout=30) for s in served]
        warm = started + args.warmup_minutes * 60
        while time.monotonic() < end:
            if not served[0].details and time.monotonic() >= warm:
                for s, http in zip(served, clients, strict=True):
                    s.details.append(await detail(http))
            for s, http in zip(served, clients, strict=True):
                point = await sample(http, s.store)
                if point is not None:
                    s.samples.append(point)
            line = "  ".join(f"{s.name}: {_brief(s)}" for s in served)
            print(f"{(time.monotonic() - started) / 60:5.1f} min  {line}", flush=True)
            await asyncio.sleep(max(0.0, min(args.sample_s, end - time.monotonic())))
        for s, http in zip(served, clients, strict=True):
            s.details.append(await detail(http))
        for http in clients:
            await http.aclose()
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
        for task in tasks:
            task.cancel()
        for s in served:
            code = await fuzz_live.stop_server(s.server)
            if code != 0:
                s.stats.errors[f"server exited with {code}"] += 1
    return report(served, warmup_s=args.warmup_minutes * 60, minutes=args.minutes)


def _brief(s: Served) -> str:
    if not s.samples:
        return "-"
    last = s.samples[-1]
    return (f"rss {last['rss_bytes'] / 2**20:.0f} MiB fds {last['open_fds']} tasks {last['asyncio_tasks']} "
            f"sessions {last['sessions']} turns {s.stats.turns} errors {sum(s.stats.errors.values())} "
            f"versions {sum(last['versions'].values())} files {last['files']}")


def _malloc_mib(point: dict[str, Any], key: str) -> float:
    return round((point.get("malloc") or {}).get(key, 0) / 2**20, 1)


def report(served: list[Served], *, warmup_s: float, minutes: float) -> int:
    ok = True
    for s in served:
        after = [p for p in s.samples if p["t"] - s.samples[0]["t"] >= warmup_s] if s.samples else []
        lines, problems = fuzz_live.log_problems(s.server.log_path)
        errors = sum(s.stats.errors.values()) + len(problems)
        slopes = {
            "rss_mib_per_10min": slope_per_10min(after, lambda p: p["rss_bytes"] / 2**20),
            "fds_per_10min": slope_per_10min(after, lambda p: p["open_fds"]),
            "tasks_per_10min": slope_per_10min(after, lambda p: p["asyncio_tasks"]),
            "threads_per_10min": slope_per_10min(after, lambda p: p["threads"]),
            "versions_per_10min": slope_per_10min(after, lambda p: sum(p["versions"].values())),
            "kept_versions_per_10min": slope_per_10min(after, lambda p: sum(p["kept_versions"].values())),
            "files_per_10min": slope_per_10min(after, lambda p: p["files"]),
            "disk_mib_per_10min": slope_per_10min(after, lambda p: p["bytes"] / 2**20),
        }
        v2v = np.array(s.stats.voice_to_voice_ms) if s.stats.voice_to_voice_ms else np.array([np.nan])
        print(f"\n== {s.name} server: {minutes:g} min, {len(s.samples)} samples ({len(after)} after the "
              f"{warmup_s / 60:g} min warm-up)")
        print(f"calls {s.stats.calls}, turns {s.stats.turns}, barge-ins {s.stats.barge_ins}, voice-to-voice p50 "
              f"{np.nanmedian(v2v):.0f} ms p95 {np.nanpercentile(v2v, 95):.0f} ms")
        if after:
            first, last = after[0], after[-1]
            for label, key in (("rss MiB", lambda p: round(p["rss_bytes"] / 2**20, 1)),
                               ("open fds", lambda p: p["open_fds"]), ("threads", lambda p: p["threads"]),
                               ("asyncio tasks", lambda p: p["asyncio_tasks"]), ("sessions", lambda p: p["sessions"]),
                               ("outbox max", lambda p: p["outbox_max"]),
                               ("malloc in use", lambda p: _malloc_mib(p, "in_use_bytes")),
                               ("malloc free", lambda p: _malloc_mib(p, "free_bytes")),
                               ("malloc mmap", lambda p: _malloc_mib(p, "mmap_bytes")),
                               ("python blocks", lambda p: p.get("python_blocks", 0)),
                               ("table versions", lambda p: p["versions"]),
                               ("versions kept", lambda p: p["kept_versions"]),
                               ("files on disk", lambda p: p["files"]),
                               ("disk MiB", lambda p: round(p["bytes"] / 2**20, 1))):
                values = [key(p) for p in after]
                spread = f" (min {min(values)}, max {max(values)})" if not isinstance(values[0], dict) else ""
                print(f"  {label:<15} {key(first)} -> {key(last)}{spread}")
        for name, value in slopes.items():
            target = TARGETS.get(name)
            # RSS may fall (memory given back); fds and tasks must stay flat either way
            within = target is None or (value < target if name == "rss_mib_per_10min" else abs(value) < target)
            mark = "" if target is None else (" ok" if within else " OVER TARGET")
            print(f"  slope {name:<24} {value:+.3f}{mark}")
            if target is not None and not within:
                ok = False
        if len(s.details) == 2:
            for label, key in (("tasks", "asyncio_tasks_by_coroutine"), ("fds", "open_fds_by_kind"),
                               ("objects", "object_types"), ("KiB untracked, by holder", "untracked_kib_by_holder")):
                print(f"  {label} since the warm-up: {growth(s.details[0].get(key, {}), s.details[1].get(key, {}))}")
            if "top_allocations" in s.details[1]:  # the server traced allocations (PYTHONTRACEMALLOC set)
                by_line = [{a["where"]: a["bytes"] // 1024 for a in d.get("top_allocations", [])} for d in s.details]
                traced = [d.get("traced_bytes", 0) / 2**20 for d in s.details]
                print(f"  traced Python memory {traced[0]:.1f} -> {traced[1]:.1f} MiB; KiB allocated by line since "
                      f"the warm-up: {growth(by_line[0], by_line[1])}")
        print(f"  errors {errors}: {dict(s.stats.errors)}; server log {lines} lines, {len(problems)} problems")
        for problem in problems[:5]:
            print(f"    {problem[:300]}")
        ok = ok and errors == 0
    print("\nPASS" if ok else "\nFAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=50, help="conversations with the scripted engines")
    parser.add_argument("--real-sessions", type=int, default=2, help="conversations with the local models")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=None, help="default: a tenth of the run, at most 5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the servers' data and logs in this directory")
    args = parser.parse_args(argv)
    fuzz_live.stop_children_on_sigterm()
    if args.warmup_minutes is None:
        args.warmup_minutes = min(5.0, args.minutes / 10)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, args.keep))
    with tempfile.TemporaryDirectory(prefix="voiceserver-soak-") as work:
        return asyncio.run(run(args, Path(work)))


if __name__ == "__main__":
    raise SystemExit(main())
