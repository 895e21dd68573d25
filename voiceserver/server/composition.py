"""Composition root: builds engines, memory and agents from Settings and mounts the gateways and routes.

This is the only module that names vendors (faster-whisper, Piper, OpenAI, LanceDB...). Everything is created here
and passed in; nothing is process-global, so a test can run two servers in one process. Tests and embedding
applications can hand in their own engines and agents (``build_server(settings, stt=..., agents=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, WebSocketRoute

from ..engines import LiveActivity, ProviderError
from ..gateway.hub import SessionHub
from ..gateway.native_ws import native_voice_endpoint
from ..gateway.realtime_ws import realtime_endpoint
from ..gateway.twilio import twilio_routes
from ..gateway.webrtc import webrtc_routes
from ..identity import Authenticator, CallerLimits, LimitPolicy
from ..logs import get_logger
from ..metrics import Metrics
from ..model_files import require_models
from ..session import SessionDeps
from ..session.agent_adapter import adapt_agents
from ..settings import MemoryConfig, Settings
from ..voice_app import VoiceApp
from .audio_routes import audio_routes
from .auth import SELF_AUTHENTICATING, AccessMiddleware
from .debug_routes import debug_routes
from .routes import core_routes
from .voice_engines import SpeechEngines, VoiceConfigError

log = get_logger("SERVER")

class StartupError(Exception):
    """A problem that stops start-up; the message is one readable line."""


@dataclass
class EngineSlot:
    name: str
    load: Callable[[], Any]
    state: str = "pending"  # pending | loading | ready | failed
    error: str | None = None


@dataclass
class VoiceServer:
    """Everything one server instance owns."""

    settings: Settings
    metrics: Metrics
    stt: Any
    tts: Any
    agents: dict[str, Any]
    default_agent: str
    memory: Any = None
    model_registry: Any = None
    workflows: dict[str, Any] = field(default_factory=dict)
    extra_routes: list[BaseRoute] = field(default_factory=list)
    slots: list[EngineSlot] = field(default_factory=list)
    hub: SessionHub | None = None
    _load_task: asyncio.Task | None = None
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    def engine_status(self) -> dict[str, str]:
        return {s.name: (s.state if s.state != "failed" else f"failed: {s.error}") for s in self.slots}

    def stores(self) -> dict[str, Any]:
        """Every memory store in use (the server's and its agents'), by store URI."""
        memories = [self.memory, *(getattr(a, "memory", None) for a in self.agents.values())]
        stores = {id(s): s for m in memories if (s := getattr(m, "storage", None)) is not None}
        return {str(getattr(s, "uri", i)): s for i, s in stores.items()}

    def storage_status(self) -> dict[str, dict[str, Any]]:
        """Each memory store's health (ok, degraded, flushing; pending journaled writes), by store URI."""
        return {uri: s.health() for uri, s in self.stores().items() if hasattr(s, "health")}

    async def load_engines(self) -> None:
        """Load every engine once (each in its own thread inside its provider), sequentially to spare the CPU."""
        for slot in self.slots:
            slot.state = "loading"
            try:
                await slot.load()
                slot.state = "ready"
                self.metrics.engines_loaded.labels(slot.name).set(1)
                log.info(f"engine {slot.name} ready")
            except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log, the server keeps serving
                slot.state, slot.error = "failed", str(exc)
                log.error(f"engine {slot.name} failed to load: {exc}")

    async def startup(self) -> None:
        if self.settings.open_access:
            log.warning("open access: no API keys and no token secret, so any client may act for any resource "
                        "(fine on this machine; set VOICESERVER_API_KEYS or VOICESERVER_AUTH__TOKEN_SECRET before "
                        "exposing the server: docs/security.md)")
        else:
            log.info("access control on", fields={"api_keys": len(self.settings.api_keys),
                                                  "caller_tokens": bool(self.settings.token_secrets),
                                                  "allowed_origins": self.settings.auth.allowed_origins})
        if self.settings.preload:
            self._load_task = asyncio.create_task(self.load_engines(), name="load-engines")
        else:
            for slot in self.slots:
                slot.state = "ready"

    async def shutdown(self) -> None:
        if self.hub is not None:
            await self.hub.shutdown()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(BaseException):
                await self._load_task
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result


