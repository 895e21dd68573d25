"""Caller identity on the WebRTC gateway: a real aiortc caller against a real server (127.0.0.1, port 0). A token for
alice (in the offer body or the Authorization header) cannot open a session as bob, nor end bob's; an expired token
is refused; the per-token limit answers 429; a browser origin outside the allow-list is 403."""

import time

import httpx
import pytest

from voiceserver.identity import issue_token
from voiceserver.settings import AuthConfig, LimitsConfig, Settings
from voiceserver.testing.harness import voice_server
from voiceserver.testing.webrtc_caller import WebRtcCaller, WebRtcCallerError

SECRET = "identity-webrtc-secret-0123456789abcd"


def token(resource: str, **kwargs) -> str:
    return issue_token(SECRET, resource, now=kwargs.pop("now", time.time()), ttl_s=kwargs.pop("ttl_s", 600), **kwargs)


def secured(**limits) -> Settings:
    return Settings(auth=AuthConfig(token_secret=SECRET), limits=LimitsConfig(**limits))


async def offer_refused(http_url: str, **kwargs) -> str:
    with pytest.raises(WebRtcCallerError) as refused:
        async with WebRtcCaller.connect(http_url, **kwargs):
            pass
    return str(refused.value)


async def test_a_token_for_alice_cannot_open_a_webrtc_session_as_bob():
    async with voice_server(settings=secured()) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        alice = token("alice")
        for how in ({"token": alice}, {"api_key": alice}):
            message = await offer_refused(vs.http_url, resource="bob", **how)
            assert "403" in message and "forbidden_resource" in message, how
        assert not vs.server.hub.sessions
        async with WebRtcCaller.connect(vs.http_url, token=token("bob"), resource="bob") as bob, \
                WebRtcCaller.connect(vs.http_url, token=alice) as own:
            assert own.session["resource"] == "alice" and bob.session["resource"] == "bob"
            await own.send_json({"type": "session.start", "resource": "bob"})
            late = await own.wait_for("error")
            assert late["code"] == "session_already_started", "the session is alice's from the offer on"
            await own.send_text("hello")
            assert (await own.wait_for("response.done"))["text"]
            ending = await http.delete(f"/v1/webrtc/sessions/{bob.session_id}",
                                       headers={"Authorization": f"Bearer {alice}"})
            assert ending.status_code == 404, "alice cannot end bob's session"
            assert bob.session_id in vs.server.hub.sessions
            mine = await http.delete(f"/v1/webrtc/sessions/{own.session_id}",
                                     headers={"Authorization": f"Bearer {alice}"})
            assert mine.status_code == 200


async def test_expired_tokens_limits_and_origins_on_the_offer():
    async with voice_server(settings=secured(token_max_sessions=1)) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        expired = token("alice", now=time.time() - 3600, ttl_s=60)
        message = await offer_refused(vs.http_url, token=expired)
        assert "401" in message and "token_expired" in message
        alice = token("alice")
        async with WebRtcCaller.connect(vs.http_url, token=alice):
            message = await offer_refused(vs.http_url, token=alice)
            assert "429" in message and "too_many_sessions" in message
        evil = await http.post("/v1/webrtc/offer", json={"sdp": "v=0", "type": "offer", "token": alice},
                               headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden_origin"
