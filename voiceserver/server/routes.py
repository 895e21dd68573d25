"""HTTP routes every server has: health, readiness, metrics, the agents a caller may pick, the voice chat page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from .composition import VoiceServer


def static_dir() -> Path:
    """static/ in a source checkout, else the copy packaged into the wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "static", here / "static"):
        if (candidate / "index.html").is_file():
            return candidate
    return here.parent / "static"


def _server(request: Request) -> VoiceServer:
    return request.app.state.voice


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    server = _server(request)
    status = server.engine_status()
    missing = [name for name, state in status.items() if state != "ready"]
    body: dict = {"ready": not missing, "engines": status, "missing": missing}
    # Storage that is unreachable (or flushing its journal) does not stop turns: still ready, and said so.
    storage = server.storage_status()
    if storage:
        body["storage"] = storage
        body["degraded"] = sorted(name for name, health in storage.items() if health["state"] != "ok")
    return JSONResponse(body, status_code=200 if not missing else 503)


async def metrics(request: Request) -> Response:
    return Response(_server(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def agents(request: Request) -> Response:
    """The agents a caller may pick (``session.start {"agent"}``, the offer's ``agent``), for the page's picker."""
    server = _server(request)
    listed = [{"name": name, "description": getattr(agent, "description", "") or ""}
              for name, agent in server.agents.items()]
    return JSONResponse({"agents": listed, "default": server.default_agent})


async def index(request: Request) -> Response:
    page = static_dir() / "index.html"
    if not page.is_file():
        return PlainTextResponse("voiceserver: see /healthz, /readyz, /metrics, ws /v1/voice")
    return FileResponse(page, media_type="text/html")


def core_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/agents", agents, methods=["GET"]),
        Route("/", index, methods=["GET"]),
    ]
    if static_dir().is_dir():  # the page's scripts, styles and audio worklets (plain files, no build step)
        routes.append(Mount("/static", StaticFiles(directory=static_dir()), name="static"))
    return routes
