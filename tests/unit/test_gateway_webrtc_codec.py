"""The WebRTC gateway's wire formats on values: the signalling body, the offer SDP checks, the events channel."""

import json

import pytest

from voiceserver.audio.format import PCM16_16K, AudioChunk, AudioFormat
from voiceserver.gateway.native_codec import encode_event
from voiceserver.gateway.webrtc_codec import (
    OfferRequest,
    SignallingError,
    answer_body,
    browser_ice_servers,
    check_offer_sdp,
    credential_from,
    decode_channel_message,
    encode_channel_event,
    parse_offer,
)
from voiceserver.session.events import (
    CancelResponse,
    EndSession,
    InputText,
    InvalidInput,
    ResponseAudio,
    ResponseCancelled,
    SessionStarted,
    ToolDecision,
    Transcript,
    TurnMetrics,
)
from voiceserver.settings import Settings, SettingsError, load_settings

OFFER_SDP = "\r\n".join([
    "v=0", "o=- 4005145727 4005145727 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 56458 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 192.0.2.2", "a=sendrecv", "a=mid:0", "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2", "a=candidate:1 1 udp 2130706431 192.0.2.2 56458 typ host",
    "a=ice-ufrag:0etv", "a=ice-pwd:0ivjx48r6wj0jFQMWMPkQw",
    "a=fingerprint:sha-256 AA:22:1A:9E:8D:95:FA:7A:B2:57:B8:CD:0A:01:61:57:96:7F:C6:2D:EB:80:0A:F5:49:39:86:6B:F2",
    "a=setup:actpass", "m=application 57213 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 192.0.2.2", "a=mid:1",
    "a=sctp-port:5000", "",
])


def offer(**fields) -> bytes:
    return json.dumps({"sdp": OFFER_SDP, "type": "offer", **fields}).encode()


def test_a_good_offer_gives_the_session_defaults():
    parsed = parse_offer(offer(resource="user-1", thread="conv-1", agent="Helper", token="t0k",
                               vad={"silence_ms": 700, "aggressiveness": 3}), max_bytes=65536)
    assert isinstance(parsed, OfferRequest)
    assert parsed.sdp == OFFER_SDP and parsed.token == "t0k"
    config = parsed.config
    assert (config.resource, config.thread, config.agent) == ("user-1", "conv-1", "Helper")
    assert (config.vad_silence_ms, config.vad_aggressiveness, config.vad_min_speech_ms) == (700, 3, 200)
    assert config.input_format == PCM16_16K, "the gateway converts the decoded Opus to 16 kHz"
    assert config.output_format == AudioFormat("pcm16", 48000), "replies are rendered at the track's rate"


def test_a_bare_offer_has_no_ids():
    parsed = parse_offer(offer(), max_bytes=65536)
    assert isinstance(parsed, OfferRequest)
    assert parsed.config.resource is None and parsed.config.thread is None and parsed.token is None


@pytest.mark.parametrize("body, code, words", [
    (b"not json", "invalid_offer", "JSON object"),
    (b"[1, 2]", "invalid_offer", "JSON object"),
    (b"\xff\xfe", "invalid_offer", "JSON object"),
    (json.dumps({"sdp": OFFER_SDP}).encode(), "invalid_offer", '"type" must be "offer"'),
    (json.dumps({"sdp": OFFER_SDP, "type": "answer"}).encode(), "invalid_offer", '"type" must be "offer"'),
    (json.dumps({"type": "offer"}).encode(), "invalid_offer", '"sdp"'),
    (json.dumps({"type": "offer", "sdp": "   "}).encode(), "invalid_offer", '"sdp"'),
    (json.dumps({"type": "offer", "sdp": 42}).encode(), "invalid_offer", '"sdp"'),
    (offer(agent=7), "invalid_offer", '"agent"'),
    (offer(token=["x"]), "invalid_offer", '"token"'),
    (offer(vad="loud"), "invalid_offer", '"vad"'),
    (offer(vad={"silence_ms": 50}), "invalid_offer", "vad.silence_ms must be an integer from 100 to 5000"),
    (offer(vad={"aggressiveness": True}), "invalid_offer", "vad.aggressiveness"),
    (offer(vad={"volume": 3}), "invalid_offer", "unknown vad setting"),
    (offer(resource="x' OR '1'='1"), "invalid_id", "resource"),
    (offer(thread="../etc"), "invalid_id", "thread"),
])
def test_bodies_that_are_not_a_valid_offer(body, code, words):
    error = parse_offer(body, max_bytes=65536)
    assert isinstance(error, SignallingError)
    assert (error.status, error.code) == (400, code)
    assert words in error.message
    assert error.body() == {"error": {"code": code, "message": error.message}}


def test_a_body_over_the_limit_is_413():
    error = parse_offer(offer(), max_bytes=100)
    assert isinstance(error, SignallingError) and (error.status, error.code) == (413, "body_too_large")
    assert "limit is 100" in error.message


