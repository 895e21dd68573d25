"""Model strings to chat models: the one place in llm/ that maps a prefix to a provider class.

==========================  ==========================================================================================
``local/<name>``            a GGUF from models/ (manifest entries of kind "llm": ``local/smollm2``,
                            ``local/qwen2.5-coder-0.5b``) run in process by llama.cpp (:class:`LlamaCppModel`),
                            loaded once
``openai/<model>``          OpenAI (``OPENAI_API_KEY``, optional ``OPENAI_BASE_URL``)
``google/<model>``          Gemini through Google's OpenAI-compatible endpoint (``GOOGLE_AI_API_KEY``)
``openai-compatible/<m>``   any OpenAI-compatible server: vLLM, Ollama, a llama.cpp server
                            (``VOICESERVER_LLM__OPENAI_COMPATIBLE_BASE_URL``, optional ``..._API_KEY``)
==========================  ==========================================================================================

A list of specs is a fallback chain (:class:`FallbackChatModel`). Models are cached per registry, so every agent of a
server shares one local model (one set of llama.cpp contexts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import LiveActivity, ProviderError
from ..metrics import Metrics
from .base import ChatModel, UnknownModelError
from .fallback import FallbackChatModel
from .llama_cpp import LlamaCppModel
from .openai_compatible import GOOGLE_OPENAI_BASE_URL, OpenAICompatibleModel
from .sampling import Sampling

if TYPE_CHECKING:
    from ..settings import Settings

PREFIXES = ("local/", "openai/", "google/", "openai-compatible/")
ModelSpec = str | ChatModel | list[str | ChatModel]


@dataclass
class ModelContext:
    """What providers need, built by the app from Settings (tests build it directly)."""

    models_dir: Path
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    google_ai_api_key: str | None = None
    openai_compatible_base_url: str | None = None
    openai_compatible_api_key: str | None = None
    threads: int = 2
    context: int = 2048
    pool: int = 1
    max_tokens: int = 160
    temperature: float = 0.3
    timeout_s: float = 60.0
    metrics: Metrics | None = None
    google_base_url: str = GOOGLE_OPENAI_BASE_URL  # tests point it at a loopback server
    retries: int = 1  # cloud models: retries before the first chunk
    sampling: Sampling | None = None  # local models; its temperature is replaced by ``temperature``
    live_activity: LiveActivity | None = None  # the server's; None: each model has its own

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None,
                      live_activity: LiveActivity | None = None) -> ModelContext:
        def secret(value: object) -> str | None:
            return value.get_secret_value() or None if value is not None else None  # type: ignore[attr-defined]

        llm = settings.llm
        return cls(
            models_dir=Path(settings.models_dir),
            openai_api_key=secret(settings.openai_api_key),
            openai_base_url=settings.openai_base_url,
            google_ai_api_key=secret(settings.google_ai_api_key),
            openai_compatible_base_url=llm.openai_compatible_base_url,
            openai_compatible_api_key=secret(llm.openai_compatible_api_key),
            threads=llm.threads,
            context=llm.context,
            pool=llm.pool,
            max_tokens=llm.max_tokens,
            temperature=llm.temperature,
            timeout_s=llm.timeout_s,
            metrics=metrics,
            sampling=Sampling(temperature=llm.temperature, top_p=llm.top_p, top_k=llm.top_k, min_p=llm.min_p,
                              repeat_penalty=llm.repeat_penalty, repeat_last_n=llm.repeat_last_n,
                              frequency_penalty=llm.frequency_penalty, presence_penalty=llm.presence_penalty,
                              no_repeat_ngram=llm.no_repeat_ngram),
            live_activity=live_activity,
        )


def _local_models() -> dict[str, str]:
    """Local model names (manifest entries of kind "llm") -> the manifest name."""
    from ..model_files import load_manifest

    return {name: name for name, spec in load_manifest().items() if spec.kind == "llm"}


def local_model_names(specs: list[object]) -> list[str]:
    """The manifest models that these model specs run locally (``local/<name>``; other specs and unknown names are
    skipped: resolving them reports those). Order kept, no duplicates: what ``voiceserver models fetch`` needs."""
    known = _local_models()
    names: list[str] = []
    for spec in specs:
        if isinstance(spec, str) and spec.strip().startswith("local/"):
            name = known.get(spec.strip().partition("/")[2])
            if name is not None and name not in names:
                names.append(name)
    return names


class ModelRegistry:
    """Resolves model specs to ChatModel instances, cached; closes them all in :meth:`close`."""

    def __init__(self, context: ModelContext):
        self.context = context
        self._cache: dict[object, ChatModel] = {}
        self._lock = threading.Lock()
        self._builders: dict[str, Callable[[str, str], ChatModel]] = {
            "local": self._local,
            "openai": self._openai,
            "google": self._google,
            "openai-compatible": self._openai_compatible,
        }

    @property
    def prefixes(self) -> list[str]:
        return list(PREFIXES)

    def resolve(self, spec: ModelSpec) -> ChatModel:
        """A ChatModel for ``spec``: a model string, a ChatModel (returned as is), or a list (a fallback chain).

        Raises UnknownModelError for an unknown prefix or local name, ProviderError("not_configured") naming the
        environment variable to set when a provider's key or URL is missing.
        """
        if isinstance(spec, ChatModel):
            return spec
        if isinstance(spec, list | tuple):
            if not spec:
                raise ProviderError("invalid_request", "an empty model list")
            models = [self.resolve(item) for item in spec]
            if len(models) == 1:
                return models[0]
            key = ("fallback", *(m.id for m in models), *(id(m) for m in models))
            with self._lock:
                if key not in self._cache:
                    self._cache[key] = FallbackChatModel(models, self.context.metrics, owns_models=False)
                return self._cache[key]
        if not isinstance(spec, str):
            raise ProviderError("invalid_request", f"a model must be a string, a ChatModel or a list, "
                                f"not {type(spec).__name__}")
        text = spec.strip()
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                return cached
            prefix, _, name = text.partition("/")
            builder = self._builders.get(prefix)
            if builder is None or not name:
                raise UnknownModelError(text, [p + "<model>" for p in PREFIXES])
            model = builder(text, name)
            self._cache[text] = model
            return model

    # --- builders: one per prefix ------------------------------------------------------------------------------

    def _local(self, spec: str, name: str) -> ChatModel:
        from ..model_files import ModelError, model_file, require_models

        known = _local_models()
        if name not in known:
            raise UnknownModelError(spec, [f"local/{n}" for n in known])
        try:
            require_models(self.context.models_dir, [known[name]], deep=False)
        except ModelError as exc:
            raise ProviderError("model_missing", str(exc), provider="local") from exc
        c = self.context
        return LlamaCppModel(model_file(c.models_dir, known[name], ".gguf"), model_id=spec, threads=c.threads,
                             context=c.context, pool=c.pool, max_tokens=c.max_tokens, sampling=c.sampling,
                             temperature=c.temperature, timeout_s=c.timeout_s, metrics=c.metrics,
                             live_activity=c.live_activity)

    def _cloud(self, spec: str, name: str, *, provider: str, api_key: str | None, base_url: str | None
               ) -> ChatModel:
        c = self.context
        return OpenAICompatibleModel(name, api_key=api_key, base_url=base_url, model_id=spec, provider=provider,
                                     max_tokens=c.max_tokens, temperature=c.temperature, timeout_s=c.timeout_s,
                                     retries=c.retries, metrics=c.metrics, live_activity=c.live_activity)

    def _openai(self, spec: str, name: str) -> ChatModel:
        if not self.context.openai_api_key:
            raise ProviderError("not_configured", f"model {spec!r} needs an OpenAI API key: set OPENAI_API_KEY "
                                "(and OPENAI_BASE_URL for another endpoint)", provider="openai")
        return self._cloud(spec, name, provider="openai", api_key=self.context.openai_api_key,
                           base_url=self.context.openai_base_url)

    def _google(self, spec: str, name: str) -> ChatModel:
        if not self.context.google_ai_api_key:
            raise ProviderError("not_configured", f"model {spec!r} needs a Google AI API key: set GOOGLE_AI_API_KEY",
                                provider="google")
        return self._cloud(spec, name, provider="google", api_key=self.context.google_ai_api_key,
                           base_url=self.context.google_base_url)

    def _openai_compatible(self, spec: str, name: str) -> ChatModel:
        if not self.context.openai_compatible_base_url:
            raise ProviderError("not_configured", f"model {spec!r} needs the server's URL: set "
                                "VOICESERVER_LLM__OPENAI_COMPATIBLE_BASE_URL (e.g. http://localhost:11434/v1), and "
                                "VOICESERVER_LLM__OPENAI_COMPATIBLE_API_KEY if it wants a key",
                                provider="openai-compatible")
        return self._cloud(spec, name, provider="openai-compatible",
                           api_key=self.context.openai_compatible_api_key,
                           base_url=self.context.openai_compatible_base_url)

    async def close(self) -> None:
        """Close every model this registry built."""
        with self._lock:
            models, self._cache = list(self._cache.values()), {}
        for model in models:
            await model.close()


_default: ModelRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> ModelRegistry:
    """A process-wide registry built from ``Settings()`` on first use, for library users without an app."""
    global _default
    with _default_lock:
        if _default is None:
            from ..settings import Settings

            _default = ModelRegistry(ModelContext.from_settings(Settings()))
        return _default
