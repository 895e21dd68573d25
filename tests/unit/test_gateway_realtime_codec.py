"""The Realtime codec on values (no socket): client events of both dialects decoded or refused with an OpenAI-shaped
error, session settings parsed and rendered in GA and beta shape, items and response parameters, server event names
per dialect."""

from __future__ import annotations

import base64
import json

import pytest

from voiceserver.audio.format import AudioFormat
from voiceserver.gateway import realtime_codec as codec
from voiceserver.gateway.realtime_shapes import (
    Limits,
    RealtimeSettings,
    ShapeError,
    apply_session,
    item_text,
    parse_item,
    parse_response,
    render_item,
    render_session,
)

LIMITS = Limits(max_tools=2, max_instructions_chars=50, max_text_chars=100)


def decode(message, dialect="ga"):
    return codec.decode_client(json.dumps(message) if not isinstance(message, str) else message, dialect, LIMITS)


def test_every_client_event_decodes():
    audio = base64.b64encode(b"\x01\x02\x03\x04").decode()
    assert decode({"type": "input_audio_buffer.append", "audio": audio, "event_id": "e1"}) == \
        codec.AudioAppend("e1", b"\x01\x02\x03\x04")
    assert decode({"type": "input_audio_buffer.commit"}) == codec.AudioCommit(None)
    assert decode({"type": "input_audio_buffer.clear"}) == codec.AudioClear(None)
    assert decode({"type": "session.update", "session": {"instructions": "x"}}).session == {"instructions": "x"}
    created = decode({"type": "conversation.item.create", "previous_item_id": "root", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    assert created.previous_item_id == "root" and created.item["content"] == [{"type": "input_text", "text": "hi"}]
    assert decode({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
                   "audio_end_ms": 1500}) == codec.ItemTruncate(None, "item_1", 0, 1500)
    assert decode({"type": "conversation.item.delete", "item_id": "item_1"}) == codec.ItemDelete(None, "item_1")
    assert decode({"type": "conversation.item.retrieve", "item_id": "item_1"}) == codec.ItemRetrieve(None, "item_1")
    assert decode({"type": "response.cancel", "response_id": "resp_1"}) == codec.ResponseCancel(None, "resp_1")
    assert decode({"type": "output_audio_buffer.clear"}) == codec.OutputAudioClear(None)
    response = decode({"type": "response.create", "response": {"conversation": "none", "instructions": "Short.",
                                                               "output_modalities": ["text"]}}).params
    assert response.out_of_band and response.instructions == "Short." and response.audio_output is False


@pytest.mark.parametrize(("message", "code", "param"), [
    ("{not json", "invalid_json", None),
    ("[1, 2]", "invalid_event", "type"),
    ({"type": 5}, "invalid_event", "type"),
    ({"type": "response.dance"}, "unknown_event", "type"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "%%%"}, "invalid_base64", "audio"),
    ({"type": "input_audio_buffer.append", "audio": 7}, "invalid_type", "audio"),
    ({"type": "session.update"}, "missing_required_parameter", "session"),
    ({"type": "conversation.item.truncate", "audio_end_ms": 5}, "missing_required_parameter", "item_id"),
    ({"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": -1}, "invalid_value", "audio_end_ms"),
    ({"type": "conversation.item.create"}, "missing_required_parameter", "item"),
    ({"type": "conversation.item.create", "item": {"type": "image"}}, "invalid_value", "item.type"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "output": "x"}},
     "missing_required_parameter", "item.call_id"),
    ({"type": "response.create", "response": {"conversation": "other"}}, "invalid_value", "response.conversation"),
    ({"type": "response.create", "response": {"max_output_tokens": 0}}, "invalid_value",
     "response.max_output_tokens"),
])
def test_bad_client_events_become_one_error(message, code, param):
    error = decode(message)
    assert isinstance(error, codec.ClientError) and (error.code, error.param) == (code, param)
    event = codec.error_event(error.code, error.message, param=error.param, event_id="client-1")
    assert event == {"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                "message": error.message, "param": param, "event_id": "client-1"}}


def test_unknown_event_lists_the_supported_ones_and_keeps_the_client_event_id():
    error = decode({"type": "session.destroy", "event_id": "mine"})
    assert error.event_id == "mine" and "'session.update'" in error.message and "'response.create'" in error.message


def test_ga_session_update_parses_audio_turn_detection_tools_and_limits():
    settings = apply_session(RealtimeSettings(), {
        "type": "realtime", "instructions": "Be kind.", "output_modalities": ["text"], "max_output_tokens": 200,
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "semantic_vad", "eagerness": "high",
                                               "create_response": False}},
                  "output": {"format": {"type": "audio/pcma"}, "voice": "marin", "speed": 1.2}},
        "tools": [{"type": "function", "name": "lookup", "description": "Look up.", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "lookup"}}, "ga", LIMITS)
    assert settings.input_format == AudioFormat("mulaw", 8000) and settings.output_format == AudioFormat("alaw", 8000)
    assert settings.audio_output is False and settings.max_output_tokens == 200 and settings.voice == "marin"
    turn = settings.turn_detection
    assert (turn.type, turn.eagerness, turn.create_response, turn.interrupt_response) == \
        ("semantic_vad", "high", False, True)
    assert settings.tools[0].name == "lookup" and settings.tool_choice == "lookup"
    assert apply_session(settings, {"audio": {"input": {"turn_detection": None}}, "max_output_tokens": "inf"}, "ga",
                         LIMITS).turn_detection is None
    rendered = render_session(settings, "ga", "sess_1")
    assert rendered["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert rendered["audio"]["output"]["format"] == {"type": "audio/pcma"}
    assert rendered["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "high",
                                                           "create_response": False, "interrupt_response": True}
    assert rendered["tool_choice"] == "lookup" and rendered["output_modalities"] == ["text"]


def test_beta_session_update_uses_the_flat_names():
    settings = apply_session(RealtimeSettings(), {
        "modalities": ["text"], "voice": "verse", "input_audio_format": "g711_alaw", "output_audio_format": "pcm16",
        "input_audio_transcription": None, "temperature": 0.7, "max_response_output_tokens": 99,
        "turn_detection": {"type": "server_vad", "threshold": 0.9, "silence_duration_ms": 300}}, "beta", LIMITS)
    assert settings.input_format == AudioFormat("alaw", 8000) and settings.output_format == AudioFormat("pcm16", 24000)
    assert settings.audio_output is False and settings.temperature == 0.7 and settings.max_output_tokens == 99
    rendered = render_session(settings, "beta", "sess_2")
    assert rendered["input_audio_format"] == "g711_alaw" and rendered["modalities"] == ["text"]
    assert rendered["turn_detection"]["threshold"] == 0.9 and "idle_timeout_ms" not in rendered["turn_detection"]
    assert rendered["max_response_output_tokens"] == 99 and rendered["voice"] == "verse"


@pytest.mark.parametrize(("session", "dialect", "param", "code"), [
    ({"audio": {"input": {"format": {"type": "audio/opus"}}}}, "ga", "session.audio.input.format.type",
     "invalid_audio_format"),
    ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "ga",
     "session.audio.output.format.rate", "invalid_audio_format"),
    ({"input_audio_format": "mp3"}, "beta", "session.input_audio_format", "invalid_audio_format"),
    ({"type": "transcription"}, "ga", "session.type", "invalid_value"),
    ({"colour": "blue"}, "ga", "session.colour", "unknown_parameter"),
    ({"instructions": "x" * 51}, "ga", "session.instructions", "string_above_max_length"),
    ({"tools": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "ga", "session.tools", "array_above_max_length"),
    ({"tools": [{"name": "bad name"}]}, "ga", "session.tools[0].name", "invalid_value"),
    ({"tools": [{"name": "a"}, {"name": "a"}]}, "ga", "session.tools[1].name", "invalid_value"),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "ga", "session.tools[0].type", "invalid_value"),
    ({"tool_choice": {"type": "mcp"}}, "ga", "session.tool_choice", "invalid_value"),
    ({"tool_choice": {"type": "function", "name": "undeclared"}}, "ga", "session.tool_choice", "invalid_value"),
    ({"turn_detection": {"threshold": 2}}, "beta", "session.turn_detection.threshold", "invalid_value"),
    ({"turn_detection": {"silence_duration_ms": 50}}, "beta", "session.turn_detection.silence_duration_ms",
     "invalid_value"),
    ({"modalities": []}, "beta", "session.modalities", "invalid_value"),
])
def test_bad_session_values_name_the_field(session, dialect, param, code):
    with pytest.raises(ShapeError) as caught:
        apply_session(RealtimeSettings(), session, dialect, LIMITS)
    assert (caught.value.param, caught.value.code) == (param, code)


