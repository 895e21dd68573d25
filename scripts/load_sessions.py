#!/usr/bin/env python
"""Load test: N concurrent sessions streaming real-time audio into a server with instant fake engines.

The server runs in its own process (uvloop, websockets), built with ScriptedSTT / ToneTTS / a scripted agent so the
only real work is the data path: WebSocket receive, decode, VAD, events, replies. Each client session streams a
Piper-spoken sentence then silence, in 20 ms frames paced in real time, forever, with a random phase.

Measured per level N:
- lag: from sending the frame at which speech became confirmed (``confirmed_ms`` of speech.started) to receiving
  speech.started: the time from a frame's arrival to its VAD decision as a client sees it (p50 / p95 / p99);
- server-side VAD lag (voiceserver_vad_lag_seconds, from the server's /metrics histogram, p99 by bucket);
- client pacing lag (how late the load generator itself sent frames, to tell a client bottleneck apart);
- server RSS per session.

Prints the largest N whose p99 lag stays <= 50 ms, and each level's p99 as a ratio to the smallest level's
(the baseline run in the same process).

    .venv/bin/python scripts/load_sessions.py --levels 50,200,400,500,600 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


# --- server process ------------------------------------------------------------------------------------------------

def serve_fake(port_file: str) -> None:
    import uvicorn

    from voiceserver.agent import Agent
    from voiceserver.app import build_server, create_app
    from voiceserver.logs import configure_logging
    from voiceserver.settings import LimitsConfig, Settings
    from voiceserver.testing.fake_llm import ScriptedChatModel
    from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS

    configure_logging("warn", "json")
    settings = Settings(limits=LimitsConfig(max_sessions=20000))
    agent = Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel(["Okay."]))
    server = build_server(settings, stt=ScriptedSTT(["hello"]), tts=ToneTTS(ms_per_char=20),
                          agents={"Assistant": agent})
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=0, loop="uvloop", ws="websockets-sansio",
                            log_config=None, access_log=False, ws_max_size=1 << 20, backlog=4096,
                            ws_ping_interval=None)
    uv = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(uv.serve())
        while not uv.started:
            await asyncio.sleep(0.05)
        port = uv.servers[0].sockets[0].getsockname()[1]
        Path(port_file).write_text(str(port))
        await task

    import uvloop

    uvloop.run(run())


# --- client side ---------------------------------------------------------------------------------------------------

def speech_audio() -> bytes:
    """A Piper-spoken sentence at 16 kHz followed by silence: 1 cycle of the stream each session loops."""
    from piper.voice import PiperVoice

    from voiceserver.audio import Resampler

    models = Path(os.environ.get("VOICESERVER_MODELS_DIR") or REPO / "models")
    voice = PiperVoice.load(str(models / "piper" / "en_US-joe-medium.onnx"))
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize("Hello, I would like to book a table for two."))
    resampler = Resampler(voice.config.sample_rate, 16000)
    speech = resampler.process(pcm) + resampler.flush()
    return speech + b"\x00\x00" * 16000 * 2  # then 2 s of silence


class Stats:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.pacing: list[float] = []
        self.errors: list[str] = []
        self.connected = 0


async def run_session(url: str, audio: bytes, stop: asyncio.Event, stats: Stats, frame_ms: int) -> None:
    import websockets

    frame = 16000 * 2 * frame_ms // 1000
    sent: list[tuple[float, float]] = []  # (stream ms at end of frame, send time), bounded below
    try:
        async with websockets.connect(url, max_size=1 << 22, ping_interval=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            stats.connected += 1

            async def reader() -> None:
                async for message in ws:
                    if isinstance(message, bytes):
                        continue
                    event = json.loads(message)
                    if event["type"] == "speech.started" and event.get("confirmed_ms") is not None:
                        now = time.perf_counter()
                        at = next((t for end, t in sent if end >= event["confirmed_ms"]), None)
                        if at is not None:
                            stats.lags.append(now - at)
                    elif event["type"] == "error":
                        stats.errors.append(event.get("code", "?"))

            read_task = asyncio.create_task(reader())
            offset = random.randrange(0, len(audio) // frame) * frame
            position_ms = 0.0
            start = time.perf_counter()
            while not stop.is_set():
                due = start + position_ms / 1000
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = audio[offset:offset + frame]
                if len(chunk) < frame:
                    offset = 0
                    chunk = audio[:frame]
                offset += frame
                await ws.send(chunk)
                now = time.perf_counter()
                stats.pacing.append(now - due)
                position_ms += frame_ms
                sent.append((position_ms, now))
                if len(sent) > 500:
                    del sent[:250]
            read_task.cancel()
    except Exception as exc:  # noqa: BLE001 - counted and reported
        stats.errors.append(type(exc).__name__)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_vad_p99(metrics_text: str, before: dict[float, float]) -> tuple[float | None, dict[float, float]]:
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("voiceserver_vad_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    delta = {k: v - before.get(k, 0.0) for k, v in buckets.items()}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return None, buckets
    for le in sorted(delta):
        if delta[le] >= 0.99 * total:
            return le, buckets
    return None, buckets


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def run_level(url: str, http: str, audio: bytes, n: int, duration: float, frame_ms: int, pid: int,
                    buckets: dict[float, float]) -> tuple[dict, dict[float, float]]:
    import httpx

    stats = Stats()
    stop = asyncio.Event()
    rss0 = rss_kb(pid)
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(run_session(url, audio, stop, stats, frame_ms)))
        if i % 50 == 49:
            await asyncio.sleep(0.2)  # ramp: do not open hundreds of sockets in one instant
    warmup = 3.0
    await asyncio.sleep(warmup)
    stats.lags.clear()
    stats.pacing.clear()
    async with httpx.AsyncClient() as client:
        _, buckets = server_vad_p99((await client.get(http + "/metrics")).text, {})
        await asyncio.sleep(duration)
        rss1 = rss_kb(pid)
        server_p99, _ = server_vad_p99((await client.get(http + "/metrics")).text, buckets)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "sessions": n, "connected": stats.connected, "decisions": len(stats.lags),
        "lag_p50_ms": pct(stats.lags, 50), "lag_p95_ms": pct(stats.lags, 95), "lag_p99_ms": pct(stats.lags, 99),
        "server_vad_p99_ms_le": None if server_p99 is None else server_p99 * 1000,
        "client_pacing_p99_ms": pct(stats.pacing, 99), "rss_per_session_kb": (rss1 - rss0) / max(n, 1),
        "errors": len(stats.errors),
    }, buckets


async def main_async(args: argparse.Namespace) -> None:
    import tempfile

    port_file = tempfile.mktemp(prefix="voiceserver-load-port-")
    server = subprocess.Popen([sys.executable, __file__, "--serve-fake", port_file], cwd=REPO)
    try:
        for _ in range(600):
            if Path(port_file).exists() and Path(port_file).read_text():
                break
            await asyncio.sleep(0.1)
        port = int(Path(port_file).read_text())
        url, http = f"ws://127.0.0.1:{port}/v1/voice", f"http://127.0.0.1:{port}"
        audio = speech_audio()
        print(f"server pid {server.pid} on port {port}; each session loops {len(audio) / 32000:.1f} s of audio "
              f"in {args.frame_ms} ms frames; {args.duration:.0f} s per level")
        header = (f"{'N':>6} {'conn':>6} {'decisions':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'x base':>7} "
                  f"{'srv p99<=':>9} {'client p99':>10} {'RSS/sess KB':>11} {'errors':>6}")
        print(header)
        best = None
        base = None
        buckets: dict[float, float] = {}
        for n in [int(x) for x in args.levels.split(",")]:
            row, buckets = await run_level(url, http, audio, n, args.duration, args.frame_ms, server.pid, buckets)
            base = base or row["lag_p99_ms"]
            ratio = row["lag_p99_ms"] / base if base else float("nan")
            srv = row["server_vad_p99_ms_le"]
            print(f"{n:>6} {row['connected']:>6} {row['decisions']:>9} {row['lag_p50_ms']:>8.1f} "
                  f"{row['lag_p95_ms']:>8.1f} {row['lag_p99_ms']:>8.1f} {ratio:>7.2f} "
                  f"{(f'{srv:.1f}' if srv is not None else '-'):>9} {row['client_pacing_p99_ms']:>10.1f} "
                  f"{row['rss_per_session_kb']:>11.0f} {row['errors']:>6}", flush=True)
            if row["lag_p99_ms"] <= 50 and row["connected"] == n and not row["errors"]:
                best = n
            await asyncio.sleep(2)
        print(f"largest N with p99 lag <= 50 ms: {best if best is not None else 'none of the levels'}")
    finally:
        server.terminate()
        server.wait(10)
        Path(port_file).unlink(missing_ok=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-fake":
        serve_fake(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,200,400,500,600,700", help="comma-separated session counts")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per level")
    parser.add_argument("--frame-ms", type=int, default=20, help="audio frame length the clients send")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
