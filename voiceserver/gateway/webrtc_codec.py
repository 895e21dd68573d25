"""The WebRTC gateway's wire formats, sans-I/O: the signalling body and the ``events`` data channel.

Signalling is one HTTP exchange: ``POST /v1/webrtc/offer`` with ``{"sdp", "type": "offer", "resource"?, "thread"?,
"agent"?, "vad"?, "token"?}`` is read by :func:`parse_offer` into an :class:`OfferRequest` (the session's defaults and
the offer SDP) or a :class:`SignallingError` (HTTP status, error code, message). The data channel carries the native
protocol's JSON messages both ways: :func:`decode_channel_message` reuses the native decoder, and
:func:`encode_channel_event` the native encoder (reply audio travels on the track instead). Nothing here touches
aiortc or a socket; docs/protocol.md ("WebRTC") documents every message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..audio.format import PCM16_16K, AudioFormat
from ..ids import InvalidIdError, validate_id
from ..session.events import Event, InvalidInput, ResponseAudio, SessionConfig
from .native_codec import VAD_LIMITS, decode_text, encode_event

EVENTS_CHANNEL = "events"
# The outbound track carries Opus at 48 kHz; the session renders replies at that rate so nothing resamples twice.
TRACK_FORMAT = AudioFormat("pcm16", 48000)


@dataclass(slots=True)
class SignallingError:
    """A refused offer or request: the HTTP status and the body ``{"error": {"code", "message"}}``."""

    status: int
    code: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(slots=True)
class OfferRequest:
    """A usable offer: its SDP, the session's defaults and the credential the body carried (if any)."""

    sdp: str
    config: SessionConfig = field(default_factory=SessionConfig)
    token: str | None = None


def session_defaults() -> SessionConfig:
    """A WebRTC session: 16 kHz pcm16 in (the gateway converts the decoded Opus), 48 kHz pcm16 out (the track)."""
    return SessionConfig(input_format=PCM16_16K, output_format=TRACK_FORMAT)


def parse_offer(body: bytes, *, max_bytes: int) -> OfferRequest | SignallingError:
    """Read a signalling body. Errors: 413 ``body_too_large``; 400 ``invalid_offer`` (not a JSON offer, a field of
    the wrong type), ``invalid_id`` (resource/thread), ``invalid_sdp`` (an SDP the server cannot answer)."""
    if len(body) > max_bytes:
        return SignallingError(413, "body_too_large", f"the offer is {len(body)} bytes; the limit is {max_bytes}")
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a number over 4300 digits
        return _invalid("the body must be a JSON object {\"sdp\": \"...\", \"type\": \"offer\"}")
    if not isinstance(msg, dict):
        return _invalid("the body must be a JSON object {\"sdp\": \"...\", \"type\": \"offer\"}")
    if msg.get("type") != "offer":
        return _invalid(f"\"type\" must be \"offer\", got {json.dumps(msg.get('type'))[:40]}")
    sdp = msg.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        return _invalid("\"sdp\" must be the offer's session description (a non-empty string)")
    config = session_defaults()
    try:
        for key in ("resource", "thread"):
            if msg.get(key) is not None:
                setattr(config, key, validate_id(msg[key], key))
    except InvalidIdError as exc:
        return SignallingError(400, "invalid_id", str(exc))
    agent, token, vad = msg.get("agent"), msg.get("token"), msg.get("vad")
    if agent is not None and not isinstance(agent, str):
        return _invalid("\"agent\" must be a string (the name of a configured agent)")
    if token is not None and not isinstance(token, str):
        return _invalid("\"token\" must be a string")
    config.agent = agent or None
    problem = _apply_vad(config, vad)
    if problem:
        return _invalid(problem)
    problem = check_offer_sdp(sdp)
    if problem:
        return SignallingError(400, "invalid_sdp", problem)
    return OfferRequest(sdp=sdp, config=config, token=token or None)


