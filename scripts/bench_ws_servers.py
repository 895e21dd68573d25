#!/usr/bin/env python
"""The cost of receiving one 20 ms audio frame, per WebSocket server stack: CPU microseconds per frame.

Each server runs in its own process and only counts binary frames (no session, no VAD), so the figure is the
transport's own cost: uvicorn with the websockets-sansio implementation (what `voiceserver serve` runs), uvicorn with
the legacy websockets implementation, and the `websockets` library's own asyncio server. The load generator of
scripts/load_sessions.py (raw pre-masked frames, paced in real time) drives N connections for D seconds; the server's
CPU time is read from /proc before and after. Also printed: the full voiceserver native gateway with instant fake
engines (session, VAD, events) for the same load, so the transport's share of a frame is visible.

    .venv/bin/python scripts/bench_ws_servers.py --sessions 300 --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

SERVERS = ("uvicorn-sansio", "uvicorn-websockets", "websockets-asyncio", "voiceserver")


def serve(kind: str, port_file: str) -> None:
    """Run one server kind (in a child process) and write its port to ``port_file``."""
    import socket

    import uvloop

    frames = 0

    async def count_asgi(scope, receive, send) -> None:
        nonlocal frames
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                frames += 1

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    if kind.startswith("uvicorn"):
        import uvicorn

        ws = "websockets-sansio" if kind == "uvicorn-sansio" else "websockets"
        config = uvicorn.Config(count_asgi, loop="uvloop", ws=ws, log_level="warning", ws_max_size=1 << 20)
        uvloop.run(uvicorn.Server(config).serve(sockets=[sock]))
    elif kind == "websockets-asyncio":
        from websockets.asyncio.server import serve as ws_serve

        async def handler(connection) -> None:
            nonlocal frames
            async for message in connection:
                if isinstance(message, bytes):
                    frames += 1

        async def main() -> None:
            async with ws_serve(handler, sock=sock, max_size=1 << 20, compression=None):
                await asyncio.Future()

        uvloop.run(main())
    else:  # the full native gateway with instant fake engines
        from load_sessions import serve_fake

        sock.close()
        serve_fake(port_file)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a server process and its worker processes (all their threads), from /proc."""
    from load_sessions import family

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def drive(port: int, sessions: int, duration: float) -> int:
    """Open ``sessions`` connections and stream frames for ``duration`` s; returns the frames sent."""
    from load_sessions import Stats, masked_frame, open_session, pace, speech_audio

    audio = speech_audio()
    step = 640
    frames = [masked_frame(audio[i:i + step], 2) for i in range(0, len(audio) - step, step)]
    stats = Stats()
    opened = [await open_session(port, stats, frames, 20) for _ in range(sessions)]
    stop = asyncio.Event()
    pacer = asyncio.create_task(pace(opened, stats, 20, stop))
    await asyncio.sleep(duration)
    stop.set()
    await pacer
    for s in opened:
        if s.transport is not None:
            s.transport.close()
    return sum(int(s.position_ms // s.frame_ms) for s in opened)  # frames sent


async def measure(kind: str, sessions: int, duration: float) -> tuple[float, float]:
    port_file = tempfile.mktemp(prefix="ws-bench-")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port-file", port_file], cwd=REPO)
    try:
        for _ in range(600):
            if Path(port_file).exists() and Path(port_file).read_text().strip():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5 if kind == "voiceserver" else 0.5)
        port = int(Path(port_file).read_text())
        before, started = cpu_seconds(proc.pid), time.perf_counter()
        sent = await drive(port, sessions, duration)
        used, wall = cpu_seconds(proc.pid) - before, time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(20)
    return used / max(sent, 1) * 1e6, used / wall * 100


async def main_async(args: argparse.Namespace) -> None:
    kinds = [k.strip() for k in args.servers.split(",")]
    results = {}
    for kind in kinds:
        results[kind] = await measure(kind, args.sessions, args.duration)
        print(f"  {kind}: {results[kind][0]:.1f} us/frame", file=sys.stderr)
    base = results[kinds[0]][0]
    print(f"\n{args.sessions} connections x 50 frames/s for {args.duration:.0f} s (the load generator in this process)")
    print(f"{'server':<22} {'CPU us/frame':>12} {'CPU %':>7} {'ratio':>7}")
    for kind, (per_frame, percent) in results.items():
        print(f"{kind:<22} {per_frame:>12.1f} {percent:>7.0f} {per_frame / base:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port_file)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
