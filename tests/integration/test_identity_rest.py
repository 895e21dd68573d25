"""Caller identity on the REST APIs of a real server (127.0.0.1, port 0) with real LanceDB memory and run storage:
with a caller token, memory and workflow REST see that caller's threads and runs only; admins see everything; the
request rates per token and per IP; the Origin allow-list on /v1/; the Twilio webhook takes no caller token."""

import time

import httpx
import pytest
from pydantic import BaseModel

from voiceserver.identity import CallerLimits, issue_token
from voiceserver.memory import LanceDBStore, Memory, Message
from voiceserver.settings import AuthConfig, LimitsConfig, Settings
from voiceserver.testing.harness import voice_server
from voiceserver.workflows import create_step, create_workflow

SECRET = "identity-rest-secret-0123456789abcdef"
ADMIN = "admin-key-rest"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def token(resource: str, **claims) -> str:
    return issue_token(SECRET, resource, now=time.time(), ttl_s=600, **claims)


class Day(BaseModel):
    day: str


def booking(store):
    async def ask(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"prompt": "Which day?"})
        return {"day": ctx.resume_data.day}

    return create_workflow(id="booking", storage=store).then(
        create_step(id="ask-day", resume_schema=Day, execute=ask)).commit()


@pytest.fixture
async def served(tmp_path):
    store = LanceDBStore(tmp_path / "memory")
    memory = Memory(store, embedder=None, options={"working_memory": {"enabled": True, "template": "# User\n"}})
    await memory.save_messages([Message("user", "alice says hi", "alice-1", "alice")])
    await memory.save_messages([Message("user", "bob's secret", "bob-1", "bob"),
                                Message("user", "bob again", "bob-2", "bob")])
    settings = Settings(api_keys=[ADMIN], auth=AuthConfig(token_secret=SECRET),
                        limits=LimitsConfig(token_requests_per_minute=1000, ip_requests_per_minute=1000))
    async with voice_server(settings=settings, memory=memory, workflows={"booking": booking(store)}) as vs, \
            httpx.AsyncClient(base_url=vs.http_url, timeout=30) as http:
        yield http, memory
    await memory.close()


async def test_a_token_for_alice_cannot_read_bobs_thread(served):
    http, _ = served
    alice = bearer(token("alice"))
    own = await http.get("/v1/memory/threads/alice-1/messages", headers=alice)
    assert own.status_code == 200 and [m["content"] for m in own.json()["messages"]] == ["alice says hi"]
    hidden = await http.get("/v1/memory/threads/bob-1/messages", headers=alice)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "thread_not_found"
    assert "bob" not in hidden.text.replace("bob-1", "")
    named = await http.get("/v1/memory/threads/bob-1/messages", params={"resource": "bob"}, headers=alice)
    assert named.status_code == 403 and named.json()["error"]["code"] == "forbidden_resource"
    deleted = await http.delete("/v1/memory/threads/bob-1", headers=alice)
    assert deleted.status_code == 404
    listed = (await http.get("/v1/memory/threads", headers=alice)).json()
    assert [t["id"] for t in listed["threads"]] == ["alice-1"], "without resource: the token's own"
    other = await http.get("/v1/memory/threads", params={"resource": "bob"}, headers=alice)
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden_resource"
    working = await http.put("/v1/memory/working", params={"resource": "bob"}, headers=alice,
                             json={"working_memory": "# User\n- Name: Mallory\n"})
    assert working.status_code == 403
    mine = await http.put("/v1/memory/working", headers=alice, json={"working_memory": "# User\n- Name: Alice\n"})
    assert mine.status_code == 200 and mine.json()["resource"] == "alice"
    into_bobs = await http.get("/v1/memory/working", params={"thread": "bob-1"}, headers=alice)
    assert into_bobs.status_code == 404 and into_bobs.json()["error"]["code"] == "thread_not_found"


async def test_admins_read_any_thread_with_or_without_resource(served):
    """The documented admin behaviour: an admin key is the application's own, and may read any caller's thread."""
    http, _ = served
    admin = bearer(ADMIN)
    anyone = await http.get("/v1/memory/threads/bob-1/messages", headers=admin)
    assert anyone.status_code == 200 and anyone.json()["messages"][0]["content"] == "bob's secret"
    checked = await http.get("/v1/memory/threads/bob-1/messages", params={"resource": "alice"}, headers=admin)
    assert checked.status_code == 403 and checked.json()["error"]["code"] == "thread_owner_mismatch"
    assert (await http.get("/v1/memory/threads", headers=admin)).status_code == 400, "admins name the resource"
    unauthenticated = await http.get("/v1/memory/threads/bob-1/messages")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "unauthorized"


async def test_a_token_bound_to_a_thread_sees_that_thread_only(served):
    http, _ = served
    one = bearer(token("bob", thread="bob-2"))
    assert [t["id"] for t in (await http.get("/v1/memory/threads", headers=one)).json()["threads"]] == ["bob-2"]
    assert (await http.get("/v1/memory/threads/bob-2/messages", headers=one)).status_code == 200
    assert (await http.get("/v1/memory/threads/bob-1/messages", headers=one)).status_code == 404


