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
- server RSS per session;
- full garbage collections of one worker during the level, and their mean pause.

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

def serve_fake(port_file: str, workers: str = "1") -> None:
    from voiceserver.agent import Agent
    from voiceserver.logs import configure_logging
    from voiceserver.server.composition import build_server, create_app
    from voiceserver.server.run import run_forked, serve_app_forever
    from voiceserver.settings import LimitsConfig, Settings
    from voiceserver.testing.fake_llm import ScriptedChatModel
    from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS

    configure_logging("warn", "json")

    def serve(sockets) -> int:
        settings = Settings(limits=LimitsConfig(max_sessions=20000))
        agent = Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel(["Okay."]))
        server = build_server(settings, stt=ScriptedSTT(["hello"]), tts=ToneTTS(ms_per_char=20),
                              agents={"Assistant": agent})
        return serve_app_forever(create_app(server), host="127.0.0.1", port=0, voice=server, sockets=sockets)

    # The same process model as `voiceserver serve --workers N` (N = 1 is one process sharing nothing).
    run_forked("127.0.0.1", 0, int(workers), serve, on_bound=lambda port: Path(port_file).write_text(str(port)))


# --- client side ---------------------------------------------------------------------------------------------------

def speech_audio() -> bytes:
    """A Piper-spoken sentence at 16 kHz followed by silence: 1 cycle of the stream each session loops."""
    from voiceserver.testing.speech import speak

    models = Path(os.environ.get("VOICESERVER_MODELS_DIR") or REPO / "models")
    return speak(models, "Hello, I would like to book a table for two.", lead_silence_ms=0) + b"\x00\x00" * 32000


class Stats:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.pacing: list[float] = []
        self.errors: list[str] = []
        self.connected = 0


MASK = b"\x37\xfa\x21\x3d"


def masked_frame(payload: bytes, opcode: int) -> bytes:
    """A client-to-server WebSocket frame (RFC 6455), masked with a fixed key so frames can be built once."""
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    data = np.frombuffer(payload, dtype=np.uint8)
    mask = np.resize(np.frombuffer(MASK, dtype=np.uint8), n)
    return header + MASK + (data ^ mask).tobytes()


class LoadSession(asyncio.Protocol):
    """One caller: a raw WebSocket connection whose frames are pre-encoded (the load generator must stay far
    cheaper than the server it measures). Parses only the server's text frames, looking for speech.started."""

    def __init__(self, stats: Stats, frames: list[bytes], frame_ms: int, opened: asyncio.Future):
        self.stats = stats
        self.frames = frames
        self.frame_ms = frame_ms
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.index = random.randrange(len(frames))
        self.position_ms = 0.0
        self.sent: list[tuple[float, float]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[:end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.upgraded = True
            self.opened.set_result(None)
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < offset + length:
                return
            payload = bytes(self.buffer[offset:offset + length]) if opcode == 1 else b""  # reply audio: skipped
            del self.buffer[:offset + length]
            if opcode == 1 and (b"speech.started" in payload or b'"error"' in payload):
                self.on_event(json.loads(payload))
            elif opcode == 8:
                self.stats.errors.append("closed")

    def on_event(self, event: dict) -> None:
        if event["type"] == "speech.started" and event.get("confirmed_ms") is not None:
            now = time.perf_counter()
            at = next((t for end, t in self.sent if end >= event["confirmed_ms"]), None)
            if at is not None:
                self.stats.lags.append(now - at)
        elif event["type"] == "error":
            self.stats.errors.append(event.get("code", "?"))

    def send_next(self, sent_at: float) -> None:
        """Send the next frame; ``sent_at`` is the time its group of sessions started sending (one clock read per
        group, not per frame: the lag measured from it is at most a group's send time longer, never shorter)."""
        transport = self.transport
        assert transport is not None
        transport.write(self.frames[self.index])
        self.index = (self.index + 1) % len(self.frames)
        self.position_ms += self.frame_ms
        self.sent.append((self.position_ms, sent_at))
        if len(self.sent) > 400:
            del self.sent[:200]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))


async def open_session(port: int, stats: Stats, frames: list[bytes], frame_ms: int) -> LoadSession:
    import base64

    loop = asyncio.get_running_loop()
    opened: asyncio.Future = loop.create_future()
    transport, proto = await loop.create_connection(lambda: LoadSession(stats, frames, frame_ms, opened),
                                                    "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write((f"GET /v1/voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                    .encode())
    await asyncio.wait_for(opened, 60)
    transport.write(masked_frame(json.dumps({"type": "session.start"}).encode(), 1))
    stats.connected += 1
    return proto


async def pace(sessions: list[LoadSession], stats: Stats, frame_ms: int, stop: asyncio.Event,
               groups: int = 4) -> None:
    """Every session sends one frame per ``frame_ms``; sessions are spread over ``groups`` evenly spaced ticks
    so the server sees a steady stream, not one burst per frame period."""
    step = frame_ms / 1000 / groups
    start = time.perf_counter()
    tick = 0
    while not stop.is_set():
        due = start + tick * step
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at = time.perf_counter()
        for session in sessions[tick % groups::groups]:
            if session.transport is not None and not session.transport.is_closing():
                session.send_next(sent_at)
        # How late the load generator itself was: the group's last frame against the group's due time.
        stats.pacing.append(time.perf_counter() - due)
        tick += 1