def _invalid(message: str) -> SignallingError:
    return SignallingError(400, "invalid_offer", message)


def _apply_vad(config: SessionConfig, vad: Any) -> str | None:
    if vad is None:
        return None
    if not isinstance(vad, dict):
        return "\"vad\" must be an object like {\"silence_ms\": 500}"
    for key, value in vad.items():
        if key not in VAD_LIMITS:
            return f"unknown vad setting {str(key)[:40]!r}; known: {', '.join(VAD_LIMITS)}"
        low, high = VAD_LIMITS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"vad.{key} must be an integer from {low} to {high}"
        setattr(config, f"vad_{key}", value)
    return None


_SDP_LINE = re.compile(r"[a-z]=.*")


def check_offer_sdp(sdp: str) -> str | None:
    """Why an offer SDP cannot be answered, or None. The checks are structural (RFC 8866 lines, the ICE and DTLS
    attributes WebRTC requires); aiortc's own parser then reads the rest."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        return "an SDP offer starts with the line v=0"
    bad = next((line for line in lines if not _SDP_LINE.fullmatch(line)), None)
    if bad is not None:
        return f"not an SDP line: {bad[:60]!r} (lines are <letter>=<value>)"
    media = [line.split()[0][2:] for line in lines if line.startswith("m=")]
    if "audio" not in media:
        return "the offer has no audio m-line: add the microphone track (or a recvonly audio transceiver)"
    if "application" not in media:
        return f"the offer has no application m-line: create the {EVENTS_CHANNEL!r} data channel before the offer"
    unused = sorted(set(media) - {"audio", "application"})
    if unused:
        return f"the offer has {', '.join(unused)} m-lines: offer audio and the {EVENTS_CHANNEL!r} channel only"
    for attribute in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"):
        if not any(line.startswith(attribute) for line in lines):
            return f"the offer has no {attribute[2:-1]} attribute (WebRTC needs ICE credentials and a DTLS fingerprint)"
    return None


def answer_body(sdp: str, session_id: str) -> dict[str, Any]:
    return {"sdp": sdp, "type": "answer", "session_id": session_id}


def decode_channel_message(data: str | bytes, *, max_text_chars: int, max_message_bytes: int) -> Any:
    """A data channel message -> an inbound session event (an InvalidInput when it cannot be used).

    The native decoder reads it, with two WebRTC rules: audio travels on the track, never as a binary message; and
    the server counts what its track sent, so a client's ``response.played`` is not used."""
    if isinstance(data, bytes | bytearray):
        return InvalidInput("invalid_message", "binary messages are not used on the events channel: audio travels "
                                               "on the microphone track")
    if len(data) > max_message_bytes:
        return InvalidInput("frame_too_large",
                            f"message of {len(data)} characters; the limit is {max_message_bytes}")
    event = decode_text(data, max_text_chars=max_text_chars)
    if type(event).__name__ == "ResponsePlayed":
        return InvalidInput("invalid_message", "response.played is not used over WebRTC: the server counts the reply "
                                               "audio its track sent")
    return event


def encode_channel_event(event: Event) -> str | None:
    """An outbound event as a data channel message (the native JSON), or None for reply audio (the track's)."""
    if isinstance(event, ResponseAudio):
        return None
    payload = encode_event(event)
    return payload if isinstance(payload, str) else None


def browser_ice_servers(servers: Iterable[Any]) -> list[dict[str, Any]]:
    """The configured ICE servers as the browser's ``RTCIceServer`` dictionaries."""
    out = []
    for server in servers:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username:
            entry["username"] = server.username
        if server.credential is not None:
            entry["credential"] = server.credential.get_secret_value()
        out.append(entry)
    return out


def credential_from(headers: Any, query: Any, token: str | None = None) -> str | None:
    """What a signalling request presented: ``Authorization: Bearer``, ``?api_key=``, or the body's ``token``
    (the same rule as ``/v1/voice``, plus the body field a browser can set without custom headers)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("api_key") or token
