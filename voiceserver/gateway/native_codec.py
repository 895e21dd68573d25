"""The native WebSocket protocol (``/v1/voice``), sans-I/O: wire messages <-> session events.

:func:`decode_text` turns a client text frame into an inbound event (an :class:`InvalidInput` with a code and a
message when it cannot be used); :func:`decode_binary` turns a binary frame into audio; :func:`initial_config`
reads the ids a client may put in the URL; :func:`encode_event` turns an outbound event into a text frame (JSON) or
a binary frame (reply audio). Nothing here touches a socket; docs/protocol.md documents every message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..audio.format import PCM16_16K, AudioFormat, validate_format
from ..ids import InvalidIdError, validate_id
from ..session.events import (
    CancelResponse,
    EndSession,
    ErrorEvent,
    Event,
    InputAudio,
    InputCommit,
    InputDtmf,
    InputText,
    InvalidInput,
    Ping,
    Pong,
    ResponseAudio,
    ResponseAudioStarted,
    ResponseCancelled,
    ResponseDone,
    ResponsePaused,
    ResponsePlayed,
    ResponseResumed,
    ResponseStarted,
    ResponseTextDelta,
    SessionClosed,
    SessionConfig,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    StartSession,
    ToolApprovalRequested,
    ToolDecision,
    Transcript,
    TurnMetrics,
    WorkflowEvent,
)

VAD_LIMITS = {"aggressiveness": (0, 3), "silence_ms": (100, 5000), "prefix_ms": (0, 2000), "min_speech_ms": (20, 5000)}
CLIENT_TYPES = ("session.start", "input.text", "input.commit", "input.dtmf", "response.cancel", "response.played",
                "session.end", "tool.approve", "tool.decline", "ping")


MAX_PLAYED_MS = 24 * 3600 * 1000  # a day of reply audio: anything beyond (1e400, NaN) is not a position
ProtocolError = InvalidInput  # what the codec returns for a message it cannot use


def decode_binary(data: bytes, arrived_at: float | None = None) -> InputAudio:
    """A binary frame: caller audio in the session's input format."""
    return InputAudio(data, arrived_at)


def initial_config(query: Mapping[str, str]) -> SessionConfig | InvalidInput:
    """The session defaults a client put in the URL (``?resource=&thread=``)."""
    config = SessionConfig()
    try:
        for key in ("resource", "thread"):
            if query.get(key):
                setattr(config, key, validate_id(query[key], key))
    except InvalidIdError as exc:
        return InvalidInput("invalid_id", str(exc))
    return config


def frame_too_large(size: int, limit: int) -> str:
    """The error sent before closing with 1009."""
    return encode_event(ErrorEvent("frame_too_large", f"frame of {size} bytes; the limit is {limit}"))  # type: ignore


