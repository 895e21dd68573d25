"""`voiceserver serve`: check the configuration, build the server, run uvicorn on uvloop until SIGINT/SIGTERM.

With ``--workers N`` the parent binds one listening socket per worker on the same port (SO_REUSEPORT: the kernel
spreads new connections evenly over them) and forks N worker processes; each worker loads its own engines and runs
its own event loop, so a 2-core machine can use both cores for the audio path. The parent forwards SIGINT/SIGTERM
and exits when every worker has finished its graceful shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from ..gateway.fast_audio import FastAudioProtocol
from ..logs import bind_context, configure_logging, get_logger
from ..metrics import GcPauses
from ..settings import Settings
from .malloc_arenas import limit_malloc_arenas, trim_heap_every

log = get_logger("SERVER")


class _GracefulServer(uvicorn.Server):
    """On shutdown, tell open voice sessions first (while their sockets are still open), then let uvicorn close."""

    voice: Any = None
    gc_pauses: GcPauses | None = None
    heap_trim: asyncio.Task[None] | None = None

    async def shutdown(self, sockets: Any = None) -> None:
        if self.voice is not None and self.voice.hub is not None:
            await self.voice.hub.shutdown()
        await super().shutdown(sockets=sockets)
        if self.gc_pauses is not None:
            self.gc_pauses.remove()
        if self.heap_trim is not None:
            self.heap_trim.cancel()

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Like uvicorn's, minus re-raising the signal after shutdown: a graceful stop exits with status 0.
        # A second SIGINT forces the exit.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            log.info(f"received {signal.Signals(sig).name}, shutting down")
            self.should_exit = True

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                log.info(f"listening on http://{host}:{port} (voice: ws://{host}:{port}/v1/voice)")
        # Everything loaded so far (modules, settings, app) lives as long as the process: move it out of the
        # collector's way, and collect young objects less often. Fewer, shorter GC pauses on the audio path.
        gc.freeze()
        gc.set_threshold(20_000, 50, 50)
        if self.voice is not None and getattr(self.voice, "metrics", None) is not None:
            self.gc_pauses = GcPauses(self.voice.metrics).install()
        interval = getattr(getattr(self.voice, "settings", None), "malloc_trim_interval_s", 0)
        if interval > 0:
            self.heap_trim = asyncio.get_running_loop().create_task(trim_heap_every(interval))


def ws_max_bytes(settings: Settings | None) -> int:
    """uvicorn's own WebSocket message limit: twice the largest message a gateway accepts. A message just over a
    gateway's limit then reaches the gateway, which answers with its error (``frame_too_large``,
    ``event_too_large``, ...) and close 1009; only one over twice that is refused by uvicorn itself (close 1009
    without an error message), so no message larger than that is ever buffered."""
    if settings is None:
        return 1 << 20
    largest = max(settings.limits.max_frame_bytes, settings.openai_endpoints.realtime_max_event_bytes,
                  settings.twilio.max_message_bytes)
    return 2 * largest


def ws_compression(settings: Settings | None) -> bool:
    """Whether WebSockets accept permessage-deflate (``websocket_compression``, off by default). Off: 20 ms PCM
    frames barely compress, a compressed frame bypasses the fast audio path (gateway/fast_audio.py), and each
    connection would hold a zlib compressor and decompressor."""
    return bool(settings is not None and settings.websocket_compression)


def serve_app_forever(app: Any, *, host: str, port: int, voice: Any = None,
                      sockets: list[socket.socket] | None = None) -> int:
    """Run one ASGI app on uvicorn + uvloop with the voice server's shutdown handling, until stopped."""
    settings = getattr(voice, "settings", None)
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", ws=FastAudioProtocol, lifespan="on", log_config=None,
        access_log=False, ws_max_size=ws_max_bytes(settings), ws_per_message_deflate=ws_compression(settings),
        ws_ping_interval=20, ws_ping_timeout=20, timeout_graceful_shutdown=10, backlog=4096,
    )
    server = _GracefulServer(config)
    server.voice = voice
    server.run(sockets=sockets)
    return 0


def _serve(settings: Settings, sockets: list[socket.socket] | None = None) -> int:
    from .composition import StartupError, build_server, check_startup, create_app

    try:
        voice = build_server(settings)
        if settings.app:
            check_startup(settings, voice.agents)  # the application's own agents may use other models
    except StartupError as exc:
        print(f"voiceserver: {exc}", file=sys.stderr)
        return 1
    return serve_app_forever(create_app(voice), host=settings.host, port=settings.port, voice=voice,
                             sockets=sockets)


def run_server(settings: Settings) -> int:
    """Run until stopped. Returns the process exit code (1 with a one-line message when start-up is impossible)."""
    from .composition import StartupError, check_startup

    configure_logging(settings.log_level, settings.log_format, settings.log_file, secrets=settings.secrets())
    limit_malloc_arenas(settings.malloc_arena_max)  # before the engines and LanceDB start their threads
    try:
        check_startup(settings)
    except StartupError as exc:
        print(f"voiceserver: {exc}", file=sys.stderr)
        return 1
    log.info("starting voiceserver", fields={"stt": settings.stt_provider, "tts": settings.tts_provider,
                                             "agent": settings.agent.name, "model": settings.agent.model,
                                             "workers": settings.workers})
    if settings.workers <= 1:
        return _serve(settings)
    return run_forked(settings.host, settings.port, settings.workers, lambda sockets: _serve(settings, sockets))


def listening_sockets(host: str, port: int, workers: int) -> list[socket.socket]:
    """One listening socket per worker, all on one port with SO_REUSEPORT, so the kernel spreads new connections
    evenly over the workers (by a hash of the connection). A single shared socket lets whichever worker wakes first
    take the connection: under load one worker took twice the sessions of the other (scripts/load_sessions.py), and
    the busier core set the lag for everyone. Where SO_REUSEPORT is missing, one shared socket is returned."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    listeners: list[socket.socket] = []
    if reuse_port is not None:
        # A plain bind first, so that a port some other server holds is still refused ("address in use") rather
        # than silently shared; it also picks the free port when ``port`` is 0.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
    try:
        for _ in range(workers if reuse_port is not None else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port is not None:
                sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
            sock.bind((host, port))
            sock.listen(4096)
            sock.set_inheritable(True)
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def run_forked(host: str, port: int, workers: int, serve: Callable[[list[socket.socket]], int],
               on_bound: Callable[[int], None] | None = None) -> int:
    """Bind the port, fork ``workers`` processes that each run ``serve([its socket])``, forward SIGINT/SIGTERM, wait.

    Call it before any thread exists (fork safety): the engines are loaded in the workers, not here.
    """
    try:
        listeners = listening_sockets(host, port, workers)
    except OSError as exc:
        print(f"voiceserver: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    if on_bound is not None:
        on_bound(listeners[0].getsockname()[1])
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent only, which forwards it once
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            bind_context(worker=str(index))
            own = listeners[index % len(listeners)]
            for other in listeners:
                if other is not own:
                    other.close()
            code = 1
            try:
                code = serve([own])
            finally:
                os._exit(code)
        children.append(pid)
    for listener in listeners:
        listener.close()

    def forward(sig: int, frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    worst = 0
    for child in children:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    return worst
