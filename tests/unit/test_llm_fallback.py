"""FallbackChatModel with scripted models: failures before the first chunk switch, after it they propagate."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from voiceserver.engines import ProviderError
from voiceserver.llm.base import ChatMessage, ChatRequest, Finish, TextDelta
from voiceserver.llm.fallback import FallbackChatModel
from voiceserver.metrics import Metrics
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

REQUEST = ChatRequest([ChatMessage("user", "hello")])


def fallbacks(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("voiceserver_provider_fallbacks_total", {"operation": "llm"}) or 0.0


async def test_primary_error_uses_the_secondary_and_is_logged_and_counted(caplog):
    metrics = Metrics()
    primary = ScriptedChatModel([Reply(error=ProviderError("llm_unavailable", "down", retryable=True))],
                                model_id="scripted/primary")
    secondary = ScriptedChatModel(["From the secondary."], model_id="scripted/secondary")
    chain = FallbackChatModel([primary, secondary], metrics)
    with caplog.at_level(logging.WARNING, logger="voiceserver.llm"):
        result = await chain.complete(REQUEST)
    assert result.text == "From the secondary."
    assert primary.calls == 1 and secondary.calls == 1
    assert fallbacks(metrics) == 1
    assert chain.last_model is secondary
    assert any("falling back to scripted/secondary" in r.getMessage() for r in caplog.records)


async def test_primary_timeout_before_first_chunk_uses_the_secondary():
    metrics = Metrics()
    slow = ScriptedChatModel([Reply(text="too late", first_delay_s=30)], model_id="scripted/slow",
                             first_chunk_timeout_s=0.05)
    fast = ScriptedChatModel(["in time"], model_id="scripted/fast")
    chain = FallbackChatModel([slow, fast], metrics)
    result = await chain.complete(REQUEST)
    assert result.text == "in time"
    assert slow.cancelled == 1  # the slow attempt was stopped, not left running
    assert fallbacks(metrics) == 1


async def test_chain_level_attempt_timeout():
    slow = ScriptedChatModel([Reply(text="too late", first_delay_s=30)], model_id="scripted/slow")
    fast = ScriptedChatModel(["in time"], model_id="scripted/fast")
    chain = FallbackChatModel([slow, fast], first_chunk_timeout_s=0.05)
    assert (await chain.complete(REQUEST)).text == "in time"


async def test_error_after_the_first_chunk_propagates():
    class Breaks(ScriptedChatModel):
        async def _stream(self, request):
            yield TextDelta("partial ")
            raise ProviderError("llm_unavailable", "connection dropped", retryable=True)

    metrics = Metrics()
    secondary = ScriptedChatModel(["never"], model_id="scripted/secondary")
    chain = FallbackChatModel([Breaks([], model_id="scripted/breaks"), secondary], metrics)
    seen = []
    with pytest.raises(ProviderError) as err:
        async for chunk in chain.stream(REQUEST):
            seen.append(chunk)
    assert err.value.code == "llm_unavailable"
    assert seen == [TextDelta("partial ")]
    assert secondary.calls == 0 and fallbacks(metrics) == 0


async def test_every_model_failing_raises_the_last_error():
    chain = FallbackChatModel([
        ScriptedChatModel([Reply(error=ProviderError("provider_auth", "bad key"))], model_id="a/1"),
        ScriptedChatModel([Reply(error=ProviderError("llm_unavailable", "down", retryable=True))], model_id="b/2"),
    ])
    with pytest.raises(ProviderError) as err:
        await chain.complete(REQUEST)
    assert err.value.code == "llm_unavailable"


async def test_plain_exceptions_are_mapped_and_fall_back():
    chain = FallbackChatModel([ScriptedChatModel([Reply(error=RuntimeError("boom"))], model_id="a/1"),
                               ScriptedChatModel(["ok"], model_id="b/2")])
    assert (await chain.complete(REQUEST)).text == "ok"


async def test_id_shows_the_chain_and_streams_end_with_finish():
    chain = FallbackChatModel([ScriptedChatModel(["x"], model_id="openai/gpt-4o-mini"),
                               ScriptedChatModel(["y"], model_id="local/smollm2")])
    assert chain.id == "openai/gpt-4o-mini -> local/smollm2"
    chunks = [c async for c in chain.stream(REQUEST)]
    assert isinstance(chunks[-1], Finish)


async def test_cancelling_the_consumer_stops_the_answering_model():
    model = ScriptedChatModel([Reply(text="one two three four five six", chunk_delay_s=10)], model_id="a/1")
    chain = FallbackChatModel([model])
    first = asyncio.Event()

    async def consume():
        async for _ in chain.stream(REQUEST):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert model.cancelled == 1


def test_empty_chain_is_rejected():
    with pytest.raises(ValueError):
        FallbackChatModel([])
