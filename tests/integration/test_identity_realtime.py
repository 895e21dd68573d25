"""Caller identity on ws /v1/realtime, judged by the official ``openai`` SDK against a real server (127.0.0.1, port 0)
with LanceDB memory: a token for alice (Authorization: Bearer, as the SDK sends its api_key) cannot open a session
as bob, talks as alice without naming her, and an expired token is refused before the upgrade."""

import contextlib
import json
import time

import pytest
import websockets
from openai import AsyncOpenAI

from voiceserver.agent import Agent
from voiceserver.identity import issue_token
from voiceserver.memory import LanceDBStore, Memory
from voiceserver.settings import AuthConfig, Settings
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.fake_voice import ToneTTS
from voiceserver.testing.harness import voice_server

SECRET = "identity-realtime-secret-0123456789ab"


def token(resource: str, **kwargs) -> str:
    return issue_token(SECRET, resource, now=kwargs.pop("now", time.time()), ttl_s=kwargs.pop("ttl_s", 600), **kwargs)


def client_for(vs, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=vs.http_url + "/v1", websocket_base_url=vs.running.ws_url + "/v1",
                       max_retries=0)


async def events_until(conn, kind: str) -> list:
    seen = []
    with contextlib.suppress(Exception):  # the server may close the socket right after the event we want
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                break
    return seen


@pytest.fixture
async def memory(tmp_path):
    memory = Memory(LanceDBStore(tmp_path / "memory"), embedder=None, options={"last_messages": 10})
    yield memory
    await memory.close()


async def test_a_token_for_alice_cannot_open_a_realtime_session_as_bob(memory):
    agent = Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel(["Hello Alice."]),
                  memory=memory)
    settings = Settings(auth=AuthConfig(token_secret=SECRET))
    async with voice_server(agent=agent, memory=memory, settings=settings, tts=ToneTTS(sample_rate=24000)) as vs:
        alice = client_for(vs, token("alice"))
        async with alice.realtime.connect(model="gpt-realtime", extra_query={"resource": "bob"}) as conn:
            events = await events_until(conn, "error")
        assert [e.type for e in events] == ["error"], "no session.created: nothing was opened as bob"
        assert events[0].error.code == "forbidden_resource"
        assert not vs.server.hub.sessions
        url = vs.running.ws_url + "/v1/realtime?model=gpt-realtime&resource=bob"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token('alice')}"}) as ws:
            assert json.loads(await ws.recv())["error"]["code"] == "forbidden_resource"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 1008

        async with alice.realtime.connect(model="gpt-realtime") as conn:
            created = await conn.recv()
            assert created.type == "session.created"
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Hi, I am Alice."}]})
            await conn.response.create()
            done = (await events_until(conn, "response.done"))[-1]
        assert done.type == "response.done" and done.response.status == "completed"
        threads = await memory.list_threads("alice")
        assert threads.total == 1, "the conversation was kept for the token's resource"
        assert (await memory.list_threads("bob")).total == 0


async def test_an_expired_token_is_refused_before_the_upgrade():
    settings = Settings(auth=AuthConfig(token_secret=SECRET))
    async with voice_server(settings=settings) as vs:
        expired = client_for(vs, token("alice", now=time.time() - 3600, ttl_s=60))
        with pytest.raises(Exception) as refused:
            async with expired.realtime.connect(model="gpt-realtime") as conn:
                await conn.recv()
        assert "403" in str(refused.value)
        assert 'voiceserver_errors_total{code="token_expired"} 1.0' in vs.server.metrics.render().decode()
