"""Caller tokens on values: issue and verify, expiry with clock skew, signatures, secrets, tampering, the format."""

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceserver.identity import TokenError, issue_token, token_fingerprint, verify_token
from voiceserver.identity.tokens import MAX_TOKEN_CHARS

SECRET = "s" * 40
OTHER = "o" * 40
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: dict, secret: str = SECRET) -> str:
    """A token built by hand from the documented format (not by issue_token)."""
    encoded = b64(json.dumps(payload).encode())
    mac = hmac.new(secret.encode(), b"voiceserver-token." + encoded.encode(), hashlib.sha256).digest()
    return f"{encoded}.{b64(mac)}"


def refused(token: str, *, secrets=(SECRET,), now: float = NOW, skew_s: float = 30.0) -> str:
    with pytest.raises(TokenError) as caught:
        verify_token(token, list(secrets), now=now, skew_s=skew_s)
    return caught.value.code


def test_a_token_carries_its_claims():
    token = issue_token(SECRET, "alice", now=NOW, ttl_s=600, thread="t-1", agent="Sales Desk")
    claims = verify_token(token, [SECRET], now=NOW + 599)
    assert (claims.resource, claims.thread, claims.agent) == ("alice", "t-1", "Sales Desk")
    assert (claims.issued_at, claims.expires_at) == (int(NOW), int(NOW) + 600)
    bare = verify_token(issue_token(SECRET, "bob", now=NOW, ttl_s=60), [SECRET], now=NOW)
    assert (bare.resource, bare.thread, bare.agent) == ("bob", None, None)


def test_the_format_is_the_documented_one():
    token = issue_token(SECRET, "alice", now=NOW, ttl_s=60, thread="t")
    encoded, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert payload == {"v": 1, "resource": "alice", "iat": int(NOW), "exp": int(NOW) + 60, "thread": "t"}
    expected = hmac.new(SECRET.encode(), b"voiceserver-token." + encoded.encode(), hashlib.sha256).digest()
    assert mac == b64(expected)
    assert "=" not in token and len(mac) == 43  # 32 bytes, base64url without padding


def test_an_expired_token_is_refused_after_the_skew():
    token = issue_token(SECRET, "alice", now=NOW, ttl_s=60)
    assert verify_token(token, [SECRET], now=NOW + 60 + 29).resource == "alice"  # within 30 s of skew
    assert refused(token, now=NOW + 60 + 31) == "token_expired"
    assert refused(token, now=NOW + 61, skew_s=0) == "token_expired"


def test_a_token_from_the_future_is_refused_beyond_the_skew():
    token = issue_token(SECRET, "alice", now=NOW + 120, ttl_s=600)
    assert refused(token, now=NOW) == "unauthorized"
    assert verify_token(token, [SECRET], now=NOW + 100).resource == "alice"


def test_wrong_secret_bad_signature_and_no_secret_are_refused():
    token = issue_token(SECRET, "alice", now=NOW, ttl_s=60)
    assert refused(token, secrets=[OTHER]) == "unauthorized"
    encoded, mac = token.split(".")
    flipped = b64(bytes([base64.urlsafe_b64decode(mac + "=")[0] ^ 1]) + base64.urlsafe_b64decode(mac + "=")[1:])
    assert refused(f"{encoded}.{flipped}") == "unauthorized"
    assert refused(token, secrets=[]) == "unauthorized"


def test_a_tampered_payload_is_refused():
    token = issue_token(SECRET, "alice", now=NOW, ttl_s=60)
    encoded, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    for change in ({"resource": "bob"}, {"exp": payload["exp"] + 86400}, {"thread": "bob-thread"}):
        forged = b64(json.dumps({**payload, **change}).encode())
        assert refused(f"{forged}.{mac}") == "unauthorized", change


def test_rotation_accepts_the_previous_secret_and_signs_with_none_of_them():
    old = issue_token(OTHER, "alice", now=NOW, ttl_s=60)
    assert verify_token(old, [SECRET, OTHER], now=NOW).resource == "alice"
    assert refused(old, secrets=[SECRET]) == "unauthorized"  # once the old secret is dropped


@pytest.mark.parametrize("token", [
    "", "abc", "a.b.c", ".mac", "payload.", "pay=load.mac", "a" * (MAX_TOKEN_CHARS + 1),
    "eyJ2IjoxfQ.not base64!", "é.é",
])
def test_malformed_tokens_are_refused(token):
    assert refused(token) == "unauthorized"


@pytest.mark.parametrize("payload", [
    {"v": 2, "resource": "alice", "iat": int(NOW), "exp": int(NOW) + 60},
    {"v": 1, "resource": "x' OR '1'='1", "iat": int(NOW), "exp": int(NOW) + 60},
    {"v": 1, "resource": "alice", "iat": "now", "exp": int(NOW) + 60},
    {"v": 1, "resource": "alice", "iat": int(NOW), "exp": True},
    {"v": 1, "iat": int(NOW), "exp": int(NOW) + 60},
    {"v": 1, "resource": "alice", "iat": int(NOW), "exp": int(NOW) + 60, "agent": "\x00"},
    ["not", "an", "object"],
])
def test_a_signed_but_unusable_payload_is_refused(payload):
    assert refused(signed(payload)) == "unauthorized"


def test_a_hand_built_token_in_the_documented_format_verifies():
    token = signed({"v": 1, "resource": "carol", "iat": int(NOW), "exp": int(NOW) + 5, "agent": "Sales"})
    claims = verify_token(token, [SECRET], now=NOW)
    assert (claims.resource, claims.agent) == ("carol", "Sales")


def test_issue_refuses_what_it_cannot_sign():
    for kwargs in ({"secret": ""}, {"ttl_s": 0}, {"resource": "no spaces"}, {"thread": "../x"}, {"agent": "\n"}):
        args = {"secret": SECRET, "resource": "alice", "now": NOW, "ttl_s": 60, **kwargs}
        with pytest.raises(ValueError):
            issue_token(args.pop("secret"), args.pop("resource"), **args)


def test_fingerprints_name_tokens_without_revealing_them():
    one, two = (issue_token(SECRET, r, now=NOW, ttl_s=60) for r in ("alice", "bob"))
    assert token_fingerprint(one) != token_fingerprint(two)
    assert len(token_fingerprint(one)) == 16 and token_fingerprint(one) not in one


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=63))
def test_any_one_character_change_is_refused(position, replacement):
    """No other spelling of a token is accepted, not even one decoding to the same bytes (that would make one
    token several, each with its own per-token limits)."""
    token = issue_token(SECRET, "alice", now=NOW, ttl_s=60, thread="t-1")
    position %= len(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    changed = token[:position] + alphabet[replacement] + token[position + 1:]
    if changed != token:
        assert refused(changed) == "unauthorized"
