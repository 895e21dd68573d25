"""The call webhook against a real server: TwiML with the caller's identity, X-Twilio-Signature checked on the
webhook and on the stream's upgrade, the stream token, the public URL, and API keys."""

import asyncio
import math

import httpx
import numpy as np
import pytest
import websockets

from voiceserver.agent import Agent
from voiceserver.gateway.twilio_auth import compute_signature
from voiceserver.settings import Settings, TwilioConfig
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.fake_twilio import FakeTwilioCall, parse_twiml, to_mulaw_8k
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server

TOKEN = "0123456789abcdef0123456789abcdef"
FORM = {"CallSid": "CA" + "a" * 32, "AccountSid": "AC" + "0" * 32, "From": "+14158675309", "To": "+18005551212",
        "Direction": "inbound", "CallStatus": "ringing"}


def tone(ms: int, rate: int = 16000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


async def post(url: str, form: dict, signature: str | None = None) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=form, headers=headers)


async def test_webhook_answers_twiml_with_the_callers_identity():
    agents = {"Assistant": Agent(name="Assistant", instructions="x", model=ScriptedChatModel(["Hi."])),
              "Sales": Agent(name="Sales", instructions="x", model=ScriptedChatModel(["Sales here."]))}
    async with voice_server(agents=agents) as vs:
        answer = await post(vs.http_url + "/v1/twilio/voice?agent=Sales", FORM)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
        assert answer.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url=')
        url, params = parse_twiml(answer.text)
        assert url == vs.running.ws_url + "/v1/twilio/stream"
        assert params == {"resource": "tel:14158675309", "thread": "tel:14158675309:phone", "agent": "Sales"}, \
            "an open server issues no token"
        unknown = parse_twiml((await post(vs.http_url + "/v1/twilio/voice?agent=Nobody", FORM)).text)[1]
        assert "agent" not in unknown, "an unknown agent is left out: the default answers"
        hidden = parse_twiml((await post(vs.http_url + "/v1/twilio/voice", {**FORM, "From": "anonymous"})).text)[1]
        assert hidden == {}, "a withheld number is nobody in particular"
        missing = await post(vs.http_url + "/v1/twilio/voice", {"From": "+14158675309"})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_request"
        async with httpx.AsyncClient() as http:
            wrong = await http.post(vs.http_url + "/v1/twilio/voice", json=FORM)
            assert wrong.status_code == 415
            big = await http.post(vs.http_url + "/v1/twilio/voice", content=b"a=" + b"x" * 70000,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
            assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"


async def test_signatures_on_the_webhook_and_the_stream():
    settings = Settings(twilio=TwilioConfig(auth_token=TOKEN))
    tts = ToneTTS(ms_per_char=10)
    async with voice_server(settings=settings, tts=tts, stt=ScriptedSTT(["hello"])) as vs:
        url = vs.http_url + "/v1/twilio/voice"
        good = await post(url, FORM, compute_signature(TOKEN, url, FORM.items()))
        assert good.status_code == 200
        stream_url, params = parse_twiml(good.text)
        assert set(params) == {"resource", "thread", "token"}
        for signature in (None, "", compute_signature("another-token", url, FORM.items()),
                          compute_signature(TOKEN, url, {**FORM, "From": "+10000000000"}.items())):
            bad = await post(url, {**FORM, "From": "+14158675309"}, signature)
            assert bad.status_code == 403 and bad.json()["error"]["code"] == "invalid_signature"
        tampered = await post(url, {**FORM, "From": "+19999999999"}, good.request.headers["X-Twilio-Signature"])
        assert tampered.status_code == 403, "the signature covers every parameter"

        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(stream_url)  # the upgrade is unsigned
        assert refused.value.response.status_code == 403
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(stream_url, additional_headers={
                "X-Twilio-Signature": compute_signature("another-token", stream_url)})

        # Signed upgrade, but the start claims someone else: the token does not match, the stream is closed.
        forged = await FakeTwilioCall.connect(stream_url, {**params, "resource": "tel:15550000000"},
                                              call_sid=FORM["CallSid"], account_sid=FORM["AccountSid"],
                                              auth_token=TOKEN)
        await asyncio.wait_for(forged.closed.wait(), 10)
        assert forged.ws.close_code == 1008 and vs.server.hub.sessions == {}
        await forged.hang_up()

        # A genuine signed call is served.
        async with FakeTwilioCall.dial(vs.http_url, auth_token=TOKEN) as call:
            await call.say(to_mulaw_8k(tone(600)))
            await call.wait_for(lambda c: c.record.marks_echoed, timeout=20)
        metrics = vs.server.metrics.render().decode()
        assert 'voiceserver_errors_total{code="invalid_signature"} 7.0' in metrics
        assert 'voiceserver_errors_total{code="unauthorized"} 1.0' in metrics


async def test_public_url_setting_names_the_stream_and_is_what_is_signed():
    settings = Settings(twilio=TwilioConfig(auth_token=TOKEN, public_url="https://voice.example.com"))
    async with voice_server(settings=settings) as vs:
        public = "https://voice.example.com/v1/twilio/voice"
        answer = await post(vs.http_url + "/v1/twilio/voice", FORM, compute_signature(TOKEN, public, FORM.items()))
        assert answer.status_code == 200
        assert parse_twiml(answer.text)[0] == "wss://voice.example.com/v1/twilio/stream"
        local = vs.http_url + "/v1/twilio/voice"
        assert (await post(local, FORM, compute_signature(TOKEN, local, FORM.items()))).status_code == 403


async def test_behind_a_proxy_the_forwarded_headers_give_the_url():
    settings = Settings(twilio=TwilioConfig(auth_token=TOKEN))
    async with voice_server(settings=settings) as vs:
        public = "https://calls.example.org/v1/twilio/voice"
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "calls.example.org",
                   "X-Twilio-Signature": compute_signature(TOKEN, public, FORM.items())}
        async with httpx.AsyncClient() as http:
            answer = await http.post(vs.http_url + "/v1/twilio/voice", data=FORM, headers=headers)
        assert answer.status_code == 200
        assert parse_twiml(answer.text)[0] == "wss://calls.example.org/v1/twilio/stream"


async def test_with_api_keys_the_webhook_needs_one_and_the_stream_its_token():
    settings = Settings(api_keys=["key-1"])
    tts = ToneTTS(ms_per_char=10)
    async with voice_server(settings=settings, tts=tts, stt=ScriptedSTT(["hello"])) as vs:
        assert (await post(vs.http_url + "/v1/twilio/voice", FORM)).status_code == 401
        answer = await post(vs.http_url + "/v1/twilio/voice?api_key=key-1", FORM)
        stream_url, params = parse_twiml(answer.text)
        assert "token" in params and params["token"] != "key-1", "a per-call token, not the key"
        nobody = await FakeTwilioCall.connect(stream_url, {"resource": "tel:14158675309"}, call_sid=FORM["CallSid"],
                                              account_sid=FORM["AccountSid"])
        await asyncio.wait_for(nobody.closed.wait(), 10)
        assert nobody.ws.close_code == 1008
        await nobody.hang_up()
        async with FakeTwilioCall.dial(vs.http_url, query="api_key=key-1") as call:
            await call.say(to_mulaw_8k(tone(600)))
            await call.wait_for(lambda c: c.record.marks_echoed, timeout=20)
