"""Caller identity on the Twilio gateway against a real server (127.0.0.1, port 0) and a fake Twilio peer: on a
server secured by a caller-token secret the stream needs the webhook's token, a caller token cannot stand in for it,
and the webhook needs Twilio's signature (or an admin key); the call's identity is the webhook's."""

import asyncio
import time

import httpx

from voiceserver.identity import issue_token
from voiceserver.settings import AuthConfig, Settings, TwilioConfig
from voiceserver.testing.fake_twilio import FakeTwilioCall, parse_twiml
from voiceserver.testing.harness import voice_server

SECRET = "identity-twilio-secret-0123456789abcd"
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
FORM = {"CallSid": "CA" + "c" * 32, "AccountSid": "AC" + "0" * 32, "From": "+14158675309", "To": "+18005551212"}


async def closed_with(call: FakeTwilioCall) -> int:
    await asyncio.wait_for(call.closed.wait(), 10)
    code = call.ws.close_code
    await call.hang_up()
    return code


async def test_a_token_secret_alone_secures_the_stream_and_the_webhook():
    settings = Settings(auth=AuthConfig(token_secret=SECRET))
    async with voice_server(settings=settings) as vs, httpx.AsyncClient() as http:
        webhook = await http.post(vs.http_url + "/v1/twilio/voice", data=FORM)
        assert webhook.status_code == 401, "no signature to check and no admin key: nobody may answer calls"
        stream = vs.running.ws_url + "/v1/twilio/stream"
        bare = await FakeTwilioCall.connect(stream, {"resource": "tel:14158675309"}, call_sid=FORM["CallSid"],
                                            account_sid=FORM["AccountSid"])
        assert await closed_with(bare) == 1008, "a hand-written start without the webhook's token"
        caller_token = issue_token(SECRET, "tel:14158675309", now=time.time(), ttl_s=600)
        posing = await FakeTwilioCall.connect(stream, {"resource": "tel:14158675309", "token": caller_token},
                                              call_sid=FORM["CallSid"], account_sid=FORM["AccountSid"])
        assert await closed_with(posing) == 1008, "a caller token is not a call the webhook answered"
        assert vs.server.hub.sessions == {}


async def test_with_a_signature_the_call_is_served_as_the_webhook_named_it():
    settings = Settings(auth=AuthConfig(token_secret=SECRET), twilio=TwilioConfig(auth_token=AUTH_TOKEN))
    async with voice_server(settings=settings) as vs:
        async with FakeTwilioCall.dial(vs.http_url, from_number="+14158675309", auth_token=AUTH_TOKEN) as call:
            await call.wait_for(lambda c: vs.server.hub.sessions, timeout=10)
            (session,) = vs.server.hub.sessions.values()
            assert session.ctx.caller.role == "call" and session.config.resource == "tel:14158675309"
        forged_from = dict(FORM, From="+14155550000")
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(vs.http_url + "/v1/twilio/voice", data=forged_from)
        assert unsigned.status_code == 403 and unsigned.json()["error"]["code"] == "invalid_signature"
        assert "token" in parse_twiml((await _signed_webhook(vs.http_url)).text)[1]


async def _signed_webhook(http_url: str) -> httpx.Response:
    from voiceserver.gateway.twilio_auth import compute_signature

    url = http_url + "/v1/twilio/voice"
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=FORM, headers={"X-Twilio-Signature": compute_signature(
            AUTH_TOKEN, url, FORM.items())})
