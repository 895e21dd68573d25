"""Twilio signatures (Twilio's published test vectors), stream tokens, caller identity, TwiML and admission."""

import pytest

from voiceserver.gateway.hub import SessionHub
from voiceserver.gateway.telephony import StreamBadInput, StreamStart
from voiceserver.gateway.twilio import admit_call, call_identity, render_twiml, stream_secret
from voiceserver.gateway.twilio_auth import (
    caller_resource,
    compute_signature,
    public_base_url,
    signature_valid,
    stream_token,
    stream_token_valid,
    websocket_url,
)
from voiceserver.gateway.twilio_codec import MULAW_8K
from voiceserver.settings import TwilioConfig

URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
          "Caller": "+14158675309"}


def test_signature_matches_twilios_published_vectors():
    assert compute_signature("12345", URL, PARAMS.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature("12345", URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_signature_validation_with_and_without_the_port():
    assert signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL, PARAMS.items())
    assert signature_valid("12345", "kvajT1Ptam85bY51eRf/AJRuM3w=", URL, PARAMS.items()), "signed with :443"
    assert signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL.replace(".com", ".com:1234"), PARAMS.items())
    assert signature_valid("12345", "0ZXoZLH/DfblKGATFgpif+LLRf4=", URL.replace("https", "http"), PARAMS.items())
    assert not signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B9=", URL, PARAMS.items())
    assert not signature_valid("54321", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL, PARAMS.items())
    assert not signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL, {**PARAMS, "Digits": "9"}.items())
    assert not signature_valid("12345", None, URL, PARAMS.items())
    stream = "wss://voice.example.com/v1/twilio/stream"
    assert signature_valid("tok", compute_signature("tok", stream), stream), "the upgrade: its URL, no parameters"


def test_stream_token_binds_the_call_and_its_identity():
    identity = {"resource": "tel:15551230001", "thread": "tel:15551230001:phone"}
    token = stream_token("secret", "CA1", identity)
    assert stream_token_valid("secret", token, "CA1", identity)
    assert not stream_token_valid("secret", token, "CA2", identity)
    assert not stream_token_valid("secret", token, "CA1", {**identity, "resource": "tel:15559990000"})
    assert not stream_token_valid("other", token, "CA1", identity)
    assert not stream_token_valid("secret", None, "CA1", identity)


@pytest.mark.parametrize(("caller", "resource"), [
    ("+14158675309", "tel:14158675309"),
    ("+1 (415) 867-5309", "tel:14158675309"),
    ("4158675309", "tel:4158675309"),
    ("client:alice", "client:alice"),
    ("sip:alice@example.com;transport=udp", "sip:alice@example.com"),
    ("anonymous", None), ("Restricted", None), ("+266696687", None), ("+8656696", None), ("", None), (None, None),
    ("+12", None), ("client:al ice", None), ("' OR 1=1", None),
])
def test_caller_resource(caller, resource):
    assert caller_resource(caller) == resource


def test_public_url_from_the_setting_or_the_proxy_headers():
    assert public_base_url("https://voice.example.com/", {"host": "10.0.0.5:8080"}, "http") == \
        "https://voice.example.com"
    headers = {"host": "10.0.0.5:8080", "x-forwarded-proto": "https", "x-forwarded-host": "voice.example.com"}
    assert public_base_url(None, headers, "http") == "https://voice.example.com"
    assert public_base_url(None, {"host": "127.0.0.1:9000"}, "http") == "http://127.0.0.1:9000"
    assert public_base_url(None, {"host": "127.0.0.1:9000"}, "wss") == "https://127.0.0.1:9000"
    assert websocket_url("https://voice.example.com", "/v1/twilio/stream") == "wss://voice.example.com/v1/twilio/stream"
    assert websocket_url("http://127.0.0.1:9", "/s") == "ws://127.0.0.1:9/s"


def test_twiml_escapes_every_value():
    twiml = render_twiml("wss://h/v1/twilio/stream", {"agent": 'Sales & "Co" <x>'})
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://h/')
    assert '<Parameter name="agent" value="Sales &amp; &quot;Co&quot; &lt;x&gt;"/>' in twiml


def test_identity_of_a_call():
    config = TwilioConfig()
    inbound = {"CallSid": "CA9", "From": "+14158675309", "To": "+18005551212", "Direction": "inbound"}
    assert call_identity(inbound, config, None) == {"resource": "tel:14158675309",
                                                    "thread": "tel:14158675309:phone"}
    outbound = {**inbound, "Direction": "outbound-api"}
    assert call_identity(outbound, config, "Sales")["resource"] == "tel:18005551212", "outbound: the callee"
    assert call_identity(inbound, TwilioConfig(thread_per="call"), None)["thread"] == "call:CA9"
    assert call_identity(inbound, TwilioConfig(identify_callers=False), "Sales") == {"agent": "Sales"}
    assert call_identity({**inbound, "From": "anonymous"}, config, None) == {}


def start(**params: str) -> StreamStart:
    return StreamStart(stream_id="MZ1", call_id="CA1", parameters=params)


def test_admission_needs_the_webhooks_token_when_the_server_has_a_secret():
    config = TwilioConfig(auth_token="tok")
    hub = SessionHub(None, max_sessions=1)  # type: ignore[arg-type]
    identity = {"resource": "tel:15551230001", "thread": "tel:15551230001:phone"}
    token = stream_token(stream_secret(config, hub), "CA1", identity)
    admitted = admit_call(start(**identity, token=token), config, hub)
    assert admitted.resource == "tel:15551230001" and admitted.thread == "tel:15551230001:phone"
    assert admitted.keypad and admitted.input_format == MULAW_8K and admitted.output_format == MULAW_8K
    forged = admit_call(start(**{**identity, "resource": "tel:15559990000"}, token=token), config, hub)
    assert isinstance(forged, StreamBadInput) and forged.code == "unauthorized" and forged.fatal
    assert admit_call(start(**identity), config, hub).code == "unauthorized"


def test_admission_with_api_keys_or_on_an_open_server():
    keyed = SessionHub(None, max_sessions=1, api_keys=["k1"])  # type: ignore[arg-type]
    assert admit_call(start(resource="kiosk-1", token="k1"), TwilioConfig(), keyed).resource == "kiosk-1"
    assert admit_call(start(resource="kiosk-1", token="k2"), TwilioConfig(), keyed).code == "unauthorized"
    open_hub = SessionHub(None, max_sessions=1)  # type: ignore[arg-type]
    assert admit_call(start(caller="+14158675309"), TwilioConfig(), open_hub).resource == "tel:14158675309"
    assert admit_call(start(resource="bad id!"), TwilioConfig(), open_hub).code == "invalid_id"
    assert admit_call(start(), TwilioConfig(), open_hub).resource is None
