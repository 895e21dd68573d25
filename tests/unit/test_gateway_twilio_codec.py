"""The Twilio Media Streams codec on strings: Twilio's documented messages in, ours out, and the bad-input table."""

import base64
import json

import pytest

from voiceserver.gateway.telephony import (
    StreamAudio,
    StreamBadInput,
    StreamConnected,
    StreamDtmf,
    StreamMark,
    StreamStart,
    StreamStop,
)
from voiceserver.gateway.twilio_codec import TwilioCodec

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
START = {"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": {
    "accountSid": "AC" + "0" * 32, "streamSid": SID, "callSid": "CA" + "1" * 32, "tracks": ["inbound"],
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    "customParameters": {"resource": "tel:15551230001", "token": "abc"}}}


def started() -> TwilioCodec:
    codec = TwilioCodec()
    assert isinstance(codec.decode(json.dumps(START)), StreamStart)
    return codec


def media(payload: str, track: str = "inbound") -> str:
    return json.dumps({"event": "media", "sequenceNumber": "3", "streamSid": SID,
                       "media": {"track": track, "chunk": "1", "timestamp": "5", "payload": payload}})


def test_documented_messages_decode():
    codec = TwilioCodec()
    connected = codec.decode('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
    assert connected == StreamConnected("Call", "1.0.0")
    start = codec.decode(json.dumps(START))
    assert start == StreamStart(stream_id=SID, call_id="CA" + "1" * 32, account_id="AC" + "0" * 32,
                                parameters={"resource": "tel:15551230001", "token": "abc"}, tracks=("inbound",))
    assert codec.stream_sid == SID
    audio = bytes(range(160))
    assert codec.decode(media(base64.b64encode(audio).decode())) == StreamAudio(audio, 5)
    dtmf = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}
    assert codec.decode(json.dumps(dtmf)) == StreamDtmf("1")
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}}
    assert codec.decode(json.dumps(mark)) == StreamMark("my label")
    stop = {"event": "stop", "sequenceNumber": "5", "streamSid": SID,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": "CA" + "1" * 32}}
    assert codec.decode(json.dumps(stop)) == StreamStop()


def test_numbers_may_be_strings_and_parameters_keep_strings_only():
    message = json.loads(json.dumps(START))
    message["start"]["mediaFormat"] = {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "1"}
    message["start"]["customParameters"] = {"a": "1", "b": 2, "c": None}
    start = TwilioCodec().decode(json.dumps(message))
    assert isinstance(start, StreamStart) and start.parameters == {"a": "1"}


def test_outbound_track_and_empty_payload_need_nothing():
    codec = started()
    assert codec.decode(media(base64.b64encode(b"\xff" * 160).decode(), track="outbound")) is None
    assert codec.decode(media("")) is None


BAD = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('{"no": "event"}', "unknown_event"),
    ('{"event": "bogus"}', "unknown_event"),
    ('{"event": 7}', "unknown_event"),
    ('{"event": "media", "media": {}}', "invalid_message"),
    ('{"event": "media", "media": {"payload": "%%%not base64%%%"}}', "invalid_audio"),
    ('{"event": "media", "media": {"payload": "abc"}}', "invalid_audio"),
    ('{"event": "dtmf", "dtmf": {"digit": "12"}}', "invalid_message"),
    ('{"event": "dtmf"}', "invalid_message"),
    ('{"event": "mark", "mark": {}}', "invalid_message"),
    (json.dumps(START), "duplicate_start"),
]


@pytest.mark.parametrize(("text", "code"), BAD)
def test_bad_input_has_a_code_and_a_message(text, code):
    event = started().decode(text)
    assert isinstance(event, StreamBadInput) and event.code == code and event.message
    assert not event.fatal


def test_before_start():
    codec = TwilioCodec()
    assert codec.decode(media(base64.b64encode(b"\xff").decode())).code == "media_before_start"
    assert codec.decode('{"event": "dtmf", "dtmf": {"digit": "1"}}').code == "event_before_start"
    assert codec.decode('{"event": "stop"}').code == "event_before_start"
    missing = {"event": "start", "start": {"streamSid": SID}}
    assert codec.decode(json.dumps(missing)).code == "invalid_message"
    assert not codec.started, "a bad start does not start the stream"


def test_other_media_formats_are_fatal():
    message = json.loads(json.dumps(START))
    message["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
    bad = TwilioCodec().decode(json.dumps(message))
    assert bad.code == "unsupported_media_format" and bad.fatal


def test_binary_frames_are_refused():
    bad = started().decode_binary(b"\x00" * 10)
    assert bad.code == "binary_frame" and "text" in bad.message


def test_outbound_messages():
    codec = started()
    audio = bytes(range(160))
    assert json.loads(codec.encode_audio(audio)) == {
        "event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(audio).decode()}}
    assert json.loads(codec.encode_mark("t:0:1")) == {"event": "mark", "streamSid": SID, "mark": {"name": "t:0:1"}}
    assert json.loads(codec.encode_clear()) == {"event": "clear", "streamSid": SID}
