"""The loopback server core: route groups in, a base_url out."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ..servers import RunningServer, serve_app


class FakeOpenAI:
    """Async context manager running the given routes under /v1 on 127.0.0.1 port 0."""

    def __init__(self, *route_groups: list[BaseRoute], api_key: str | None = None):
        self.routes = [route for group in route_groups for route in group]
        self.api_key = api_key
        self.requests: list[tuple[str, Any]] = []
        self.base_url = ""
        self._stack: contextlib.AsyncExitStack | None = None
        self.server: RunningServer | None = None

    def build_app(self) -> Starlette:
        app = Starlette(routes=self.routes)
        app.state.fake = self
        return app

    async def __aenter__(self) -> FakeOpenAI:
        self._stack = contextlib.AsyncExitStack()
        self.server = await self._stack.enter_async_context(serve_app(self.build_app(), lifespan="off"))
        self.base_url = self.server.http_url + "/v1"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._stack is not None
        await self._stack.aclose()
