"""Caller identity on the native voice WebSocket, against a real server (127.0.0.1, port 0) with real LanceDB memory:
a token for alice cannot start a session as bob nor hear bob's thread, an expired token is refused, admins act for
anyone, the per-caller session limits, and the browser Origin allow-list."""

import contextlib
import json
import sys
import time
from pathlib import Path

import pytest
import websockets

from voiceserver.client import VoiceClient
from voiceserver.identity import CallerLimits, issue_token
from voiceserver.settings import AuthConfig, LimitsConfig, Settings
from voiceserver.testing.harness import voice_server

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))
import memory_app  # noqa: E402

SECRET = "identity-test-secret-0123456789abcdef"
ADMIN = "admin-key-0123"


def token(resource: str, *, ttl_s: float = 600, now: float | None = None, **claims) -> str:
    return issue_token(SECRET, resource, now=time.time() if now is None else now, ttl_s=ttl_s, **claims)


def secured(**limits) -> Settings:
    return Settings(api_keys=[ADMIN], auth=AuthConfig(token_secret=SECRET), limits=LimitsConfig(**limits))


async def refused_upgrade(url: str, **kwargs) -> tuple[int, dict]:
    """The HTTP status and JSON body of a WebSocket refused before the upgrade."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, **kwargs):
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def error_then_close(url: str, credential: str, first: dict | None = None) -> tuple[dict, int]:
    """Connect, optionally send one message, and return the error event and the close code that follow."""
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {credential}"}) as ws:
        if first is not None:
            await ws.send(json.dumps(first))
        error = None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "error":
                    error = event
        return error, ws.close_code


@pytest.fixture
def app(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("LANCEDB_URI", str(tmp_path / "memory"))
    monkeypatch.setenv("VOICESERVER_MODELS_DIR", str(models_dir))
    return memory_app.build()


async def test_a_token_for_alice_cannot_start_a_session_as_bob_or_hear_bobs_thread(app):
    agent = app.get_agent("Assistant")
    async with voice_server(agent=agent, memory=app.memory, settings=secured()) as vs:
        async with VoiceClient.connect(vs.ws_url, api_key=token("bob"), thread="bob-thread") as bob:
            assert bob.session["resource"] == "bob"
            assert (await bob.ask_text("Hi, my name is Bob.")).reply_text == "Nice to meet you."

        alice = token("alice")
        error, code = await error_then_close(vs.ws_url + "?resource=bob", alice)
        assert error["code"] == "forbidden_resource" and code == 1008
        error, code = await error_then_close(vs.ws_url, alice, {"type": "session.start", "resource": "bob"})
        assert error["code"] == "forbidden_resource" and code == 1008

        async with VoiceClient.connect(vs.ws_url, api_key=alice) as own:
            assert own.session["resource"] == "alice", "the token's resource, without naming it"
            reply = (await own.ask_text("Hello.")).reply_text
        assert reply.startswith("Hello, who is this?") and "Bob" not in reply

        async with VoiceClient.connect(vs.ws_url, api_key=alice, thread="bob-thread") as intruder:
            turn = await intruder.ask_text("What did I say before?")
            assert [e["code"] for e in turn.errors] == ["thread_owner_mismatch"]
            assert "Bob" not in json.dumps(turn.events)
            again = await intruder.ask_text("Hello?")  # the session goes on
            assert "Bob" not in json.dumps(again.events)
        history = await app.memory.recall("bob-thread", "bob")
        assert [m.content for m in history.messages if m.role == "user"] == ["Hi, my name is Bob."], \
            "alice's attempt wrote nothing into bob's thread"

        async with VoiceClient.connect(vs.ws_url, api_key=ADMIN, resource="bob") as admin:
            assert admin.session["resource"] == "bob", "an admin key may act for any resource"
            assert "Bob" in (await admin.ask_text("Hello again.")).reply_text


async def test_a_token_with_a_thread_and_an_agent_fixes_them_too(app):
    agent = app.get_agent("Assistant")
    async with voice_server(agent=agent, memory=app.memory, settings=secured()) as vs:
        bound = token("carol", thread="carol-1", agent="Assistant")
        async with VoiceClient.connect(vs.ws_url, api_key=bound) as carol:
            assert (carol.session["resource"], carol.session["thread"], carol.session["agent"]) == (
                "carol", "carol-1", "Assistant")
        error, code = await error_then_close(vs.ws_url, bound, {"type": "session.start", "thread": "carol-2"})
        assert error["code"] == "forbidden_resource" and "thread" in error["message"] and code == 1008


async def test_expired_wrong_and_missing_credentials_are_refused_before_the_upgrade():
    async with voice_server(settings=secured()) as vs:
        expired = token("alice", now=time.time() - 3600, ttl_s=60)
        status, body = await refused_upgrade(vs.ws_url, additional_headers={"Authorization": f"Bearer {expired}"})
        assert status == 403 and body["error"]["code"] == "token_expired"
        other_secret = issue_token("another-servers-secret-0123456789abc", "alice", now=time.time(), ttl_s=60)
        for credential in (other_secret, "not-a-key", None):
            headers = {"Authorization": f"Bearer {credential}"} if credential else None
            status, body = await refused_upgrade(vs.ws_url, additional_headers=headers)
            assert status == 403 and body["error"]["code"] == "unauthorized", credential
        async with VoiceClient.connect(vs.ws_url + f"?api_key={token('alice')}") as by_query:
            assert by_query.session["resource"] == "alice", "?api_key= carries a token too"
        metrics = vs.server.metrics.render().decode()
        assert 'voiceserver_errors_total{code="token_expired"} 1.0' in metrics
        assert 'voiceserver_errors_total{code="unauthorized"} 3.0' in metrics


async def test_per_token_session_limits_answer_1013_with_a_code():
    settings = secured(token_max_sessions=2, token_sessions_per_minute=3, ip_max_sessions=0)
    async with voice_server(settings=settings) as vs:
        hub = vs.server.hub
        hub.limits = CallerLimits(hub.limits.policy, clock=lambda: 0.0)  # no refill while the test runs
        alice = token("alice")
        async with VoiceClient.connect(vs.ws_url, api_key=alice), VoiceClient.connect(vs.ws_url, api_key=alice):
            error, code = await error_then_close(vs.ws_url, alice)
            assert (error["code"], code) == ("too_many_sessions", 1013)
            async with VoiceClient.connect(vs.ws_url, api_key=token("bob")) as bob:
                assert bob.session["resource"] == "bob", "another token has its own count"
        async with VoiceClient.connect(vs.ws_url, api_key=alice) as third:
            assert third.session["resource"] == "alice", "a closed session frees its place"
        error, code = await error_then_close(vs.ws_url, alice)
        assert (error["code"], code) == ("rate_limited", 1013), "a fourth new session within the minute"
        for _ in range(5):
            async with VoiceClient.connect(vs.ws_url, api_key=ADMIN) as admin:
                assert admin.session["resource"] is None, "admin keys are not limited per caller"


async def test_per_ip_session_limit_counts_every_token_from_one_address():
    async with voice_server(settings=secured(ip_max_sessions=2, token_max_sessions=0)) as vs, \
            VoiceClient.connect(vs.ws_url, api_key=token("a")), VoiceClient.connect(vs.ws_url, api_key=token("b")):
        error, code = await error_then_close(vs.ws_url, token("c"))
        assert (error["code"], code) == ("too_many_sessions", 1013) and "ip" in error["message"]


async def test_browser_origins_outside_the_allow_list_are_refused():
    async with voice_server() as vs:  # an open server: the allow-list is what keeps other sites out
        status, body = await refused_upgrade(vs.ws_url, origin="https://evil.example")
        assert status == 403 and body["error"]["code"] == "forbidden_origin"
        for origin in (vs.running.http_url, "http://localhost:5173", None):
            async with VoiceClient.connect(vs.ws_url) if origin is None else _connect(vs.ws_url, origin) as ok:
                assert ok is not None
        listed = Settings(auth=AuthConfig(allowed_origins=["https://app.example.com"]))
    async with voice_server(settings=listed) as vs:
        async with _connect(vs.ws_url, "https://app.example.com"):
            pass
        status, _ = await refused_upgrade(vs.ws_url, origin="http://localhost:5173")
        assert status == 403, "localhost is only allowed while it is in the list"


def _connect(url: str, origin: str):
    return websockets.connect(url, origin=origin)


async def test_an_open_server_says_so_at_start(caplog):
    import logging

    caplog.set_level(logging.INFO)
    async with voice_server():
        pass
    async with voice_server(settings=secured()):
        pass
    messages = [r.getMessage() for r in caplog.records]
    assert sum("open access" in m for m in messages) == 1
    assert any("access control on" in m for m in messages)
    assert not any(SECRET in m or ADMIN in m for m in messages)
