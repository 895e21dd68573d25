"""Identity on values: credentials -> callers, the binding a token imposes on a session (hub and session), the
per-caller limits on a fake clock, and the Origin allow-list."""

import pytest

from voiceserver.agent import Agent
from voiceserver.gateway.hub import SessionHub, close_code
from voiceserver.identity import (
    Authenticator,
    Caller,
    CallerLimits,
    LimitPolicy,
    OriginPolicy,
    RateBuckets,
    Refusal,
    issue_token,
    vouched_call,
)
from voiceserver.metrics import Metrics
from voiceserver.session import SessionDeps
from voiceserver.session.agent_adapter import adapt_agents
from voiceserver.session.events import ErrorEvent, SessionClosed, SessionConfig, SessionStarted, StartSession
from voiceserver.settings import LimitsConfig, Settings, TurnConfig
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS

SECRET = "k" * 32
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def authenticator(**kwargs) -> Authenticator:
    return Authenticator(["admin-key-1"], [SECRET], clock=lambda: NOW, **kwargs)


def token(resource="alice", **kwargs) -> str:
    return issue_token(SECRET, resource, now=NOW, ttl_s=kwargs.pop("ttl_s", 600), **kwargs)


# --- credentials -> callers ---------------------------------------------------------------------------------------


def test_credentials_become_callers():
    auth = authenticator()
    assert auth.identify("admin-key-1", client="10.0.0.1") == Caller("admin", client="10.0.0.1")
    alice = auth.identify(token(thread="t-1", agent="Sales"), client="10.0.0.2")
    assert isinstance(alice, Caller) and alice.role == "token" and alice.bound and not alice.unrestricted
    assert (alice.resource, alice.thread, alice.agent, alice.client) == ("alice", "t-1", "Sales", "10.0.0.2")
    assert alice.key and alice.key not in token(thread="t-1", agent="Sales")
    for presented in (None, "", "admin-key-2", "not.a-token", token().replace("a", "b", 1)):
        refusal = auth.identify(presented)
        assert isinstance(refusal, Refusal) and refusal.code == "unauthorized", presented
        assert (refusal.status, refusal.close_code) == (401, 1008)


def test_an_expired_token_is_refused_with_its_own_code():
    expired = issue_token(SECRET, "alice", now=NOW - 3600, ttl_s=60)
    refusal = authenticator().identify(expired)
    assert isinstance(refusal, Refusal) and refusal.code == "token_expired"


def test_an_open_server_lets_everyone_act_for_anyone_and_keys_only_servers_take_no_tokens():
    open_auth = Authenticator()
    assert open_auth.open and open_auth.identify(None).unrestricted
    keys_only = Authenticator(["k"])
    assert not keys_only.open and keys_only.identify(token()).code == "unauthorized"


def test_a_bound_caller_conflicts_with_other_ids_only():
    alice = Caller("token", resource="alice", thread="t-1")
    assert alice.conflict(None) is None and alice.conflict("alice", "t-1", "Any") is None
    assert "resource" in alice.conflict("bob")
    assert "thread" in alice.conflict("alice", "t-2")
    assert Caller("admin").conflict("bob", "x") is None
    assert alice.owns("alice") and not alice.owns("bob") and not alice.owns(None)
    assert Caller("admin").owns("bob") and Caller("open").owns(None)
    assert Caller("token", resource="a", key="fp").describe() == {"role": "token", "resource": "a", "token": "fp"}


# --- the hub and the session ---------------------------------------------------------------------------------------


def make_hub(*, max_sessions: int = 10, policy: LimitPolicy | None = None, clock: Clock | None = None) -> SessionHub:
    agent = Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel(["Hi."]))
    deps = SessionDeps(stt=ScriptedSTT(["hello"]), tts=ToneTTS(), agents=adapt_agents({"Assistant": agent}),
                       default_agent="Assistant", metrics=Metrics(), limits=LimitsConfig(), turn=TurnConfig())
    return SessionHub(deps, max_sessions=max_sessions, authenticator=authenticator(),
                      limits=CallerLimits(policy or LimitPolicy(), clock=clock or Clock()))


async def drain(session) -> list:
    events = []
    while len(session.outbox):
        events.append(await session.outbox.get())
    return events