def test_items_in_both_dialects():
    audio = base64.b64encode(b"\x00\x01" * 10).decode()
    user = parse_item({"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "look"}, {"type": "input_audio", "audio": audio}]}, "ga", LIMITS)
    assert user["content"][1]["_audio"] == b"\x00\x01" * 10 and user["content"][1]["transcript"] is None
    assert "_audio" not in render_item(user, "ga")["content"][1]
    assistant = parse_item({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                           "beta", LIMITS)
    assert assistant["content"] == [{"type": "output_text", "text": "ok"}]
    assert render_item(assistant, "beta")["content"][0]["type"] == "text"
    assert render_item(assistant, "ga")["content"][0]["type"] == "output_text"
    assert item_text(assistant) == "ok" and item_text(user) == "look"
    call = parse_item({"type": "function_call", "name": "f", "call_id": "c1", "arguments": "{}"}, "ga", LIMITS)
    output = parse_item({"type": "function_call_output", "call_id": "c1", "output": "42"}, "ga", LIMITS)
    assert (call["call_id"], output["output"], item_text(output)) == ("c1", "42", "42")
    with pytest.raises(ShapeError, match="input_audio"):
        parse_item({"type": "message", "role": "system", "content": [{"type": "input_audio", "audio": audio}]},
                   "ga", LIMITS)
    with pytest.raises(ShapeError) as caught:
        parse_item({"type": "message", "role": "user", "content": [{"type": "input_audio"}]}, "ga", LIMITS)
    assert caught.value.code == "missing_required_parameter"


def test_response_parameters_in_both_dialects():
    ga = parse_response({"audio": {"output": {"voice": {"id": "cedar"}, "format": {"type": "audio/pcmu"}}},
                         "tools": [], "tool_choice": "none", "metadata": {"k": "v"},
                         "input": [{"type": "item_reference", "id": "item_1"},
                                   {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                   "text": "alone"}]}]},
                        "ga", LIMITS)
    assert ga.voice == "cedar" and ga.output_format == AudioFormat("mulaw", 8000) and ga.tools == []
    assert ga.tool_choice == "none" and ga.metadata == {"k": "v"} and ga.input[0]["type"] == "item_reference"
    beta = parse_response({"modalities": ["text", "audio"], "voice": "ash", "output_audio_format": "g711_ulaw",
                           "max_response_output_tokens": "inf", "temperature": 0.6}, "beta", LIMITS)
    assert beta.audio_output is True and beta.max_output_tokens is None and beta.temperature == 0.6


def test_server_events_are_renamed_for_beta():
    delta = {"type": "response.output_audio.delta", "delta": "AAAA"}
    ga = json.loads(codec.encode(delta, "ga"))
    beta = json.loads(codec.encode(delta, "beta"))
    assert ga["type"] == "response.output_audio.delta" and beta["type"] == "response.audio.delta"
    assert ga["event_id"].startswith("event_") and ga["event_id"] != beta["event_id"]
    assert json.loads(codec.encode({"type": "response.output_text.delta"}, "beta"))["type"] == "response.text.delta"
    assert json.loads(codec.encode({"type": "response.output_audio_transcript.done"}, "beta"))["type"] == \
        "response.audio_transcript.done"
    assert json.loads(codec.encode({"type": "conversation.item.added"}, "beta"))["type"] == \
        "conversation.item.created"
    assert codec.encode({"type": "conversation.item.done"}, "beta") is None
    assert json.loads(codec.encode({"type": "conversation.item.done"}, "ga"))["type"] == "conversation.item.done"