async def test_workflow_runs_are_the_callers_own(served):
    http, _ = served
    alice, bob = bearer(token("alice")), bearer(token("bob"))
    started = (await http.post("/v1/workflows/booking/runs", json={"input_data": {}}, headers=bob)).json()
    assert started["status"] == "suspended" and started["resource_id"] == "bob", "the token's resource"
    run = started["run_id"]
    forged = await http.post("/v1/workflows/booking/runs", json={"input_data": {}, "resource_id": "bob"},
                             headers=alice)
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden_resource"
    for method, path, body in (("GET", f"/v1/workflows/booking/runs/{run}", None),
                               ("POST", f"/v1/workflows/booking/runs/{run}/resume", {"resume_data": {"day": "Mon"}}),
                               ("POST", f"/v1/workflows/booking/runs/{run}/cancel", None)):
        answer = await http.request(method, path, json=body, headers=alice)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "run_not_found", path
    assert (await http.get(f"/v1/workflows/booking/runs/{run}", headers=bob)).json()["status"] == "suspended", \
        "alice's attempts changed nothing"
    assert (await http.get("/v1/workflows/booking/runs", headers=alice)).json()["runs"] == []
    listed = await http.get("/v1/workflows/booking/runs", params={"resource_id": "bob"}, headers=alice)
    assert listed.status_code == 403
    assert [r["run_id"] for r in (await http.get("/v1/workflows/booking/runs", headers=bob)).json()["runs"]] == [run]
    admin_started = (await http.post("/v1/workflows/booking/runs", json={"input_data": {}},
                                     headers=bearer(ADMIN))).json()
    assert (await http.get(f"/v1/workflows/booking/runs/{admin_started['run_id']}", headers=bob)).status_code == 404, \
        "a run started for nobody is nobody's to see with a token"
    every = (await http.get("/v1/workflows/booking/runs", headers=bearer(ADMIN))).json()["runs"]
    assert {r["run_id"] for r in every} == {run, admin_started["run_id"]}
    resumed = await http.post(f"/v1/workflows/booking/runs/{run}/resume", json={"resume_data": {"day": "Tue"}},
                              headers=bob)
    assert resumed.json()["status"] == "success" and resumed.json()["result"] == {"day": "Tue"}


async def test_rest_rates_per_token_and_per_ip_answer_429_with_a_code(tmp_path):
    settings = Settings(api_keys=[ADMIN], auth=AuthConfig(token_secret=SECRET),
                        limits=LimitsConfig(token_requests_per_minute=5, ip_requests_per_minute=8))
    memory = Memory(LanceDBStore(tmp_path / "memory"), embedder=None)
    async with voice_server(settings=settings, memory=memory) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        hub = vs.server.hub
        hub.limits = CallerLimits(hub.limits.policy, clock=lambda: 0.0)  # no refill while the test runs
        alice = bearer(token("alice"))
        codes = [(await http.get("/v1/memory/threads", headers=alice)).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        limited = await http.get("/v1/memory/threads", headers=alice)
        assert limited.json()["error"]["code"] == "rate_limited"
        strangers = [(await http.get("/v1/memory/threads")).status_code for _ in range(4)]
        assert strangers == [401, 401, 401, 429], "the address's 8: alice's 5 counted, then 3 unauthenticated"
        admin = [(await http.get("/v1/memory/threads", params={"resource": "x"}, headers=bearer(ADMIN))).status_code
                 for _ in range(10)]
        assert admin == [200] * 10, "admin keys are not rate limited per caller"
        assert (await http.get("/healthz")).status_code == 200, "probes are never limited"
    await memory.close()


async def test_origins_outside_the_allow_list_are_refused_on_v1(tmp_path):
    memory = Memory(LanceDBStore(tmp_path / "memory"), embedder=None)
    async with voice_server(memory=memory) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        evil = await http.get("/v1/memory/threads", params={"resource": "a"}, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden_origin"
        same = await http.get("/v1/memory/threads", params={"resource": "a"}, headers={"Origin": vs.http_url})
        assert same.status_code == 200
        assert (await http.get("/healthz", headers={"Origin": "https://evil.example"})).status_code == 200
    await memory.close()


async def test_the_twilio_webhook_takes_an_api_key_not_a_caller_token():
    settings = Settings(api_keys=[ADMIN], auth=AuthConfig(token_secret=SECRET))
    form = {"CallSid": "CA" + "b" * 32, "From": "+14155550100", "To": "+18005550000"}
    async with voice_server(settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        refused = await http.post(f"/v1/twilio/voice?api_key={token('tel:14155550100')}", data=form)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert (await http.post(f"/v1/twilio/voice?api_key={ADMIN}", data=form)).status_code == 200