@pytest.mark.parametrize("sdp, words", [
    ("hello world", "starts with the line v=0"),
    ("v=0\r\nthis is not sdp\r\n", "not an SDP line"),
    (OFFER_SDP.replace("m=audio", "m=text"), "no audio m-line"),
    (OFFER_SDP.split("m=application")[0], "no application m-line"),
    (OFFER_SDP + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "video m-lines"),
    (OFFER_SDP.replace("a=ice-ufrag:0etv\r\n", ""), "ice-ufrag"),
    (OFFER_SDP.replace("a=ice-pwd", "a=ice-password"), "ice-pwd"),
    ("\r\n".join(line for line in OFFER_SDP.split("\r\n") if not line.startswith("a=fingerprint")), "fingerprint"),
])
def test_sdp_that_cannot_be_answered_is_invalid_sdp(sdp, words):
    assert words in check_offer_sdp(sdp)
    error = parse_offer(json.dumps({"type": "offer", "sdp": sdp}).encode(), max_bytes=65536)
    assert isinstance(error, SignallingError) and (error.status, error.code) == (400, "invalid_sdp")
    assert words in error.message


def test_sdp_with_bare_newlines_is_read_too():
    assert check_offer_sdp(OFFER_SDP.replace("\r\n", "\n")) is None


def test_answer_body():
    assert answer_body("v=0...", "sess_1") == {"sdp": "v=0...", "type": "answer", "session_id": "sess_1"}


def decode(data, **limits):
    return decode_channel_message(data, max_text_chars=limits.get("chars", 4000),
                                  max_message_bytes=limits.get("bytes", 65536))


def test_channel_messages_are_the_native_ones():
    assert decode('{"type":"input.text","text":"hi"}') == InputText("hi")
    assert isinstance(decode('{"type":"response.cancel"}'), CancelResponse)
    assert decode('{"type":"tool.decline","tool_call_id":"c1","reason":"no"}') == ToolDecision("c1", False, "no")
    assert isinstance(decode('{"type":"session.end"}'), EndSession)
    assert decode("nope") == InvalidInput("invalid_json", "text frames must be JSON objects")
    assert decode('{"type":"input.text","text":"' + "a" * 50 + '"}', chars=10).code == "text_too_long"
    assert decode('{"type":"bogus"}').code == "unknown_type"


def test_channel_rules_of_webrtc():
    binary = decode(b"\x00\x01")
    assert isinstance(binary, InvalidInput) and binary.code == "invalid_message" and "track" in binary.message
    played = decode('{"type":"response.played","turn_id":"t","played_ms":10}')
    assert isinstance(played, InvalidInput) and "counts the reply audio" in played.message
    big = decode('{"type":"input.text","text":"' + "a" * 2000 + '"}', bytes=1024)
    assert isinstance(big, InvalidInput) and big.code == "frame_too_large" and "limit is 1024" in big.message


def test_outbound_events_are_native_json_and_audio_stays_off_the_channel():
    started = SessionStarted("sess_1", "user-1", "conv-1", PCM16_16K, AudioFormat("pcm16", 48000), "Assistant")
    for event in (started, Transcript("t1", "hello"), ResponseCancelled("t1", "Hel", "barge_in"),
                  TurnMetrics("t1", voice_to_voice_ms=812.0)):
        assert encode_channel_event(event) == encode_event(event)
    assert json.loads(encode_channel_event(started))["output_audio"] == {"encoding": "pcm16", "sample_rate": 48000}
    assert encode_channel_event(ResponseAudio("t1", AudioChunk(b"\x00\x00", 48000))) is None


def test_credentials_header_then_query_then_body():
    assert credential_from({"authorization": "Bearer k1"}, {"api_key": "k2"}, "k3") == "k1"
    assert credential_from({}, {"api_key": "k2"}, "k3") == "k2"
    assert credential_from({}, {}, "k3") == "k3"
    assert credential_from({"authorization": "Basic xyz"}, {}, None) is None


def test_ice_servers_setting_and_what_the_browser_gets():
    settings = Settings(webrtc={"ice_servers": [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
         "username": "u", "credential": "s3cret"}]})
    assert browser_ice_servers(settings.webrtc.ice_servers) == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"], "username": "u",
         "credential": "s3cret"}]
    assert "s3cret" in settings.secrets(), "the log scrubs TURN passwords"
    assert Settings().webrtc.ice_servers == [], "host candidates only by default"


def test_bad_ice_server_url_stops_start_up_with_a_readable_line(monkeypatch):
    monkeypatch.setenv("VOICESERVER_WEBRTC__ICE_SERVERS", '[{"urls": "http://stun.example.org"}]')
    with pytest.raises(SettingsError, match="webrtc.ice_servers.0.urls.*stun:host:port"):
        load_settings()
