"""Memory processors: TokenLimiter and ToolCallFilter on plain values."""

from __future__ import annotations

import pytest

from voiceserver.memory import Message, TokenLimiter, ToolCallFilter, estimate_tokens


def msg(content: str, role: str = "user", type_: str = "text", **meta) -> Message:
    return Message(role, content, "t1", "r1", type=type_, metadata=meta)


def test_estimate_is_chars_over_four_plus_overhead():
    assert estimate_tokens(msg("x" * 40)) == 4 + 10
    assert estimate_tokens(msg("")) == 4
    call = msg("", "assistant", "tool-call", tool_call_id="c1", tool_name="weather", args={"city": "Paris"})
    assert estimate_tokens(call) == 4 + -(-len('{"city": "Paris"}') // 4)


def test_token_limiter_drops_oldest_until_it_fits():
    messages = [msg(f"{i}" * 36) for i in range(5)]  # 13 tokens each
    kept = TokenLimiter(30).process(messages)
    assert [m.content for m in kept] == [messages[3].content, messages[4].content]
    assert TokenLimiter(1000).process(messages) == messages


def test_token_limiter_keeps_newest_even_if_too_big():
    messages = [msg("short"), msg("y" * 400)]
    assert TokenLimiter(10).process(messages) == [messages[1]]
    assert TokenLimiter(10).process([]) == []


def test_token_limiter_never_leaves_an_orphan_tool_result():
    call = msg("calling weather " + "z" * 60, "assistant", "tool-call", tool_call_id="c1", tool_name="weather",
               args={"city": "Paris"})
    result = msg("20 degrees", "tool", "tool-result", tool_call_id="c1", tool_name="weather", result={"t": 20})
    answer = msg("It is 20 degrees in Paris.", "assistant")
    # Room for the result and the answer but not the call: the result must go too.
    limit = estimate_tokens(result) + estimate_tokens(answer) + 1
    assert TokenLimiter(limit).process([call, result, answer]) == [answer]


def test_token_limiter_rejects_bad_limits():
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError):
            TokenLimiter(bad)  # type: ignore[arg-type]


def test_tool_call_filter_all_or_named():
    weather_call = msg("", "assistant", "tool-call", tool_call_id="a", tool_name="weather", args={})
    weather_result = msg("sunny", "tool", "tool-result", tool_call_id="a", tool_name="weather", result="sunny")
    clock_call = msg("", "assistant", "tool-call", tool_call_id="b", tool_name="clock", args={})
    clock_result = msg("noon", "tool", "tool-result", tool_call_id="b", tool_name="clock", result="12:00")
    text = msg("hi")
    history = [text, weather_call, weather_result, clock_call, clock_result]
    assert ToolCallFilter().process(history) == [text]
    assert ToolCallFilter(exclude=["weather"]).process(history) == [text, clock_call, clock_result]
    assert ToolCallFilter(exclude=[]).process(history) == history
