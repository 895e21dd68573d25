"""Properties of the native codec and the WebRTC signalling / data channel codec over hostile input.

Decoding never raises: every frame becomes an inbound event or an InvalidInput / SignallingError with a documented
code and a short message; what a valid message carries survives decoding; encoded events are JSON objects with a
type. Inputs come from voiceserver.testing.fuzz (valid messages mutated) and from Hypothesis' own strategies.
"""

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from fuzz_strategies import FUZZ, MAX_MESSAGE_CHARS, PER_MESSAGE, json_values, one_field_changed, scalars
from hypothesis import given
from hypothesis import strategies as st

from voiceserver.gateway.native_codec import MAX_PLAYED_MS, decode_text, encode_event, initial_config
from voiceserver.gateway.webrtc_codec import (
    OfferRequest,
    SignallingError,
    check_offer_sdp,
    decode_channel_message,
    parse_offer,
)
from voiceserver.session.events import (
    InboundEvent,
    InvalidInput,
    SessionConfig,
    StartSession,
)
from voiceserver.testing import fuzz

NATIVE_CODES = {"invalid_json", "invalid_message", "unknown_type", "invalid_audio_format", "invalid_id",
                "text_too_long"}


def check_inbound(result, codes=NATIVE_CODES):
    if isinstance(result, InvalidInput):
        assert result.code in codes, result
        assert result.message and len(result.message) <= MAX_MESSAGE_CHARS, result
    else:
        assert isinstance(result, InboundEvent), result


@FUZZ
@given(st.randoms(use_true_random=False))
def test_native_decode_of_mutated_messages_never_raises(rnd: random.Random):
    check_inbound(decode_text(fuzz.fuzz_text(rnd, fuzz.NATIVE), max_text_chars=4000))


def variants(message):
    """``message`` with each field keeping its value, getting any JSON value, or missing."""
    optional = {k: st.just(v) | scalars | json_values for k, v in message.items() if k != "type"}
    return st.fixed_dictionaries({"type": st.just(message["type"])}, optional=optional)


@pytest.mark.parametrize("valid", fuzz.NATIVE, ids=lambda m: m["type"])
def test_native_decode_of_changed_fields_never_raises(valid):
    @PER_MESSAGE
    @given(one_field_changed(valid) | variants(valid))
    def check(message):
        check_inbound(decode_text(json.dumps(message)))

    check()


@FUZZ
@given(st.text(max_size=300))
def test_native_decode_of_any_text_never_raises(text):
    check_inbound(decode_text(text))


@FUZZ
@given(st.dictionaries(st.sampled_from(["resource", "thread", "api_key", "x"]), st.text(max_size=200), max_size=4))
def test_url_query_gives_a_config_or_invalid_id(query):
    result = initial_config(query)
    assert isinstance(result, SessionConfig) or (isinstance(result, InvalidInput) and result.code == "invalid_id")


@pytest.mark.parametrize("frame,code", [
    # found by the properties above: int() of a non-finite number raised out of the decoder and ended the socket
    ('{"type":"response.played","turn_id":"t","played_ms":Infinity}', "invalid_message"),
    ('{"type":"response.played","turn_id":"t","played_ms":NaN}', "invalid_message"),
    ('{"type":"response.played","turn_id":"t","played_ms":1e400}', "invalid_message"),
    # a number json refuses to read (over 4300 digits) raised ValueError past the JSONDecodeError handler
    ('{"type":"ping","id":' + "9" * 5000 + "}", "invalid_json"),
    # and an error message that echoed a 4000-character encoding back in full
    ('{"type":"session.start","audio":{"encoding":"' + "pcm16" * 800 + '"}}', "invalid_audio_format"),
])
def test_found_by_fuzzing(frame, code):
    result = decode_text(frame)
    assert isinstance(result, InvalidInput) and result.code == code
    assert len(result.message) <= 200


# --- what valid messages carry survives decoding ------------------------------------------------------------------

@FUZZ
@given(st.text(min_size=1, max_size=4000))
def test_input_text_round_trip(text):
    assert decode_text(json.dumps({"type": "input.text", "text": text})).text == text


@FUZZ
@given(st.text(max_size=50), st.integers(0, MAX_PLAYED_MS) | st.floats(min_value=0, max_value=MAX_PLAYED_MS))
def test_response_played_round_trip(turn_id, played):
    event = decode_text(json.dumps({"type": "response.played", "turn_id": turn_id, "played_ms": played}))
    assert (event.turn_id, event.played_ms) == (turn_id, int(played))