def required_models(settings: Settings, agents: dict[str, Any] | None = None) -> list[str]:
    """The embedded models to verify: the voice engines' and the configured agents' ones, or, given ``agents``
    (an application's own, built by ``--app``), only what those agents use."""
    names = []
    if agents is None:
        if settings.stt_provider == "local":
            names.append("whisper-base")
        if settings.tts_provider == "local":
            names.append("piper-joe")
        if settings.app:  # the application brings its agents; they are checked once they are built
            return names
        models: list[Any] = []
        for config in settings.agent_configs:
            models.extend(config.model if isinstance(config.model, list) else [config.model])
        wordllama = any(a.memory.type == "lancedb" and a.memory.embedder == "wordllama"
                        for a in settings.agent_configs)
    else:
        models = []
        for agent in agents.values():
            spec = getattr(agent, "model", None)
            models.extend(spec if isinstance(spec, list) else [spec])
        wordllama = any(type(getattr(getattr(a, "memory", None), "embedder", None)).__name__ == "WordLlamaEmbedder"
                        for a in agents.values())
    from ..llm.registry import local_model_names

    names.extend(local_model_names(models))
    if wordllama:
        names.append("wordllama")
    return names


def check_startup(settings: Settings, agents: dict[str, Any] | None = None) -> None:
    """Fail fast, in one line, on missing models or an unwritable memory directory."""
    try:
        require_models(Path(settings.models_dir), required_models(settings, agents), deep=True)
    except Exception as exc:  # noqa: BLE001 - ModelError or a manifest problem, reported as one line
        raise StartupError(str(exc)) from None
    uri = settings.lancedb_uri
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-check"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StartupError(f"memory directory {path} is not writable ({exc.strerror}); set LANCEDB_URI") from None


def _members(engine: Any) -> list[Any]:
    """The engines inside a fallback chain, or the engine itself."""
    return list(getattr(engine, "engines", None) or [engine])


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _build_memory(settings: Settings, config: MemoryConfig, cache: dict[str, Any], local_model: bool,
                  live_activity: LiveActivity | None = None) -> Any:
    """One Memory per (store, options), shared by the agents that use it; one LanceDBStore per URI (its compaction
    waits for ``live_activity`` to pause)."""
    if config.type != "lancedb":
        return None
    from ..memory import LanceDBStore, Memory

    uri = (config.url or settings.lancedb_uri).removeprefix("file:").removeprefix("//")
    extract = config.working_memory_extract if config.working_memory_extract is not None else local_model
    key = f"{uri}|{config.model_dump_json()}|{extract}"
    if key not in cache:
        store_key = f"store:{uri}"
        if store_key not in cache:
            cache[store_key] = LanceDBStore.from_settings(settings, uri, live_activity=live_activity)
        options = {"last_messages": config.last_messages,
                   "semantic_recall": {"top_k": config.recall_top_k, "message_range": config.recall_message_range,
                                       "threshold": config.recall_threshold, "scope": "resource",
                                       "exchange": config.recall_exchange}
                   if config.semantic_recall else {"enabled": False},
                   "working_memory": {"enabled": config.working_memory, "scope": config.working_memory_scope,
                                      "extract": extract}}
        cache[key] = Memory(storage=cache[store_key], embedder=config.embedder, options=options,
                            models_dir=Path(settings.models_dir), openai_api_key=_secret(settings.openai_api_key),
                            openai_base_url=settings.openai_base_url)
    return cache[key]


