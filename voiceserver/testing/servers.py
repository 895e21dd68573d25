"""Run an ASGI app on a real uvicorn server bound to 127.0.0.1 port 0, inside the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


class RunningServer:
    """A started server: ``port``, ``http_url`` and ``ws_url``."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task):
        self.server = server
        self.task = task
        self.port: int = server.servers[0].sockets[0].getsockname()[1]
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, lifespan: str = "on", startup_timeout_s: float = 60.0,
                    port: int = 0, ws_compression: bool = False) -> AsyncIterator[RunningServer]:
    """Serve ``app`` until the block exits; shuts the server down gracefully afterwards. ``port`` 0 picks a free
    one; a fixed port lets a test restart a server where its clients expect it. ``ws_compression``: accept
    permessage-deflate (off, as `voiceserver serve` serves by default)."""
    from ..gateway.fast_audio import FastAudioProtocol

    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=FastAudioProtocol, loop="none", lifespan=lifespan,
                            log_config=None, access_log=False, ws_max_size=1 << 20,
                            ws_per_message_deflate=ws_compression)
    server = uvicorn.Server(config)
    # uvicorn would install its own signal handlers; in a test the process owns them.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(startup_timeout_s):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("server exited during start-up")
                await asyncio.sleep(0.01)
        yield RunningServer(server, task)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            try:
                async with asyncio.timeout(15):
                    await task
            except TimeoutError:
                server.force_exit = True
                task.cancel()
