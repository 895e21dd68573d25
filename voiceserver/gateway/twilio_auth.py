"""Twilio's request signatures, the stream token, the public URL, and who a caller is. Pure functions.

- **X-Twilio-Signature** (Twilio's documented algorithm): base64 of HMAC-SHA1, keyed with the account's auth token,
  over the full URL Twilio requested followed by every POST parameter as name + value, sorted by name (values of a
  repeated name sorted too). Twilio is inconsistent about the port, so the URL is checked with and without it. The
  WebSocket upgrade of a Media Stream is signed the same way over its ``wss://`` URL, with no parameters.
- **The stream token**: the webhook (already authenticated) puts an HMAC-SHA256 of the call's SID and the identity
  it chose into a ``<Parameter>``; the stream's ``start`` must carry it back, so nobody can open a session as a
  caller without a call the webhook answered, nor change the ids on the way.
- **Caller identity**: a phone number becomes the resource ``tel:<digits>`` (E.164 without ``+``, which the id
  pattern does not allow); ``client:<name>`` and ``sip:<user>@<host>`` are kept as they are; a withheld number
  (Twilio's ``anonymous``, ``+266696687`` ...) gives no resource, so withheld callers never share a memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from ..ids import ID_PATTERN

# Numbers Twilio puts in From when the caller id is withheld: ANONYMOUS, RESTRICTED, UNKNOWN, BLOCKED on a keypad.
WITHHELD = {"266696687", "7378742833", "8656696", "2562533"}
_PHONE = re.compile(r"\+?[0-9]{3,15}")


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """Twilio's X-Twilio-Signature for ``url`` and the POST ``params`` (name, value pairs, repeats allowed)."""
    pairs = sorted(params, key=lambda kv: (kv[0], kv[1]))
    data = url + "".join(name + value for name, value in pairs)
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """The URL with no port, and with its port (the default one written out when it has none): Twilio signs
    either form, depending on how the URL was configured."""
    parts = urlsplit(url)
    default = 443 if parts.scheme in ("https", "wss") else 80
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    bare = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default}"))
    return list(dict.fromkeys([url, bare, with_port]))


def signature_valid(auth_token: str, signature: str | None, url: str,
                    params: Iterable[tuple[str, str]] = ()) -> bool:
    """True when ``signature`` is Twilio's for ``url`` and ``params`` (constant-time; both port forms)."""
    if not signature:
        return False
    pairs = list(params)
    presented = signature.strip().encode()
    return any(hmac.compare_digest(presented, compute_signature(auth_token, variant, pairs).encode())
               for variant in _port_variants(url))


def stream_token(secret: str, call_sid: str, identity: Mapping[str, str]) -> str:
    """The token the webhook issues for one call and its identity (resource, thread, agent)."""
    fields = "\n".join(f"{k}={identity.get(k, '')}" for k in ("resource", "thread", "agent"))
    digest = hmac.new(secret.encode(), f"twilio-stream\n{call_sid}\n{fields}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def stream_token_valid(secret: str, token: str | None, call_sid: str, identity: Mapping[str, str]) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode(), stream_token(secret, call_sid, identity).encode())


def caller_resource(caller: str | None) -> str | None:
    """The resource id of a caller: ``tel:<digits>`` for a number, ``client:``/``sip:`` ids as they are, None when
    the caller is withheld or the value is not usable as an id."""
    if not caller:
        return None
    value = caller.strip()
    compact = re.sub(r"[\s().-]", "", value)
    if _PHONE.fullmatch(compact):
        digits = compact.lstrip("+")
        return None if digits in WITHHELD else f"tel:{digits}"
    lowered = value.lower()
    if lowered.startswith("sip:"):
        value = value.split(";", 1)[0]  # drop URI parameters (;transport=udp ...)
    elif not lowered.startswith("client:"):
        return None  # "anonymous", "restricted", anything else: no identity
    return value if ID_PATTERN.fullmatch(value) and ".." not in value else None


def public_base_url(configured: str | None, headers: Mapping[str, str], scheme: str) -> str:
    """``scheme://host[:port]`` at which the caller reached us: the setting, else the proxy headers, else Host."""
    if configured:
        return configured.rstrip("/")
    proto = (headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
    host = (headers.get("x-forwarded-host") or "").split(",")[0].strip() or headers.get("host", "")
    if proto not in ("http", "https"):
        proto = "https" if scheme in ("https", "wss") else "http"
    return f"{proto}://{host}"


def websocket_url(base: str, path: str) -> str:
    """The ``wss://`` (or, for a plain-http base, ``ws://``) URL of ``path`` on ``base``."""
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + path
    return "ws://" + base.removeprefix("http://") + path
