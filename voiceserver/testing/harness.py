"""Run a complete voice server with your own (or scripted) engines on 127.0.0.1 port 0, for tests.

    async with voice_server(agent=my_agent, stt=ScriptedSTT(["hello"]), tts=ToneTTS()) as vs:
        async with VoiceClient.connect(vs.ws_url) as client:
            turn = await client.ask_text("hi")

Anything not given is scripted: a ScriptedSTT, a ToneTTS, and an Agent over a ScriptedChatModel.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..server.composition import VoiceServer, build_server, create_app
from ..settings import Settings
from .fake_llm import ScriptedChatModel
from .fake_voice import ScriptedSTT, ToneTTS
from .servers import RunningServer, serve_app


@dataclass
class RunningVoiceServer:
    server: VoiceServer
    running: RunningServer

    @property
    def ws_url(self) -> str:
        return self.running.ws_url + "/v1/voice"

    @property
    def http_url(self) -> str:
        return self.running.http_url


@contextlib.asynccontextmanager
async def voice_server(*, agent: Any = None, agents: dict[str, Any] | None = None, stt: Any = None, tts: Any = None,
                       settings: Settings | None = None, engines_from_settings: bool = False,
                       **build_kwargs: Any) -> AsyncIterator[RunningVoiceServer]:
    """A real uvicorn server around :func:`voiceserver.server.composition.build_server` with the given parts.
    ``engines_from_settings``: build the speech engines the settings name (real models, fallback chains) instead of
    the scripted ones."""
    from ..agent import Agent

    if agents is None:
        agent = agent or Agent(name="Assistant", instructions="Be brief.",
                               model=ScriptedChatModel(["Hello! How can I help you today?"]))
        agents = {agent.name: agent}
    settings = settings or Settings()
    if not engines_from_settings:
        stt, tts = stt or ScriptedSTT(["hello there"]), tts or ToneTTS()
    server = build_server(settings, stt=stt, tts=tts, agents=agents,
                          default_agent=next(iter(agents)), **build_kwargs)
    async with serve_app(create_app(server), ws_compression=settings.websocket_compression) as running:
        yield RunningVoiceServer(server, running)
