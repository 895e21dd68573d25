"""Time limits of a chat call: a live call is held to ``timeout_s``; a background call, which waits for live work and
pauses for it by design, gets BACKGROUND_TIMEOUT_FACTOR times as long."""

from __future__ import annotations

import asyncio

import pytest

from voiceserver.engines import ProviderError
from voiceserver.llm.base import BACKGROUND_TIMEOUT_FACTOR, ChatMessage, ChatModel, ChatRequest, Finish, TextDelta


class SlowModel(ChatModel):
    """Answers after ``delay_s`` (a call stuck behind live work)."""

    def __init__(self, delay_s: float, timeout_s: float):
        super().__init__("test/slow", timeout_s=timeout_s)
        self.delay_s = delay_s

    async def _stream(self, request: ChatRequest):
        await asyncio.sleep(self.delay_s)
        yield TextDelta("done")
        yield Finish()


def request(priority: str) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage("user", "hi")], priority=priority)


async def test_a_live_call_times_out_where_a_background_call_still_finishes():
    assert BACKGROUND_TIMEOUT_FACTOR >= 2
    model = SlowModel(delay_s=0.3, timeout_s=0.1)
    with pytest.raises(ProviderError) as info:
        await model.complete(request("live"))
    assert info.value.code == "llm_timeout"
    result = await model.complete(request("background"))
    assert result.text == "done"
    slower = SlowModel(delay_s=0.1 * BACKGROUND_TIMEOUT_FACTOR + 0.3, timeout_s=0.1)
    with pytest.raises(ProviderError):  # the background limit is a limit too
        await slower.complete(request("background"))