@FUZZ
@given(st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True).filter(lambda s: ".." not in s),
       st.sampled_from([("pcm16", 8000), ("pcm16", 16000), ("pcm16", 24000), ("pcm16", 48000), ("mulaw", 8000)]),
       st.integers(0, 3), st.integers(100, 5000))
def test_session_start_round_trip(ident, audio, aggressiveness, silence_ms):
    encoding, rate = audio
    event = decode_text(json.dumps({"type": "session.start", "resource": ident, "thread": ident,
                                    "audio": {"encoding": encoding, "sample_rate": rate},
                                    "vad": {"aggressiveness": aggressiveness, "silence_ms": silence_ms}}))
    assert isinstance(event, StartSession)
    config = event.config
    assert (config.resource, config.thread, config.input_format.encoding, config.input_format.sample_rate,
            config.vad_aggressiveness, config.vad_silence_ms) == (ident, ident, encoding, rate, aggressiveness,
                                                                  silence_ms)


@FUZZ
@given(st.text(max_size=500), st.text(max_size=30))
def test_encoded_events_are_json_with_their_text(text, turn_id):
    from voiceserver.session.events import ErrorEvent, ResponseDone, ResponseTextDelta, Transcript

    for event, field, value in [(ResponseTextDelta(turn_id, text), "delta", text),
                                (Transcript(turn_id, text), "text", text),
                                (ResponseDone(turn_id, text, False), "text", text),
                                (ErrorEvent("internal_error", text), "message", text)]:
        body = json.loads(encode_event(event))
        assert isinstance(body["type"], str) and body[field] == value


# --- WebRTC signalling and the events channel -----------------------------------------------------------------

OFFER_CODES = {"invalid_offer", "invalid_id", "invalid_sdp", "body_too_large"}


def check_offer(result):
    if isinstance(result, SignallingError):
        assert result.status in (400, 413) and result.code in OFFER_CODES, result
        assert result.message and len(result.message) <= MAX_MESSAGE_CHARS
        assert json.dumps(result.body())
    else:
        assert isinstance(result, OfferRequest) and result.sdp.strip()


@FUZZ
@given(st.randoms(use_true_random=False))
def test_offer_body_mutations_never_raise(rnd: random.Random):
    body = fuzz.fuzz_text(rnd, [fuzz.OFFER_BODY]).encode("utf-8", "surrogatepass")
    check_offer(parse_offer(body, max_bytes=65536))


@FUZZ
@given(st.binary(max_size=2000))
def test_offer_body_of_any_bytes_never_raises(body):
    check_offer(parse_offer(body, max_bytes=1000))


@FUZZ
@given(st.randoms(use_true_random=False))
def test_offer_sdp_mutations_are_checked_without_raising(rnd: random.Random):
    lines = fuzz.OFFER_SDP.split("\r\n")
    for _ in range(rnd.randint(1, 4)):
        at = rnd.randrange(len(lines))
        lines[at] = rnd.choice([fuzz.random_string(rnd), "", lines[at][: len(lines[at]) // 2],
                                "m=video 9 UDP/TLS/RTP/SAVPF 96", lines[rnd.randrange(len(lines))]])
    problem = check_offer_sdp(rnd.choice(["\r\n", "\n", "\r"]).join(lines))
    assert problem is None or (isinstance(problem, str) and len(problem) <= MAX_MESSAGE_CHARS)


def test_found_by_fuzzing_an_offer_with_a_number_json_refuses():
    result = parse_offer(b'{"type":"offer","sdp":"v=0","vad":{"silence_ms":' + b"9" * 5000 + b"}}", max_bytes=65536)
    assert isinstance(result, SignallingError) and result.code == "invalid_offer"


def test_the_corpus_offer_is_accepted():
    """The fuzzers start from a valid offer: a mutation is a step away from one that works."""
    parsed = parse_offer(json.dumps(fuzz.OFFER_BODY).encode(), max_bytes=65536)
    assert isinstance(parsed, OfferRequest) and parsed.config.resource == "fuzz-caller"


@FUZZ
@given(st.randoms(use_true_random=False), st.booleans())
def test_channel_messages_never_raise(rnd: random.Random, binary):
    data = fuzz.random_bytes(rnd) if binary else fuzz.fuzz_text(rnd, fuzz.WEBRTC_CHANNEL)
    result = decode_channel_message(data, max_text_chars=4000, max_message_bytes=65536)
    check_inbound(result, NATIVE_CODES | {"frame_too_large"})
    assert type(result).__name__ not in ("ResponsePlayed", "InputAudio")  # the track's, never the channel's
