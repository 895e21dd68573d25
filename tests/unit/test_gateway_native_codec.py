"""The native protocol codec, bytes and strings only."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceserver.audio.format import AudioChunk, AudioFormat
from voiceserver.gateway.native_codec import ProtocolError, decode_text, encode_event
from voiceserver.session.events import (
    CancelResponse,
    EndSession,
    ErrorEvent,
    InputCommit,
    InputText,
    Ping,
    ResponseAudio,
    ResponseAudioStarted,
    ResponseCancelled,
    ResponseDone,
    ResponsePlayed,
    SessionStarted,
    SpeechStarted,
    StartSession,
    ToolApprovalRequested,
    ToolDecision,
    Transcript,
    TurnMetrics,
)


def test_session_start_defaults():
    event = decode_text('{"type":"session.start"}')
    assert isinstance(event, StartSession)
    cfg = event.config
    assert cfg.input_format == AudioFormat("pcm16", 16000) and cfg.output_format == AudioFormat("pcm16", 16000)
    assert (cfg.vad_aggressiveness, cfg.vad_silence_ms, cfg.vad_prefix_ms, cfg.vad_min_speech_ms) == (2, 500, 300, 200)
    assert cfg.resource is None and cfg.thread is None and cfg.agent is None


def test_session_start_full():
    msg = {"type": "session.start", "resource": "user-123", "thread": "conv-1", "agent": "Helper",
           "audio": {"encoding": "mulaw", "sample_rate": 8000},
           "output_audio": {"encoding": "pcm16", "sample_rate": 48000},
           "vad": {"aggressiveness": 3, "silence_ms": 700, "prefix_ms": 200, "min_speech_ms": 150}}
    cfg = decode_text(json.dumps(msg)).config
    assert cfg.resource == "user-123" and cfg.thread == "conv-1" and cfg.agent == "Helper"
    assert cfg.input_format == AudioFormat("mulaw", 8000) and cfg.output_format == AudioFormat("pcm16", 48000)
    assert (cfg.vad_aggressiveness, cfg.vad_silence_ms, cfg.vad_prefix_ms, cfg.vad_min_speech_ms) == (3, 700, 200, 150)


@pytest.mark.parametrize("audio,code", [
    ({"encoding": "opus", "sample_rate": 48000}, "invalid_audio_format"),
    ({"encoding": "pcm16", "sample_rate": 44100}, "invalid_audio_format"),
    ({"encoding": "mulaw", "sample_rate": 16000}, "invalid_audio_format"),
    ({"encoding": "pcm16", "sample_rate": "16000"}, "invalid_audio_format"),
    ("pcm16", "invalid_audio_format"),
])
def test_session_start_bad_audio(audio, code):
    result = decode_text(json.dumps({"type": "session.start", "audio": audio}))
    assert isinstance(result, ProtocolError) and result.code == code
    assert "allowed" in result.message or "must be" in result.message


@pytest.mark.parametrize("vad", [{"aggressiveness": 4}, {"silence_ms": -1}, {"min_speech_ms": "200"},
                                 {"prefix_ms": True}])
def test_session_start_bad_vad(vad):
    result = decode_text(json.dumps({"type": "session.start", "vad": vad}))
    assert isinstance(result, ProtocolError) and result.code == "invalid_message" and "vad." in result.message


@pytest.mark.parametrize("resource", ["x' OR '1'='1", "../../etc", "", "a" * 200, 5])
def test_session_start_hostile_ids(resource):
    result = decode_text(json.dumps({"type": "session.start", "resource": resource}))
    assert isinstance(result, ProtocolError) and result.code == "invalid_id"


@pytest.mark.parametrize("text,code", [
    ("not json", "invalid_json"), ("[1,2]", "invalid_message"), ('"str"', "invalid_message"),
    ('{"no":"type"}', "unknown_type"), ('{"type":"dance"}', "unknown_type"), ('{"type":5}', "unknown_type"),
    ('{"type":"input.text"}', "invalid_message"), ('{"type":"input.text","text":7}', "invalid_message"),
    ('{"type":"response.played","turn_id":"t"}', "invalid_message"),
    ('{"type":"response.played","turn_id":"t","played_ms":-5}', "invalid_message"),
    ('{"type":"tool.approve"}', "invalid_message"),
    ("[" * 100000, "invalid_json"),
])
def test_bad_messages_are_errors(text, code):
    result = decode_text(text)
    assert isinstance(result, ProtocolError), result
    assert result.code == code and result.message


def test_text_limit():
    assert isinstance(decode_text(json.dumps({"type": "input.text", "text": "hi"}), max_text_chars=5), InputText)
    result = decode_text(json.dumps({"type": "input.text", "text": "x" * 6}), max_text_chars=5)
    assert isinstance(result, ProtocolError) and result.code == "text_too_long" and "5" in result.message


def test_simple_client_messages():
    assert isinstance(decode_text('{"type":"input.commit"}'), InputCommit)
    assert isinstance(decode_text('{"type":"response.cancel"}'), CancelResponse)
    assert isinstance(decode_text('{"type":"session.end"}'), EndSession)
    assert decode_text('{"type":"ping","id":"p1"}') == Ping("p1")
    assert decode_text('{"type":"response.played","turn_id":"t1","played_ms":1234}') == ResponsePlayed("t1", 1234)
    assert decode_text('{"type":"tool.approve","tool_call_id":"c1"}') == ToolDecision("c1", True, None)
    assert decode_text('{"type":"tool.decline","tool_call_id":"c1","reason":"no"}') == ToolDecision("c1", False, "no")


def test_encode_server_messages():
    fmt = AudioFormat("pcm16", 24000)
    started = json.loads(encode_event(SessionStarted("s1", "user-1", "t1", AudioFormat(), fmt, "Assistant")))
    assert started == {"type": "session.started", "session_id": "s1", "resource": "user-1", "thread": "t1",
                       "agent": "Assistant", "audio": {"encoding": "pcm16", "sample_rate": 16000},
                       "output_audio": {"encoding": "pcm16", "sample_rate": 24000}}
    assert json.loads(encode_event(SpeechStarted("t", 120, 420))) == {
        "type": "speech.started", "turn_id": "t", "audio_ms": 120, "confirmed_ms": 420}
    assert json.loads(encode_event(Transcript("t", "hello"))) == {
        "type": "transcript", "turn_id": "t", "role": "user", "text": "hello", "final": True}
    assert json.loads(encode_event(ResponseAudioStarted("t", fmt))) == {
        "type": "response.audio.started", "turn_id": "t", "encoding": "pcm16", "sample_rate": 24000}
    assert encode_event(ResponseAudio("t", AudioChunk(b"\x01\x02", 24000))) == b"\x01\x02"
    assert json.loads(encode_event(ResponseDone("t", "Hi.", False))) == {
        "type": "response.done", "turn_id": "t", "text": "Hi.", "interrupted": False}
    cancelled = json.loads(encode_event(ResponseCancelled("t", "Hello there", "barge_in")))
    assert cancelled["type"] == "response.cancelled" and cancelled["heard_text"] == "Hello there"
    metrics = json.loads(encode_event(TurnMetrics("t", 10.0, 20.0, 30.0, 900.0, {"first_audio_ms": 400.0})))
    assert metrics["type"] == "metrics" and metrics["voice_to_voice_ms"] == 900.0 and metrics["first_audio_ms"] == 400.0
    approval = json.loads(encode_event(ToolApprovalRequested("t", "c1", "book", {"people": 2})))
    assert approval["type"] == "tool.approval" and approval["args"] == {"people": 2}
    error = json.loads(encode_event(ErrorEvent("bad", "worse")))
    assert error == {"type": "error", "code": "bad", "message": "worse"}


@given(st.text(max_size=200))
def test_decode_never_raises(text):
    result = decode_text(text)
    assert result is not None


@given(st.dictionaries(st.sampled_from(["type", "resource", "thread", "audio", "output_audio", "vad", "agent"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=20), st.booleans(),
                                 st.dictionaries(st.text(max_size=12), st.integers(), max_size=3))))
def test_session_start_fuzz_never_raises(fields):
    fields["type"] = "session.start"
    result = decode_text(json.dumps(fields))
    assert isinstance(result, StartSession | ProtocolError)


def test_keypad_and_audio_frames_decode_to_session_events():
    from voiceserver.gateway.native_codec import decode_binary, decode_text, initial_config
    from voiceserver.session.events import InputAudio, InputDtmf, InvalidInput

    assert decode_text('{"type":"input.dtmf","digit":"5"}') == InputDtmf("5")
    bad = decode_text('{"type":"input.dtmf","digit":"55"}')
    assert isinstance(bad, InvalidInput) and bad.code == "invalid_message"
    assert decode_binary(b"\x01\x02", 3.5) == InputAudio(b"\x01\x02", 3.5)
    config = initial_config({"resource": "user-1", "thread": "t-1"})
    assert (config.resource, config.thread) == ("user-1", "t-1")
    refused = initial_config({"resource": "../etc"})
    assert isinstance(refused, InvalidInput) and refused.code == "invalid_id"
