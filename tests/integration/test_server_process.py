"""`voiceserver serve` as a real process: clean shutdown on SIGTERM / SIGINT tells open sessions and exits 0."""

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets

from voiceserver.testing.processes import start_serve_process


async def start_server(tmp_path, models_dir, *extra: str):
    env = {"LANCEDB_URI": str(tmp_path / "memory"), "VOICESERVER_AGENT__MEMORY__TYPE": "none",
           "VOICESERVER_MODELS_DIR": str(models_dir)}
    return await start_serve_process(list(extra), env=env, wait_for="/healthz", stdout=subprocess.PIPE)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_tells_open_sessions_and_exits_cleanly(tmp_path, models_dir, sig):
    proc, port = await start_server(tmp_path, models_dir)
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/voice")
        await ws.send(json.dumps({"type": "session.start", "resource": "caller-1"}))
        started = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert started["type"] == "session.started"
        proc.send_signal(sig)
        messages = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                message = await asyncio.wait_for(ws.recv(), 15)
                if isinstance(message, str):
                    messages.append(json.loads(message))
        assert {"type": "session.closed", "reason": "server_shutdown"} in messages
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0
        logs = [json.loads(line) for line in proc.stderr.read().decode().splitlines() if line.startswith("{")]
        assert any(r["message"] == "session closed" and r.get("reason") == "server_shutdown" for r in logs)
        assert all(r["level"] != "error" for r in logs), [r for r in logs if r["level"] == "error"]
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_readyz_names_what_is_loading_then_ready(tmp_path, models_dir):
    proc, port = await start_server(tmp_path, models_dir, "--log-format", "pretty")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            seen = set()
            for _ in range(1200):
                response = await http.get("/readyz")
                if response.status_code == 200:
                    break
                seen.update(response.json()["missing"])
                await asyncio.sleep(0.1)
            assert response.status_code == 200, response.json()
            assert set(response.json()["engines"]) == {"stt", "tts", "agent:Assistant"}
            assert seen, "before loading finished, /readyz named what was missing"
            metrics = (await http.get("/metrics")).text
            assert 'voiceserver_engine_loaded{engine="stt"} 1.0' in metrics
            # Loading the models allocated plenty: the server's GC pauses are timed, young collections at least.
            assert 'voiceserver_gc_pause_seconds_count{generation="0"}' in metrics
            young = float(metrics.split('voiceserver_gc_pause_seconds_count{generation="0"} ')[1].split()[0])
            assert young >= 1
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 60)
    assert "[SERVER]" in proc.stderr.read().decode(), "--log-format pretty"


async def test_workers_share_the_port_and_stop_together(tmp_path, models_dir):
    proc, port = await start_server(tmp_path, models_dir, "--workers", "2")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(1800):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
        sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/v1/voice") for _ in range(6)]
        sessions = []
        for ws in sockets:
            await ws.send(json.dumps({"type": "session.start"}))
            sessions.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        assert all(s["type"] == "session.started" for s in sessions)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
        workers = [int(p) for p in children.split()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd.code == 1001
        assert await asyncio.to_thread(proc.wait, 90) == 0
        logs = [json.loads(line) for line in proc.stderr.read().decode().splitlines() if line.startswith("{")]
        assert {r.get("worker") for r in logs if r["message"].startswith("listening on")} == {"0", "1"}
    finally:
        if proc.poll() is None:
            proc.kill()