def build_server(
    settings: Settings,
    *,
    app: VoiceApp | None = None,
    metrics: Metrics | None = None,
    stt: Any = None,
    tts: Any = None,
    agents: dict[str, Any] | None = None,
    default_agent: str | None = None,
    memory: Any = None,
    workflows: dict[str, Any] | None = None,
    extra_routes: list[BaseRoute] | None = None,
) -> VoiceServer:
    """Build a server from settings. An application container (``app``, or ``settings.app`` as an import path)
    supplies agents, workflows and storage; otherwise they come from the settings. Any engine or the agents may
    also be handed in directly (tests, embedding applications)."""
    metrics = metrics or Metrics()
    if app is None and settings.app:
        app = _load_app(settings.app)
    if app is not None:
        agents = agents if agents is not None else app.get_agents()
        workflows = {**app.get_workflows(), **(workflows or {})}
        memory = memory or app.memory
    server = VoiceServer(settings=settings, metrics=metrics, stt=None, tts=None, agents={}, default_agent="",
                         workflows=dict(workflows or {}), extra_routes=list(extra_routes or []))
    speech = SpeechEngines(settings, metrics)
    try:
        server.stt = stt or speech.stt()
        server.tts = tts or speech.tts()
    except VoiceConfigError as exc:
        raise StartupError(str(exc)) from None
    live_activity = LiveActivity()  # this server's live engine work; background LLM calls yield to it
    for engine in (server.stt, server.tts, *getattr(server.stt, "engines", ()), *getattr(server.tts, "engines", ())):
        engine.live_activity = live_activity  # fallback adapters call their engines' public methods
    server.slots.append(EngineSlot("stt", _warm(server.stt)))
    server.slots.append(EngineSlot("tts", _warm(server.tts)))
    server._closers += [server.stt.close, server.tts.close]
    warm_agents = agents is None or app is not None  # agents handed in directly are the caller's to prepare
    if agents is None:
        from ..agent.config import build_agents
        from ..llm.registry import ModelContext, ModelRegistry

        registry = ModelRegistry(ModelContext.from_settings(settings, metrics, live_activity))
        server.model_registry = registry
        server._closers.append(registry.close)
        cache: dict[str, Any] = {}

        def voice_for(config: Any) -> Any:
            try:
                return speech.voice_for(config, server.stt, server.tts)
            except VoiceConfigError as exc:
                raise StartupError(str(exc)) from None

        local_model = any(str(m).startswith("local/") for c in settings.agent_configs
                          for m in (c.model if isinstance(c.model, list) else [c.model]))
        agents = build_agents(settings.agent_configs, model_registry=registry,
                              memory_factory=lambda cfg: memory or _build_memory(settings, cfg, cache, local_model,
                                                                                 live_activity),
                              voice_factory=voice_for)
        default_agent = settings.agent.name
        covered = {id(e) for e in (*_members(server.stt), *_members(server.tts))}
        for engine in speech.engines():  # engines only an agent's own voice uses are loaded and closed too
            if id(engine) not in covered:
                server.slots.append(EngineSlot(f"voice:{engine.provider}", _warm(engine)))
                server._closers.append(engine.close)
    if warm_agents:  # load the models, open the memories (tables, embedder) before the first caller
        for name, agent in agents.items():
            server.slots.append(EngineSlot(f"agent:{name}", _warm_agent(agent)))
        memories = list({id(m): m for a in agents.values() if (m := getattr(a, "memory", None)) is not None}.values())
        for i, mem in enumerate(memories):
            server.slots.append(EngineSlot("memory" if i == 0 else f"memory-{i}", mem.open))
            server._closers.append(mem.close)
    server.agents = agents
    server.default_agent = default_agent or next(iter(agents))
    for agent in agents.values():  # workflows the agents use are served over HTTP too
        for key, workflow in (getattr(agent, "workflows", None) or {}).items():
            server.workflows.setdefault(getattr(workflow, "id", key), workflow)
    server.memory = memory or next((getattr(a, "memory", None) for a in agents.values()
                                    if getattr(a, "memory", None) is not None), None)
    deps = SessionDeps(stt=server.stt, tts=server.tts, agents=adapt_agents(server.agents),
                       default_agent=server.default_agent, metrics=metrics, limits=settings.limits, turn=settings.turn)
    authenticator = Authenticator([k.get_secret_value() for k in settings.api_keys], settings.token_secrets,
                                  skew_s=settings.auth.clock_skew_s)
    server.hub = SessionHub(deps, max_sessions=settings.limits.max_sessions, authenticator=authenticator,
                            limits=CallerLimits(LimitPolicy.from_settings(settings.limits)))
    return server


