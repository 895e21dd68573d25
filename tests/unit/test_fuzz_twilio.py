"""Properties of the Twilio Media Streams codec over hostile input: decoding never raises, a bad message is a
StreamBadInput with a documented code, and what the server encodes decodes back to the same audio and marks."""

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from fuzz_strategies import FUZZ, MAX_MESSAGE_CHARS, PER_MESSAGE, one_field_changed
from hypothesis import given
from hypothesis import strategies as st

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
from voiceserver.testing import fuzz

CODES = {"invalid_json", "invalid_message", "unknown_event", "media_before_start", "event_before_start",
         "duplicate_start", "invalid_audio", "unsupported_media_format", "binary_frame"}
EVENTS = (StreamConnected, StreamStart, StreamAudio, StreamDtmf, StreamMark, StreamStop)
START = json.dumps(fuzz.TWILIO[1])


def check(result):
    if isinstance(result, StreamBadInput):
        assert result.code in CODES, result
        assert result.message and len(result.message) <= MAX_MESSAGE_CHARS, result
    else:
        assert result is None or isinstance(result, EVENTS), result


def started() -> TwilioCodec:
    codec = TwilioCodec()
    assert isinstance(codec.decode(START), StreamStart)
    return codec


@FUZZ
@given(st.randoms(use_true_random=False), st.booleans())
def test_a_stream_of_mutated_messages_never_raises(rnd: random.Random, start_first):
    codec = started() if start_first else TwilioCodec()
    for _ in range(8):
        check(codec.decode(fuzz.fuzz_text(rnd, fuzz.TWILIO)))
    check(codec.decode_binary(fuzz.random_bytes(rnd)))


@pytest.mark.parametrize("valid", fuzz.TWILIO, ids=lambda m: m["event"])
def test_each_message_with_a_changed_field_never_raises(valid):
    @PER_MESSAGE
    @given(one_field_changed(valid, keep=("event",)), st.booleans())
    def run(message, start_first):
        codec = started() if start_first and valid["event"] != "start" else TwilioCodec()
        check(codec.decode(json.dumps(message)))

    run()


@FUZZ
@given(st.text(max_size=300))
def test_any_text_never_raises(text):
    check(started().decode(text))


@FUZZ
@given(st.binary(max_size=2000))
def test_encoded_audio_decodes_to_the_same_bytes(audio):
    codec = started()
    decoded = codec.decode(codec.encode_audio(audio))
    if audio:
        assert isinstance(decoded, StreamAudio) and decoded.audio == audio
    else:
        assert decoded is None  # an empty payload needs nothing


@FUZZ
@given(st.text(min_size=1, max_size=200))
def test_encoded_marks_decode_to_the_same_name(name):
    codec = started()
    assert codec.decode(codec.encode_mark(name)) == StreamMark(name)
    clear = json.loads(codec.encode_clear())
    assert clear == {"event": "clear", "streamSid": "MZfuzz"}


@FUZZ
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40) | st.integers() | st.none(), max_size=6))
def test_start_keeps_only_string_parameters(params):
    message = json.loads(START)
    message["start"]["customParameters"] = params
    event = TwilioCodec().decode(json.dumps(message))
    assert isinstance(event, StreamStart)
    assert event.parameters == {k: v for k, v in params.items() if isinstance(v, str)}


@pytest.mark.parametrize("number", ["\u00b2", "\u0661\u0662", "9" * 5000, " 12 ", "-5", "1e3"])
def test_found_by_fuzzing_numbers_written_as_strings(number):
    """str.isdigit() accepted "²" and 5000-digit strings, which int() refuses: the decoder raised."""
    media = json.loads(json.dumps(fuzz.TWILIO[2]))
    media["media"]["timestamp"] = number
    check(started().decode(json.dumps(media)))
    start = json.loads(START)
    start["start"]["mediaFormat"]["sampleRate"] = number
    result = TwilioCodec().decode(json.dumps(start))
    assert isinstance(result, StreamBadInput) and result.code == "unsupported_media_format"


def test_found_by_fuzzing_a_number_json_refuses():
    result = started().decode('{"event":"media","sequenceNumber":' + "9" * 5000 + "}")
    assert isinstance(result, StreamBadInput) and result.code == "invalid_json"
