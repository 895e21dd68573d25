"""A chat model that falls back to the next model of a chain when one fails before answering.

``FallbackChatModel([primary, secondary, ...])`` streams from the first model; if it raises or times out before its
first chunk, the next model gets the same request (the switch is logged and counted in
``voiceserver_provider_fallbacks_total{operation="llm"}``). Once a model has produced a chunk, its errors propagate:
the caller has already seen part of that answer, and a second model would start it over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from ..engines import ProviderError, map_exception
from ..logs import get_logger
from ..metrics import Metrics
from .base import ChatChunk, ChatModel, ChatRequest, ModelCapabilities

log = get_logger("LLM")


class FallbackChatModel(ChatModel):
    """Tries ``models`` in order until one produces its first chunk.

    Each model keeps its own timeouts and retries (its :meth:`ChatModel.stream` runs them), so this adapter overrides
    ``stream`` itself rather than wrapping a second timeout around the chain. ``first_chunk_timeout_s``, if set, bounds
    each model's wait for its first chunk on top of the model's own limit.
    """

    provider = "fallback"

    def __init__(self, models: list[ChatModel], metrics: Metrics | None = None, *,
                 first_chunk_timeout_s: float | None = None, owns_models: bool = True):
        """``owns_models=False`` leaves the models open in :meth:`close` (the registry shares them between chains)."""
        if not models:
            raise ValueError("FallbackChatModel needs at least one model")
        super().__init__(" -> ".join(m.id for m in models), retries=0, metrics=metrics,
                         timeout_s=sum(m.timeout_s for m in models))
        self.models = list(models)
        self.attempt_timeout_s = first_chunk_timeout_s
        self.capabilities = ModelCapabilities(
            tools=all(m.capabilities.tools for m in models),
            structured_output=all(m.capabilities.structured_output for m in models),
            streaming=all(m.capabilities.streaming for m in models),
        )
        self.owns_models = owns_models
        self.last_model: ChatModel | None = None  # the model that answered the latest call

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream from the first model that produces a chunk; errors after that chunk propagate."""
        last_error: ProviderError | None = None
        for position, model in enumerate(self.models):
            agen = model.stream(request).__aiter__()
            try:
                try:
                    if self.attempt_timeout_s is not None:
                        async with asyncio.timeout(self.attempt_timeout_s):
                            first = await agen.__anext__()
                    else:
                        first = await agen.__anext__()
                except StopAsyncIteration:
                    self.last_model = model
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure before the first chunk moves on
                    last_error = map_exception(exc, model.provider, "llm")
                    if position + 1 < len(self.models):
                        following = self.models[position + 1]
                        log.warning(f"{model.id} failed before answering ({last_error}); falling back to "
                                    f"{following.id}", fields={"from": model.id, "to": following.id,
                                                               "code": last_error.code})
                        self.metrics.provider_fallbacks.labels("llm").inc()
                    continue
                self.last_model = model
                yield first
                async for chunk in agen:
                    yield chunk
                return
            finally:
                await agen.aclose()
        assert last_error is not None
        log.error(f"every model of {self.id} failed; last error: {last_error}")
        raise last_error

    def count_tokens(self, text: str) -> int:
        """The primary model's count (the one whose context the prompt is budgeted for)."""
        return self.models[0].count_tokens(text)

    async def count_tokens_async(self, text: str) -> int:
        return await self.models[0].count_tokens_async(text)

    @property
    def warms_prompts(self) -> bool:  # type: ignore[override]
        return self.models[0].warms_prompts

    async def prefill(self, request: ChatRequest, still_wanted: Callable[[], bool] | None = None) -> int:
        """The primary model's prefill (the one the next turn will try first)."""
        return await self.models[0].prefill(request, still_wanted)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        async for chunk in self.stream(request):
            yield chunk

    async def load(self) -> None:
        """Load the primary model (the others load on first use, so a healthy primary costs nothing extra)."""
        await self.models[0].load()

    async def close(self) -> None:
        """Close every model of the chain if it owns them (their close methods are idempotent)."""
        if not self.owns_models:
            return
        for model in self.models:
            await model.close()
