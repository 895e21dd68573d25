"""`voiceserver serve`: check the configuration, build the server, run uvicorn on uvloop until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import sys
from typing import Any

import uvicorn

from ..logs import configure_logging, get_logger
from ..settings import Settings

log = get_logger("SERVER")


class _GracefulServer(uvicorn.Server):
    """On shutdown, tell open voice sessions first (while their sockets are still open), then let uvicorn close."""

    voice: Any = None

    async def shutdown(self, sockets: Any = None) -> None:
        if self.voice is not None and self.voice.hub is not None:
            await self.voice.hub.shutdown()
        await super().shutdown(sockets=sockets)

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


def run_server(settings: Settings) -> int:
    """Run until stopped. Returns the process exit code (1 with a one-line message when start-up is impossible)."""
    from ..app import StartupError, build_server, check_startup, create_app

    configure_logging(settings.log_level, settings.log_format, settings.log_file, secrets=settings.secrets())
    try:
        check_startup(settings)
        voice = build_server(settings)
        if settings.app:
            check_startup(settings, voice.agents)  # the application's own agents may use other models
    except StartupError as exc:
        print(f"voiceserver: {exc}", file=sys.stderr)
        return 1
    app = create_app(voice)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", ws="websockets-sansio", lifespan="on",
        log_config=None, access_log=False, ws_max_size=1 << 20, ws_ping_interval=20, ws_ping_timeout=20,
        timeout_graceful_shutdown=10,
    )
    server = _GracefulServer(config)
    server.voice = voice
    log.info("starting voiceserver", fields={"stt": settings.stt_provider, "tts": settings.tts_provider,
                                             "agent": settings.agent.name, "model": settings.agent.model})
    server.run()
    return 0
