"""Properties of the OpenAI Realtime codec and conversation mapper over hostile input, in both dialects.

A client frame always becomes a client event or one ``error`` with a documented code; the mapper turns any
sequence of them into actions without raising, and every server event it sends encodes as JSON; a session
rendered by the server is accepted back unchanged; items survive a parse / render / parse round trip.
"""

import dataclasses
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from fuzz_strategies import FUZZ, MAX_MESSAGE_CHARS, PER_MESSAGE, json_values, one_field_changed
from hypothesis import given
from hypothesis import strategies as st

from voiceserver.gateway import realtime_codec as codec
from voiceserver.gateway.realtime_items import Identity
from voiceserver.gateway.realtime_shapes import (
    PCM24,
    PCMA,
    PCMU,
    FunctionTool,
    RealtimeSettings,
    ShapeError,
    TurnDetection,
    apply_session,
    parse_item,
    render_item,
    render_session,
)
from voiceserver.gateway.realtime_state import RealtimeConversation, RealtimeLimits, Send
from voiceserver.testing import fuzz

CODES = {"invalid_json", "invalid_event", "unknown_event", "invalid_base64", "invalid_audio_format",
         "missing_required_parameter", "invalid_type", "invalid_value", "unknown_parameter",
         "string_above_max_length", "array_above_max_length", "item_not_found", "duplicate_item_id",
         "conversation_already_has_active_response", "response_cancel_not_active",
         "input_audio_buffer_commit_empty", "input_audio_buffer_full"}
LIMITS = RealtimeLimits(max_items=20, max_buffer_ms=2000)
DIALECTS = st.sampled_from(["ga", "beta"])


def mapper(dialect) -> RealtimeConversation:
    return RealtimeConversation(dialect=dialect, settings=RealtimeSettings(), limits=LIMITS, session_id="sess_f",
                                identity=Identity("fuzz-caller", "fuzz-thread", "Assistant"))


def check_actions(actions, dialect):
    for action in actions:
        if isinstance(action, Send):
            event = action.event
            if event["type"] == "error":
                assert event["error"]["code"] in CODES, event
                assert len(event["error"]["message"]) <= MAX_MESSAGE_CHARS, event
            text = codec.encode(event, dialect)
            assert text is None or json.loads(text)["type"]


def feed(m: RealtimeConversation, text, dialect):
    event = codec.decode_client(text, dialect, LIMITS)
    if isinstance(event, codec.ClientError):
        assert event.code in CODES and len(event.message) <= MAX_MESSAGE_CHARS, event
    else:
        assert isinstance(event, codec.ClientEvent)
    actions = m.on_client(event, 0.0)
    check_actions(actions, dialect)
    return actions


@FUZZ
@given(st.randoms(use_true_random=False), DIALECTS)
def test_a_connection_of_mutated_events_never_raises(rnd: random.Random, dialect):
    m = mapper(dialect)
    for _ in range(6):
        feed(m, fuzz.fuzz_text(rnd, fuzz.REALTIME), dialect)


@pytest.mark.parametrize("valid", fuzz.REALTIME, ids=lambda e: e["type"])
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_each_event_with_a_changed_field_never_raises(valid, dialect):
    @PER_MESSAGE
    @given(one_field_changed(valid))
    def run(event):
        feed(mapper(dialect), json.dumps(event), dialect)

    run()


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300), DIALECTS)
def test_any_frame_never_raises(frame, dialect):
    feed(mapper(dialect), frame, dialect)


@FUZZ
@given(json_values, DIALECTS)
def test_any_session_value_is_applied_or_refused_with_a_shape_error(session, dialect):
    try:
        apply_session(RealtimeSettings(), session, dialect, LIMITS)
    except ShapeError as exc:
        assert exc.code in CODES and len(str(exc)) <= MAX_MESSAGE_CHARS