def decode_text(text: str, *, max_text_chars: int = 4000) -> Any:
    """Decode one client text frame into an inbound event, or a ProtocolError."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # ValueError: also a number over 4300 digits, which json refuses
        return ProtocolError("invalid_json", "text frames must be JSON objects")
    if not isinstance(msg, dict):
        return ProtocolError("invalid_message", "text frames must be JSON objects with a \"type\"")
    kind = msg.get("type")
    if kind == "session.start":
        return _session_start(msg)
    if kind == "input.text":
        value = msg.get("text")
        if not isinstance(value, str):
            return ProtocolError("invalid_message", "input.text needs a string \"text\"")
        if len(value) > max_text_chars:
            return ProtocolError("text_too_long",
                                 f"input.text is {len(value)} characters; the limit is {max_text_chars}")
        return InputText(value)
    if kind == "input.commit":
        return InputCommit()
    if kind == "input.dtmf":
        digit = msg.get("digit")
        if not isinstance(digit, str) or len(digit) != 1:
            return ProtocolError("invalid_message", "input.dtmf needs a one-character \"digit\" (0-9, *, #, A-D)")
        return InputDtmf(digit)
    if kind == "response.cancel":
        return CancelResponse()
    if kind == "response.played":
        turn_id, played = msg.get("turn_id"), msg.get("played_ms")
        if not isinstance(turn_id, str) or not _is_number(played) or not 0 <= played <= MAX_PLAYED_MS:
            return ProtocolError("invalid_message", "response.played needs \"turn_id\" and a \"played_ms\" from 0 "
                                                    f"to {MAX_PLAYED_MS}")
        return ResponsePlayed(turn_id, int(played))
    if kind in ("tool.approve", "tool.decline"):
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            return ProtocolError("invalid_message", f"{kind} needs a \"tool_call_id\"")
        reason = msg.get("reason") if isinstance(msg.get("reason"), str) else None
        return ToolDecision(call_id, kind == "tool.approve", reason)
    if kind == "session.end":
        return EndSession()
    if kind == "ping":
        return Ping(msg.get("id") if isinstance(msg.get("id"), str) else None)
    shown = kind if isinstance(kind, str) else json.dumps(kind)
    expected = ", ".join(CLIENT_TYPES)
    return ProtocolError("unknown_type", f"unknown message type {shown[:60]!r}; expected one of: {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _audio_format(value: Any, field: str) -> AudioFormat:
    if value is None:
        return PCM16_16K
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be an object like {{\"encoding\":\"pcm16\",\"sample_rate\":16000}}")
    encoding = value.get("encoding", "pcm16")
    rate = value.get("sample_rate", 8000 if encoding == "mulaw" else 16000)
    try:
        return validate_format(encoding, rate)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def _session_start(msg: dict[str, Any]) -> StartSession | ProtocolError:
    config = SessionConfig()
    try:
        for key in ("resource", "thread"):
            if msg.get(key) is not None:
                setattr(config, key, validate_id(msg[key], key))
        if msg.get("agent") is not None:
            if not isinstance(msg["agent"], str):
                raise ValueError("agent must be a string")
            config.agent = msg["agent"]
        config.input_format = _audio_format(msg.get("audio"), "audio")
        config.output_format = _audio_format(msg.get("output_audio"), "output_audio")
        vad = msg.get("vad") or {}
        if not isinstance(vad, dict):
            raise ValueError("vad must be an object")
        for key, (low, high) in VAD_LIMITS.items():
            if key in vad:
                value = vad[key]
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    raise ValueError(f"vad.{key} must be an integer from {low} to {high}")
                setattr(config, f"vad_{key}", value)
    except InvalidIdError as exc:
        return ProtocolError("invalid_id", str(exc))
    except ValueError as exc:
        code = "invalid_audio_format" if "audio" in str(exc).split(":")[0] else "invalid_message"
        return ProtocolError(code, str(exc))
    return StartSession(config)


def encode_event(event: Event) -> str | bytes | None:
    """Encode an outbound event: JSON text, raw audio bytes, or None for events this protocol does not carry."""
    if isinstance(event, ResponseAudio):
        return event.chunk.audio
    body = _body(event)
    return None if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _body(event: Event) -> dict[str, Any] | None:
    if isinstance(event, SessionStarted):
        return {"type": "session.started", "session_id": event.session_id, "resource": event.resource,
                "thread": event.thread, "agent": event.agent, "audio": event.input_format.to_dict(),
                "output_audio": event.output_format.to_dict()}
    if isinstance(event, SpeechStarted):
        return {"type": "speech.started", "turn_id": event.turn_id, "audio_ms": event.audio_ms,
                "confirmed_ms": event.confirmed_ms}
    if isinstance(event, SpeechStopped):
        return {"type": "speech.stopped", "turn_id": event.turn_id, "audio_ms": event.audio_ms}
    if isinstance(event, Transcript):
        return {"type": "transcript", "turn_id": event.turn_id, "role": event.role, "text": event.text,
                "final": event.final}
    if isinstance(event, ResponseStarted):
        return {"type": "response.started", "turn_id": event.turn_id}
    if isinstance(event, ResponseTextDelta):
        return {"type": "response.text.delta", "turn_id": event.turn_id, "delta": event.delta}
    if isinstance(event, ResponseAudioStarted):
        return {"type": "response.audio.started", "turn_id": event.turn_id, **event.format.to_dict()}
    if isinstance(event, ResponsePaused):
        return {"type": "response.paused", "turn_id": event.turn_id}
    if isinstance(event, ResponseResumed):
        return {"type": "response.resumed", "turn_id": event.turn_id}
    if isinstance(event, ResponseDone):
        return {"type": "response.done", "turn_id": event.turn_id, "text": event.text, "interrupted": event.interrupted}
    if isinstance(event, ResponseCancelled):
        return {"type": "response.cancelled", "turn_id": event.turn_id, "heard_text": event.heard_text,
                "reason": event.reason}
    if isinstance(event, TurnMetrics):
        return {"type": "metrics", "turn_id": event.turn_id, "stt_ms": event.stt_ms,
                "llm_first_token_ms": event.llm_first_token_ms, "tts_first_audio_ms": event.tts_first_audio_ms,
                "voice_to_voice_ms": event.voice_to_voice_ms, **event.extra}
    if isinstance(event, ToolApprovalRequested):
        return {"type": "tool.approval", "turn_id": event.turn_id, "tool_call_id": event.tool_call_id,
                "tool_name": event.tool_name, "args": event.args, "run_id": event.run_id}
    if isinstance(event, WorkflowEvent):
        return {"type": "workflow.event", "run_id": event.run_id, "turn_id": event.turn_id, "event": event.event}
    if isinstance(event, ErrorEvent):
        body = {"type": "error", "code": event.code, "message": event.message}
        if event.turn_id:
            body["turn_id"] = event.turn_id
        return body
    if isinstance(event, Pong):
        return {"type": "pong", "id": event.id}
    if isinstance(event, SessionClosed):
        return {"type": "session.closed", "reason": event.reason}
    return None
