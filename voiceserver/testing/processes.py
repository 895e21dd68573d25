"""Real server processes and an S3-compatible store for process-level tests (yours and ours).

    proc, port = await start_serve_process(["--app", "myapp:app"], env={...})
    with moto_s3("voice-memory") as options:      # storage options for LANCEDB_URI=s3://voice-memory/...
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx


def stop_children_on_sigterm() -> None:
    """Make SIGTERM act like Ctrl-C in a script that starts server processes: Python's default for SIGTERM exits at
    once, skipping the ``finally`` blocks that stop the children, which then run on as orphans."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_serve_process(args: list[str] | None = None, *, env: dict[str, str] | None = None,
                              wait_for: str = "/readyz", timeout_s: float = 120.0,
                              stdout: int | None = None, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """Start `python -m voiceserver serve --port <free> *args` and wait until ``wait_for`` answers 200.
    ``port``: this port instead of a free one (a restart on the same address).

    stderr is piped (read it after the process ends); on failure the process is killed and its stderr shown.
    """
    port = port or free_port()
    # Popen returns as soon as the child exists; waiting on it is done with poll() and to_thread below.
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "voiceserver", "serve", "--port", str(port), *(args or [])],
        env={**os.environ, **(env or {})}, stdout=stdout, stderr=subprocess.PIPE)
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient() as http:
        while asyncio.get_running_loop().time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}{wait_for}")).status_code == 200:
                    return proc, port
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"server not answering {wait_for} after {timeout_s:g} s")


async def stop_process(proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """SIGTERM and wait (kill after ``timeout_s``); returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return await asyncio.to_thread(proc.wait, timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return await asyncio.to_thread(proc.wait, 10)


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[dict[str, str]]:
    """An S3-compatible server (moto) on 127.0.0.1 with ``bucket`` created; yields LanceDB storage options."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {"aws_endpoint": endpoint, "aws_access_key_id": "test", "aws_secret_access_key": "test",
               "aws_region": "us-east-1", "allow_http": "true"}
    finally:
        server.stop()
