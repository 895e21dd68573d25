#!/usr/bin/env python
"""Live fuzz: thousands of random and mutated messages to every endpoint of a running voiceserver, then checks.

The server runs in its own process on 127.0.0.1 (nothing else is ever a target): by default the scripted target
(voiceserver.testing.fuzz_target: instant fake engines, real LanceDB memory, a suspending workflow), or with
``--real`` a `voiceserver serve` with the local models. Every endpoint family gets ``--messages`` messages (bounded
by ``--seconds`` overall), all families at once: the native WebSocket, the Realtime WebSocket (GA and beta),
the Twilio media stream and webhook, WebRTC signalling and (with real aiortc peers) the events channel, memory,
workflow and audio REST, and the plain routes. Afterwards:

- the server still serves a normal turn (a typed turn on /v1/voice, and /readyz answers 200);
- no unhandled exception is in its log (the JSON lines are parsed: any stack trace, any error-level line, any line
  that is not JSON counts);
- its RSS is flat (sampled from /v1/debug/stats through the run; growth over the second half of the run);
- and it prints what was sent, what came back (by code) and the crashes, which must be 0.

    .venv/bin/python scripts/fuzz_live.py                          # 2000 messages per endpoint, 10 minutes at most
    .venv/bin/python scripts/fuzz_live.py --messages 200 --seconds 60 --seed 7
    .venv/bin/python scripts/fuzz_live.py --real --messages 500

Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import fuzz_endpoints as ep  # noqa: E402

from voiceserver.client import VoiceClient  # noqa: E402
from voiceserver.testing.processes import free_port, stop_children_on_sigterm  # noqa: E402

ENDPOINTS = ("native", "realtime", "twilio", "twilio_webhook", "webrtc", "webrtc_channel", "memory", "workflows",
             "audio", "misc")
RSS_FLAT_MIB = 8.0  # growth over the second half of the run that still counts as flat


@dataclass
class Report:
    endpoints: dict[str, ep.EndpointStats] = field(default_factory=dict)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the main pass, RSS)
    normal_turn: str = "not run"
    log_problems: list[str] = field(default_factory=list)
    log_lines: int = 0
    native_warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.endpoints.values())

    @property
    def crashes(self) -> int:
        return sum(s.answers["CRASH"] for s in self.endpoints.values())

    @property
    def rss_growth_mib(self) -> float:
        """RSS growth over the second half of the main pass (the first half warms caches up)."""
        if len(self.rss_mib) < 2:
            return 0.0
        half = self.rss_mib[-1][0] / 2
        mid = next(rss for t, rss in self.rss_mib if t >= half)
        return self.rss_mib[-1][1] - mid

    @property
    def ok(self) -> bool:
        return (self.crashes == 0 and not self.log_problems and self.normal_turn == "ok"
                and self.rss_growth_mib <= RSS_FLAT_MIB)

    def render(self) -> str:
        lines = [f"{'endpoint':<16}{'sent':>8}  answers (by code)"]
        for name, stats in self.endpoints.items():
            codes = ", ".join(f"{code}: {n}" for code, n in stats.answers.most_common())
            lines.append(f"{name:<16}{stats.sent:>8}  {codes}")
            lines += [f"{'':<26}CRASH {c}" for c in stats.crashes[:5]]
        lines.append(f"{'total':<16}{self.sent:>8}  crashes: {self.crashes}, in {self.seconds:.0f} s")
        if self.rss_mib:
            series = " ".join(f"{t:.0f}s:{rss:.1f}" for t, rss in self.rss_mib)
            lines.append(f"RSS MiB {series}; second-half growth {self.rss_growth_mib:+.1f} MiB "
                         f"({'flat' if self.rss_growth_mib <= RSS_FLAT_MIB else 'GROWING'})")
        lines.append(f"normal turn afterwards: {self.normal_turn}")
        lines.append(f"server log: {self.log_lines} lines, {len(self.log_problems)} unhandled exceptions or errors")
        lines += [f"  {p[:300]}" for p in self.log_problems[:10]]
        if self.native_warnings:
            lines.append(f"native library warnings (not counted): {len(self.native_warnings)}")
            lines += [f"  {w[:300]}" for w in self.native_warnings[:3]]
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


# --- the server ---------------------------------------------------------------------------------------------------

@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_server(work: Path, *, real: bool = False, timeout_s: float = 300.0,
                       ms_per_char: float = 20.0) -> ServerProcess:
    """The scripted target (or `voiceserver serve` with the local models) on 127.0.0.1, logging JSON to a file."""
    log_path = work / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes it; closed when the process is reaped
    env = {**os.environ, "VOICESERVER_LOG_FORMAT": "json", "VOICESERVER_DEBUG_STATS": "true"}
    if real:
        port = free_port()
        env.update({"LANCEDB_URI": str(work / "memory"), "VOICESERVER_LIMITS__MAX_SESSIONS": "2000",
                    "VOICESERVER_WEBRTC__ICE_TIMEOUT_S": "5", "VOICESERVER_WEBRTC__PEER_TIMEOUT_S": "3"})
        cmd = [sys.executable, "-m", "voiceserver", "serve", "--port", str(port),
               "--models-dir", str(Path(os.environ.get("VOICESERVER_MODELS_DIR") or REPO / "models"))]
    else:
        port_file = work / "port"
        cmd = [sys.executable, "-m", "voiceserver.testing.fuzz_target", "--data", str(work), "--port-file",
               str(port_file), "--ms-per-char", str(ms_per_char)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    log.close()
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            if not real:
                port = int(port_file.read_text()) if port_file.exists() and port_file.read_text() else 0
            if port:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return ServerProcess(proc, port, log_path)
            await asyncio.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"server not ready after {timeout_s:g} s")


async def stop_server(server: ServerProcess) -> int:
    if server.proc.poll() is None:
        server.proc.terminate()
    try:
        return await asyncio.to_thread(server.proc.wait, 60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        return await asyncio.to_thread(server.proc.wait, 10)


# A native library's own logger writes to stderr itself (Lance, in Rust: "[2026-01-01T00:00:00Z WARN  lance::...]").
NATIVE_LOG = re.compile(r"\[\d{4}-\d\d-\d\dT[\d:.]+Z (WARN|INFO|DEBUG|TRACE) +[\w:]+\]")


def log_problems(path: Path, native: list[str] | None = None) -> tuple[int, list[str]]:
    """(lines, problems): stack traces, error-level records and non-JSON lines in a JSON log. A native library's
    warnings (Lance's, written by Rust to stderr) are not problems: they go to ``native`` when it is given."""
    problems, lines = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            if NATIVE_LOG.match(line):
                if native is not None:
                    native.append(line)
                continue
            problems.append(f"not JSON: {line}")
            continue
        if not isinstance(record, dict):
            problems.append(f"not a record: {line}")
        elif record.get("error") and "Traceback" in str(record.get("error")):
            problems.append(f"{record.get('component')}: {record.get('message')}: "
                            f"{str(record['error']).strip().splitlines()[-1]}")
        elif record.get("level") == "error":
            problems.append(f"{record.get('component')}: {record.get('message')}")
    return lines, problems


async def rss_mib(http: httpx.AsyncClient) -> float | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        return (await http.get("/v1/debug/stats")).json()["rss_bytes"] / 2**20
    return None


async def normal_turn(server: ServerProcess) -> str:
    """A typed turn on the native WebSocket, and /readyz: "ok", or what went wrong."""
    try:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            ready = await http.get("/readyz")
            if ready.status_code != 200:
                return f"/readyz answered {ready.status_code}"
        url = f"ws://127.0.0.1:{server.port}/v1/voice"
        async with VoiceClient.connect(url, resource="fuzz-check") as client:
            turn = await client.ask_text("Are you still there?", timeout=120)
        if turn.errors or not turn.reply_text or not turn.audio:
            return f"turn incomplete: errors {turn.errors}, reply {turn.reply_text!r}, {len(turn.audio)} audio bytes"
        return "ok"
    except Exception as exc:  # noqa: BLE001 - whatever failed is the finding
        return f"failed: {type(exc).__name__}: {exc}"


# --- the run ------------------------------------------------------------------------------------------------------

async def fuzz_all(server: ServerProcess, *, messages: int, seconds: float, seed: int,
                   endpoints: tuple[str, ...] = ENDPOINTS, report: Report | None = None) -> Report:
    """Every endpoint family at once, each with its own seeded generator."""
    report = report or Report()
    budget = ep.Budget(messages=messages, deadline=time.monotonic() + seconds)
    base = f"ws://127.0.0.1:{server.port}"
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60, limits=limits) as http:
        threads = await _known_threads(server)

        def job(name: str) -> Any:
            stats = report.endpoints.setdefault(name, ep.EndpointStats())
            rng = random.Random(f"{seed}:{name}")
            small = ep.Budget(messages=max(1, messages // 10), deadline=budget.deadline)
            return {
                "native": lambda: ep.fuzz_native(base, rng, budget, stats),
                "realtime": lambda: ep.fuzz_realtime(base, rng, budget, stats),
                "twilio": lambda: ep.fuzz_twilio(base, rng, budget, stats),
                "twilio_webhook": lambda: ep.fuzz_twilio_webhook(http, rng, budget, stats),
                "webrtc": lambda: ep.fuzz_webrtc(http, rng, budget, stats),
                # each peer costs real Opus work: a tenth of the messages, over a few peers
                "webrtc_channel": lambda: ep.fuzz_webrtc_channel(server.http_url, rng, small, stats),
                "memory": lambda: ep.fuzz_memory(http, rng, budget, stats, threads),
                "workflows": lambda: ep.fuzz_workflows(http, rng, budget, stats),
                "audio": lambda: ep.fuzz_audio(http, rng, budget, stats),
                "misc": lambda: ep.fuzz_misc(http, rng, budget, stats),
            }[name]()

        await asyncio.gather(*(job(name) for name in endpoints))
    return report


async def _known_threads(server: ServerProcess) -> list[str]:
    """A few real threads for the memory routes to find (one typed turn each)."""
    threads = []
    for i in range(2):
        with contextlib.suppress(Exception):
            async with VoiceClient.connect(f"ws://127.0.0.1:{server.port}/v1/voice", resource="fuzz-caller",
                                           thread=f"fuzz-thread-{i}") as client:
                await client.ask_text("hello", timeout=60)
            threads.append(f"fuzz-thread-{i}")
    return threads


async def sample_rss(server: ServerProcess, report: Report, started: float, stop: asyncio.Event,
                     every_s: float) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        while True:
            rss = await rss_mib(http)
            if rss is not None:
                report.rss_mib.append((time.monotonic() - started, rss))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
                return


async def run(args: argparse.Namespace, work: Path) -> Report:
    server = await start_server(work, real=args.real)
    report = Report()
    try:
        endpoints = tuple(e for e in args.endpoints.split(",") if e) if args.endpoints else ENDPOINTS
        # Warm-up: first uses allocate for good (aiortc on the first offer, LanceDB tables, the codecs' caches).
        await fuzz_all(server, messages=max(10, args.messages // 20), seconds=args.seconds / 5, seed=args.seed + 1,
                       endpoints=endpoints, report=Report())
        started = time.monotonic()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(server, report, started, stop, 1.0))
        await fuzz_all(server, messages=args.messages, seconds=args.seconds, seed=args.seed, endpoints=endpoints,
                       report=report)
        report.seconds = time.monotonic() - started
        await asyncio.sleep(2)  # closing connections finish their sessions
        stop.set()
        await sampler
        report.normal_turn = await normal_turn(server)
    finally:
        code = await stop_server(server)
        if code != 0:
            report.log_problems.append(f"the server exited with {code}")
    report.log_lines, problems = log_problems(server.log_path, report.native_warnings)
    report.log_problems += problems
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--messages", type=int, default=2000, help="messages per endpoint family")
    parser.add_argument("--seconds", type=float, default=600.0, help="time limit of the main pass")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--real", action="store_true", help="`voiceserver serve` with the local models")
    parser.add_argument("--endpoints", default="", help=f"comma-separated subset of {','.join(ENDPOINTS)}")
    parser.add_argument("--keep", type=Path, help="keep the server's data and log in this directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_children_on_sigterm()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run(args, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="voiceserver-fuzz-") as work:
            report = asyncio.run(run(args, Path(work)))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