def _load_app(path: str) -> VoiceApp:
    import os
    import sys

    from ..agent.config import load_object

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn's --app-dir ".": `--app myapp:app` finds ./myapp.py

    try:
        obj = load_object(path)
    except Exception as exc:  # noqa: BLE001 - AgentConfigError or anything user code raised
        raise StartupError(str(exc)) from None
    if callable(obj) and not isinstance(obj, VoiceApp):
        obj = obj()  # a factory function
    if not isinstance(obj, VoiceApp):
        raise StartupError(f"--app {path!r} is a {type(obj).__name__}, not a voiceserver.VoiceApp")
    if not obj.get_agents():
        raise StartupError(f"--app {path!r} registers no agents")
    return obj


def _warm(engine: Any) -> Callable[[], Any]:
    async def load() -> None:
        await engine.load()
        await engine.warmup()
    return load


def _warm_agent(agent: Any) -> Callable[[], Any]:
    """Load the agent's model and run one tiny turn, so the first caller does not pay for loading the weights
    and the local model's prompt cache already holds the system prompt (instructions and tool descriptions)."""

    async def load() -> None:
        get_model = getattr(agent, "get_model", None)
        if get_model is None:
            return
        model = await get_model()
        await model.load()  # a failure here is real: /readyz reports it
        if getattr(model, "provider", "") in ("llama_cpp", "local"):
            try:  # only primes the prompt cache; a one-token answer may well be "invalid" (a cut tool decision)
                await agent.generate("Hello", model_settings={"max_tokens": 1}, max_steps=1)
            except Exception as exc:  # noqa: BLE001 - see above
                log.debug(f"prompt-cache warm-up of {getattr(agent, 'name', '?')}: {exc}")
    return load


def create_app(server: VoiceServer) -> Starlette:
    """The ASGI app: core routes, the native voice WebSocket, memory and workflow REST when available."""
    routes: list[BaseRoute] = [*core_routes(), WebSocketRoute("/v1/voice", native_voice_endpoint)]
    routes += twilio_routes()  # POST /v1/twilio/voice (TwiML), WS /v1/twilio/stream
    routes.append(WebSocketRoute("/v1/realtime", realtime_endpoint))  # OpenAI Realtime (gateway/realtime_ws.py)
    routes += audio_routes()  # OpenAI-compatible /v1/audio/transcriptions, /v1/audio/speech, /v1/models
    routes += webrtc_routes(server)  # POST /v1/webrtc/offer, DELETE /v1/webrtc/sessions/{id}, GET /v1/webrtc/config
    routes += debug_routes(server)  # GET /v1/debug/stats, only with settings.debug_stats
    if server.memory is not None:
        try:
            from .memory_routes import memory_routes
        except ImportError:  # pragma: no cover - memory REST ships with the memory package
            pass
        else:
            routes += memory_routes(server.memory)
    if server.workflows:
        from .workflow_routes import workflow_routes

        routes += workflow_routes(server.workflows.get)
    routes += server.extra_routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()

    settings = server.settings
    signed = ("/v1/twilio/",) if settings.twilio.auth_token is not None else ()
    middleware = [Middleware(AccessMiddleware, hub=server.hub, allowed_origins=settings.auth.allowed_origins,
                             self_authenticating=SELF_AUTHENTICATING, signed=signed)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.voice = server
    app.state.hub = server.hub
    return app


__all__ = ["ProviderError", "StartupError", "VoiceServer", "build_server", "check_startup", "create_app"]