# --- round trips ---------------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
settings_values = st.builds(
    RealtimeSettings,
    model=st.text(max_size=128), instructions=st.text(max_size=200), voice=st.text(min_size=1, max_size=40)
    .filter(str.strip), speed=st.floats(0.25, 4.0), audio_output=st.booleans(),
    input_format=st.sampled_from([PCM24, PCMU, PCMA]), output_format=st.sampled_from([PCM24, PCMU, PCMA]),
    turn_detection=st.none() | st.builds(TurnDetection, type=st.just("server_vad"), threshold=st.floats(0, 1),
                                         prefix_padding_ms=st.integers(0, 2000),
                                         silence_duration_ms=st.integers(100, 5000), create_response=st.booleans(),
                                         interrupt_response=st.booleans()),
    tools=st.lists(st.builds(FunctionTool, name=names, description=st.text(max_size=100),
                             parameters=st.just({"type": "object", "properties": {}})),
                   max_size=3, unique_by=lambda t: t.name),
    tool_choice=st.sampled_from(["auto", "none", "required"]),
    max_output_tokens=st.none() | st.integers(1, 4096), temperature=st.floats(0, 2))


@FUZZ
@given(settings_values, DIALECTS)
def test_a_rendered_session_is_accepted_back_unchanged(settings, dialect):
    rendered = render_session(settings, dialect, "sess_f")
    again = apply_session(RealtimeSettings(), rendered, dialect, LIMITS)
    fields = {f.name for f in dataclasses.fields(RealtimeSettings)} - {"transcription", "noise_reduction"}
    if dialect == "ga":
        fields -= {"temperature"}  # a GA session has no temperature
    for name in sorted(fields):
        assert getattr(again, name) == getattr(settings, name), name


text_parts = st.builds(lambda t: {"type": "input_text", "text": t}, st.text(max_size=100))
items = st.one_of(
    st.builds(lambda parts: {"type": "message", "role": "user", "content": parts},
              st.lists(text_parts, min_size=1, max_size=3)),
    st.builds(lambda t: {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t}]},
              st.text(max_size=100)),
    st.builds(lambda name, args: {"type": "function_call", "name": name, "arguments": args, "call_id": "call_1"},
              names, st.text(max_size=100)),
    st.builds(lambda out: {"type": "function_call_output", "call_id": "call_1", "output": out}, st.text(max_size=100)))


@FUZZ
@given(items, DIALECTS)
def test_items_survive_parse_render_parse(item, dialect):
    first = parse_item(item, dialect, LIMITS)
    second = parse_item(render_item(first, dialect), dialect, LIMITS)
    assert second == first


# --- found by the properties above ------------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    # an unhashable value where the codec looked a name up in a dict: TypeError out of the receive loop
    '{"type":"conversation.item.create","item":{"type":"message","role":["user"],"content":[]}}',
    '{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":{}}]}}',
    '{"type":"session.update","session":{"audio":{"input":{"format":{"type":["audio/pcm"]}}}}}',
    '{"type":"session.update","session":{"input_audio_format":["pcm16"]}}',
    '{"type":"session.update","session":{"turn_detection":{"type":"semantic_vad","eagerness":[]}}}',
    '{"type":"response.create","response":{"output_audio_format":{"a":1}}}',
    '{"type":"response.create","response":{"conversation":[]}}',
    # a number json refuses to read (over 4300 digits) raised ValueError past the JSONDecodeError handler
    '{"type":"response.cancel","event_id":' + "9" * 5000 + "}",
])
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_found_by_fuzzing(frame, dialect):
    actions = feed(mapper(dialect), frame, dialect)
    errors = [a.event for a in actions if isinstance(a, Send) and a.event["type"] == "error"]
    assert errors and errors[0]["error"]["code"] in CODES


def test_found_by_fuzzing_a_zero_temperature_is_reported_as_zero():
    """The beta session rendered ``temperature or 0.8``: a session set to 0 said 0.8."""
    settings = apply_session(RealtimeSettings(), {"temperature": 0}, "beta", LIMITS)
    assert render_session(settings, "beta", "sess_f")["temperature"] == 0


@pytest.mark.parametrize("session", [{"input_audio_format": "x" * 100_000}, {"x" * 100_000: 1},
                                     {"voice": "alloy", "speed": "9" * 100_000}])
def test_found_by_fuzzing_errors_do_not_echo_a_huge_value(session):
    with pytest.raises(ShapeError) as caught:
        apply_session(RealtimeSettings(), session, "beta", LIMITS)
    assert len(str(caught.value)) <= 300 and (caught.value.param is None or len(caught.value.param) <= 120)