async def test_the_hub_binds_a_token_callers_session_to_its_resource():
    hub = make_hub()
    alice = hub.authenticate(token(thread="t-1"), client="10.0.0.2")
    session = hub.open("native", caller=alice, defaults=SessionConfig())
    assert session.defaults.resource == "alice" and session.defaults.thread == "t-1"
    await session.handle(StartSession(SessionConfig()))
    started = next(e for e in await drain(session) if isinstance(e, SessionStarted))
    assert (started.resource, started.thread) == ("alice", "t-1")
    await session.close()
    hub.release(session)


async def test_ids_in_the_url_or_offer_naming_another_caller_are_refused_by_the_hub():
    hub = make_hub()
    alice = hub.authenticate(token())
    for defaults in (SessionConfig(resource="bob"), SessionConfig(resource="alice", agent=None)):
        opened = hub.open("native", caller=alice, defaults=defaults)
        if defaults.resource == "bob":
            assert isinstance(opened, Refusal) and (opened.code, opened.status, opened.close_code) == (
                "forbidden_resource", 403, 1008)
        else:
            assert not isinstance(opened, Refusal)
            hub.release(opened)
    assert not hub.sessions
    admin = hub.authenticate("admin-key-1")
    as_bob = hub.open("native", caller=admin, defaults=SessionConfig(resource="bob"))
    assert as_bob.defaults.resource == "bob"


async def test_a_session_start_naming_another_resource_ends_the_session():
    hub = make_hub()
    session = hub.open("native", caller=hub.authenticate(token()))
    await session.handle(StartSession(SessionConfig(resource="bob")))
    events = await drain(session)
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.code == "forbidden_resource" and "resource" in error.message
    assert not any(isinstance(e, SessionStarted) for e in events)
    closed = next(e for e in events if isinstance(e, SessionClosed))
    assert session.closed and close_code(closed.reason) == 1008
    hub.release(session)


async def test_a_token_bound_to_an_agent_refuses_another_agent():
    hub = make_hub()
    session = hub.open("native", caller=hub.authenticate(token(agent="Assistant")))
    await session.handle(StartSession(SessionConfig(agent="Other")))
    assert any(isinstance(e, ErrorEvent) and e.code == "forbidden_resource" for e in await drain(session))


async def test_a_vouched_call_is_bound_but_not_limited_per_ip():
    hub = make_hub(policy=LimitPolicy(ip_max_sessions=1, token_max_sessions=1))
    calls = [hub.open("twilio", caller=vouched_call(f"tel:{n}", f"tel:{n}:phone", None)) for n in range(3)]
    assert not any(isinstance(c, Refusal) for c in calls)
    assert calls[0].defaults.resource == "tel:0"


async def test_the_server_limit_and_shutdown_are_refusals_too():
    hub = make_hub(max_sessions=1)
    admin = hub.authenticate("admin-key-1")
    first = hub.open("native", caller=admin)
    full = hub.open("native", caller=admin)
    assert isinstance(full, Refusal) and (full.code, full.close_code) == ("server_full", 1013)
    await first.close()
    hub.release(first)
    await hub.shutdown()
    gone = hub.open("native", caller=admin)
    assert isinstance(gone, Refusal) and (gone.code, gone.close_code) == ("server_shutdown", 1001)


# --- limits ----------------------------------------------------------------------------------------------------------