def family(pid: int) -> list[int]:
    """The server process and its worker processes."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its workers, from /proc."""
    total = 0
    for p in family(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    total = 0
    for p in family(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


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


def full_gc(metrics_text: str) -> tuple[float, float]:
    """(count, total seconds) of full collections (generation 2) the answering worker timed so far."""
    values = {"count": 0.0, "sum": 0.0}
    for line in metrics_text.splitlines():
        for kind in values:
            if line.startswith(f'voiceserver_gc_pause_seconds_{kind}{{generation="2"}}'):
                values[kind] = float(line.rsplit(" ", 1)[1])
    return values["count"], values["sum"]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def run_level(port: int, http: str, audio: bytes, n: int, duration: float, frame_ms: int, pid: int,
                    buckets: dict[float, float]) -> tuple[dict, dict[float, float]]:
    import httpx

    stats = Stats()
    stop = asyncio.Event()
    rss0 = rss_kb(pid)
    frame = 16000 * 2 * frame_ms // 1000
    frames = [masked_frame(audio[i:i + frame], 2) for i in range(0, len(audio) - frame + 1, frame)]
    sessions: list[LoadSession] = []
    for i in range(0, n, 50):  # ramp: do not open hundreds of sockets in one instant
        opened = await asyncio.gather(*(open_session(port, stats, frames, frame_ms) for _ in range(min(50, n - i))),
                                      return_exceptions=True)
        for item in opened:
            if isinstance(item, BaseException):
                stats.errors.append(type(item).__name__)
            else:
                sessions.append(item)
    pacer = asyncio.create_task(pace(sessions, stats, frame_ms, stop))
    warmup = 3.0
    await asyncio.sleep(warmup)
    stats.lags.clear()
    stats.pacing.clear()
    async with httpx.AsyncClient() as client:
        text = (await client.get(http + "/metrics")).text
        _, buckets = server_vad_p99(text, {})
        gc0 = full_gc(text)
        cpu0, client0, wall0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        await asyncio.sleep(duration)
        wall = time.perf_counter() - wall0
        server_cpu = (cpu_seconds(pid) - cpu0) / wall
        client_cpu = (time.process_time() - client0) / wall
        rss1 = rss_kb(pid)
        text = (await client.get(http + "/metrics")).text
        server_p99, _ = server_vad_p99(text, buckets)
        gc1 = full_gc(text)
    stop.set()
    await pacer
    for session in sessions:
        if session.transport is not None:
            session.transport.close()
    return {
        "sessions": n, "connected": stats.connected, "decisions": len(stats.lags),
        "lag_p50_ms": pct(stats.lags, 50), "lag_p95_ms": pct(stats.lags, 95), "lag_p99_ms": pct(stats.lags, 99),
        "server_vad_p99_ms_le": None if server_p99 is None else server_p99 * 1000,
        "client_pacing_p99_ms": pct(stats.pacing, 99), "rss_per_session_kb": (rss1 - rss0) / max(n, 1),
        "server_cpu": server_cpu, "client_cpu": client_cpu,
        # Full GC pauses of one worker (the one that answered /metrics): the event loop stands still for each.
        "full_gc": gc1[0] - gc0[0], "full_gc_ms": (gc1[1] - gc0[1]) * 1000 / max(gc1[0] - gc0[0], 1),
        "errors": len(stats.errors),
    }, buckets


async def main_async(args: argparse.Namespace) -> None:
    import tempfile

    port_file = tempfile.mktemp(prefix="voiceserver-load-port-")
    server = subprocess.Popen([sys.executable, __file__, "--serve-fake", port_file, str(args.workers)], cwd=REPO)
    try:
        for _ in range(600):
            if Path(port_file).exists() and Path(port_file).read_text():
                break
            await asyncio.sleep(0.1)
        port = int(Path(port_file).read_text())
        http = f"http://127.0.0.1:{port}"
        audio = speech_audio()
        print(f"server pid {server.pid} on port {port}; each session loops {len(audio) / 32000:.1f} s of audio "
              f"in {args.frame_ms} ms frames; {args.duration:.0f} s per level")
        header = (f"{'N':>6} {'conn':>6} {'decisions':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'x base':>7} "
                  f"{'srv p99<=':>9} {'client p99':>10} {'RSS/sess KB':>11} {'srv CPU':>7} {'cli CPU':>7} "
                  f"{'full GC':>9} {'errors':>6}")
        print(header)
        best = None
        base = None
        buckets: dict[float, float] = {}
        for n in [int(x) for x in args.levels.split(",")]:
            row, buckets = await run_level(port, http, audio, n, args.duration, args.frame_ms, server.pid, buckets)
            base = base or row["lag_p99_ms"]
            ratio = row["lag_p99_ms"] / base if base else float("nan")
            srv = row["server_vad_p99_ms_le"]
            print(f"{n:>6} {row['connected']:>6} {row['decisions']:>9} {row['lag_p50_ms']:>8.1f} "
                  f"{row['lag_p95_ms']:>8.1f} {row['lag_p99_ms']:>8.1f} {ratio:>7.2f} "
                  f"{(f'{srv:.1f}' if srv is not None else '-'):>9} {row['client_pacing_p99_ms']:>10.1f} "
                  f"{row['rss_per_session_kb']:>11.0f} {row['server_cpu']:>7.0%} {row['client_cpu']:>7.0%} "
                  f"{row['full_gc']:>3.0f}x{row['full_gc_ms']:>4.0f}ms {row['errors']:>6}", flush=True)
            if row["lag_p99_ms"] <= 50 and row["connected"] == n and not row["errors"]:
                best = n
            await asyncio.sleep(2)
        print(f"largest N with p99 lag <= 50 ms: {best if best is not None else 'none of the levels'}")
    finally:
        server.terminate()
        server.wait(10)
        Path(port_file).unlink(missing_ok=True)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve-fake":
        serve_fake(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,200,400,500,600,700", help="comma-separated session counts")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per level")
    parser.add_argument("--frame-ms", type=int, default=20, help="audio frame length the clients send")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (voiceserver serve --workers)")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