def test_rate_buckets_allow_n_per_minute_and_refill():
    clock = Clock()
    buckets = RateBuckets(3, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b"), "keys are independent"
    clock.t += 20  # a third of a minute: one event's worth
    assert buckets.take("a") and not buckets.take("a")
    assert RateBuckets(0, clock=clock).take("x"), "0 is no limit"


def test_rate_buckets_forget_idle_keys_and_stay_bounded():
    clock = Clock()
    buckets = RateBuckets(5, max_keys=100, clock=clock)
    for i in range(1000):
        buckets.take(f"ip:{i}")
        assert len(buckets) <= 100
    clock.t += 61
    buckets.take("late")
    assert len(buckets) == 1, "buckets idle for a minute are full again, so they are dropped"


def test_caller_limits_count_open_sessions_per_token_and_per_ip():
    limits = CallerLimits(LimitPolicy(token_max_sessions=2, ip_max_sessions=3, token_sessions_per_minute=0,
                                      ip_sessions_per_minute=0))
    one = Caller("token", resource="a", key="t1", client="1.1.1.1")
    two = Caller("token", resource="b", key="t2", client="1.1.1.1")
    tickets = [limits.open_session(one), limits.open_session(one)]
    third = limits.open_session(one)
    assert isinstance(third, Refusal) and (third.code, third.status, third.close_code) == (
        "too_many_sessions", 429, 1013)
    tickets.append(limits.open_session(two))
    by_ip = limits.open_session(two)
    assert isinstance(by_ip, Refusal) and "ip" in by_ip.message
    limits.close_session(tickets[0])
    assert not isinstance(limits.open_session(one), Refusal)
    assert limits.open_sessions("ip:1.1.1.1") == 3
    for admin_like in (Caller("admin", client="1.1.1.1"), Caller("open"), vouched_call("tel:1", None, None)):
        assert not isinstance(limits.open_session(admin_like), Refusal)


def test_caller_limits_rate_new_sessions_and_requests():
    clock = Clock()
    limits = CallerLimits(LimitPolicy(token_sessions_per_minute=2, token_requests_per_minute=3,
                                      ip_requests_per_minute=5), clock=clock)
    alice = Caller("token", resource="a", key="t1", client="2.2.2.2")
    for _ in range(2):
        limits.close_session(limits.open_session(alice))
    refused = limits.open_session(alice)
    assert isinstance(refused, Refusal) and refused.code == "rate_limited"
    answers = [limits.request(alice, "2.2.2.2") for _ in range(4)]
    assert answers[:3] == [None] * 3 and answers[3].code == "rate_limited"
    anonymous = [limits.request(None, "3.3.3.3") for _ in range(6)]
    assert anonymous[:5] == [None] * 5 and anonymous[5].code == "rate_limited"
    assert limits.request(Caller("admin", client="3.3.3.3"), "3.3.3.3") is None
    clock.t += 60
    assert limits.request(None, "3.3.3.3") is None


def test_limit_settings_reach_the_policy():
    policy = LimitPolicy.from_settings(Settings(limits=LimitsConfig(token_max_sessions=7)).limits)
    assert policy.token_max_sessions == 7 and policy.ip_requests_per_minute == 600


# --- origins ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("origin", "host", "allowed"), [
    (None, "voice.example.com", True),                            # not a browser
    ("https://voice.example.com", "voice.example.com", True),     # self, default port
    ("http://voice.example.com:8080", "voice.example.com:8080", True),
    ("https://VOICE.example.com:443", "voice.example.com", True),
    ("https://evil.example", "voice.example.com", False),
    ("https://voice.example.com.evil.example", "voice.example.com", False),
    ("http://voice.example.com:8081", "voice.example.com:8080", False),
    ("http://localhost:5173", "voice.example.com", True),         # local development
    ("http://127.0.0.1:3000", "voice.example.com", True),
    ("http://[::1]:3000", "voice.example.com", True),
    ("http://localhost.evil.example", "voice.example.com", False),
    ("null", "voice.example.com", False),
    ("file://", "voice.example.com", False),
    ("https://app.example.com", "voice.example.com", True),       # listed
    ("https://app.example.com:8443", "voice.example.com", False),
])
def test_the_origin_allow_list(origin, host, allowed):
    policy = OriginPolicy(["self", "localhost", "https://app.example.com"])
    assert policy.allows(origin, host) is allowed


def test_star_allows_any_origin_and_an_empty_list_none():
    assert OriginPolicy(["*"]).allows("null", "x")
    assert not OriginPolicy([]).allows("http://localhost:1", "localhost:1")
    assert OriginPolicy([]).allows(None, "x")


def test_origin_settings_are_validated():
    assert Settings().auth.allowed_origins == ["self", "localhost"]
    from voiceserver.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="allowed_origins"):
        load_settings(overrides={"auth": {"allowed_origins": ["evil.example"]}})


def test_secrets_are_never_echoed_and_are_scrubbed():
    from voiceserver.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(overrides={"auth": {"token_secret": "too-short-secret"}})
    assert "too-short-secret" not in str(caught.value) and "32 characters" in str(caught.value)
    settings = Settings(auth={"token_secret": SECRET, "previous_token_secrets": ["p" * 32]})
    assert SECRET in settings.secrets() and "p" * 32 in settings.secrets()
    assert settings.token_secrets == [SECRET, "p" * 32] and not settings.open_access
    assert Settings().open_access


def test_hub_authorize_is_a_yes_or_no_over_authenticate():
    hub = make_hub()
    assert hub.authorize("nope") is None
    assert hub.authorize(token()).resource == "alice"
