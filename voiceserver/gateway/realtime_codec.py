"""OpenAI Realtime events, sans-I/O: a client text frame -> one typed client event (or a :class:`ClientError`), and
server events -> JSON text in the connection's dialect.

Client event names are the same in both dialects; the values inside differ (realtime_shapes.py parses them). Server
events are built with their GA names; :func:`encode` renames them for a beta connection
(``response.output_audio.delta`` -> ``response.audio.delta``, ``conversation.item.added`` ->
``conversation.item.created``...) and leaves out the GA-only ``conversation.item.done``. Every server event gets
an ``event_id``. Errors have OpenAI's shape: ``{"type": "error", "event_id", "error": {"type", "code", "message",
"param", "event_id"}}``, where ``error.event_id`` names the client event that caused it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..ids import new_id
from .realtime_shapes import (
    ITEM_ID,
    MAX_EVENT_ERROR_CHARS,
    Dialect,
    Limits,
    ResponseParams,
    ShapeError,
    cut_message,
    decode_base64,
    parse_item,
    parse_response,
)

CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "conversation.item.create", "conversation.item.truncate",
                 "conversation.item.delete", "conversation.item.retrieve", "response.create", "response.cancel",
                 "output_audio_buffer.clear")
GA_TO_BETA = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
GA_ONLY = frozenset({"conversation.item.done"})


# --- client events -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ClientEvent:
    """Base of the decoded client events; ``event_id`` is the client's own id (may be None)."""

    event_id: str | None


@dataclass(slots=True)
class SessionUpdate(ClientEvent):
    session: Any  # applied by realtime_shapes.apply_session against the current settings


@dataclass(slots=True)
class AudioAppend(ClientEvent):
    audio: bytes


@dataclass(slots=True)
class AudioCommit(ClientEvent):
    pass


@dataclass(slots=True)
class AudioClear(ClientEvent):
    pass


@dataclass(slots=True)
class ItemCreate(ClientEvent):
    item: dict[str, Any]
    previous_item_id: str | None = None


@dataclass(slots=True)
class ItemTruncate(ClientEvent):
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(slots=True)
class ItemDelete(ClientEvent):
    item_id: str


@dataclass(slots=True)
class ItemRetrieve(ClientEvent):
    item_id: str


@dataclass(slots=True)
class ResponseCreate(ClientEvent):
    params: ResponseParams


@dataclass(slots=True)
class ResponseCancel(ClientEvent):
    response_id: str | None = None


@dataclass(slots=True)
class OutputAudioClear(ClientEvent):
    pass


@dataclass(slots=True)
class ClientError:
    """A client frame that cannot be used; becomes one ``error`` event, the session goes on."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


def decode_client(text: str | bytes, dialect: Dialect, limits: Limits) -> ClientEvent | ClientError:
    """One client frame (JSON text) as a client event, or the error to send back."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a number over 4300 digits
        return ClientError("invalid_json", "We could not parse the JSON body of your request: every client event "
                                           "is a JSON object with a \"type\".")
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return ClientError("invalid_event", "A client event is a JSON object with a string \"type\".", "type")
    event_id = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
    kind = msg["type"]
    try:
        return _decode(kind, msg, event_id, dialect, limits)
    except ShapeError as exc:
        return ClientError(exc.code, str(exc), exc.param, event_id)


def _decode(kind: str, msg: dict[str, Any], event_id: str | None, dialect: Dialect,
            limits: Limits) -> ClientEvent | ClientError:
    if kind == "session.update":
        if not isinstance(msg.get("session"), dict):
            raise ShapeError("Missing required parameter: 'session'.", "session", "missing_required_parameter")
        return SessionUpdate(event_id, msg["session"])
    if kind == "input_audio_buffer.append":
        if "audio" not in msg:
            raise ShapeError("Missing required parameter: 'audio'.", "audio", "missing_required_parameter")
        return AudioAppend(event_id, decode_base64(msg["audio"], "audio"))
    if kind == "input_audio_buffer.commit":
        return AudioCommit(event_id)
    if kind == "input_audio_buffer.clear":
        return AudioClear(event_id)
    if kind == "conversation.item.create":
        if "item" not in msg:
            raise ShapeError("Missing required parameter: 'item'.", "item", "missing_required_parameter")
        previous = msg.get("previous_item_id")
        if previous is not None and not isinstance(previous, str):
            raise ShapeError("Invalid type for 'previous_item_id': expected a string.", "previous_item_id",
                             "invalid_type")
        return ItemCreate(event_id, parse_item(msg["item"], dialect, limits), previous)
    if kind == "conversation.item.truncate":
        item_id = _item_id(msg)
        index, end = msg.get("content_index", 0), msg.get("audio_end_ms")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ShapeError("Invalid 'content_index': a non-negative integer.", "content_index")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise ShapeError("Invalid 'audio_end_ms': a non-negative integer.", "audio_end_ms")
        return ItemTruncate(event_id, item_id, index, end)
    if kind == "conversation.item.delete":
        return ItemDelete(event_id, _item_id(msg))
    if kind == "conversation.item.retrieve":
        return ItemRetrieve(event_id, _item_id(msg))
    if kind == "response.create":
        return ResponseCreate(event_id, parse_response(msg.get("response"), dialect, limits))
    if kind == "response.cancel":
        response_id = msg.get("response_id")
        return ResponseCancel(event_id, response_id if isinstance(response_id, str) else None)
    if kind == "output_audio_buffer.clear":
        return OutputAudioClear(event_id)
    supported = ", ".join(f"'{name}'" for name in CLIENT_EVENTS)
    shown = kind[:60]
    return ClientError("unknown_event", f"Invalid value: '{shown}'. Supported values are: {supported}.", "type",
                       event_id)


def _item_id(msg: dict[str, Any]) -> str:
    item_id = msg.get("item_id")
    if not isinstance(item_id, str) or not ITEM_ID.fullmatch(item_id):
        raise ShapeError("Missing required parameter: 'item_id'.", "item_id", "missing_required_parameter")
    return item_id


# --- server events -------------------------------------------------------------------------------------------------


def error_event(code: str, message: str, *, param: str | None = None, event_id: str | None = None,
                kind: str = "invalid_request_error") -> dict[str, Any]:
    """An ``error`` server event (``kind``: invalid_request_error for the client's input, server_error else)."""
    message = cut_message(message, MAX_EVENT_ERROR_CHARS)
    return {"type": "error", "error": {"type": kind, "code": code, "message": message, "param": param,
                                       "event_id": event_id}}


def encode(event: dict[str, Any], dialect: Dialect) -> str | None:
    """A server event (GA names) as JSON text for this dialect; None for an event the dialect does not have."""
    kind = event["type"]
    if dialect == "beta":
        if kind in GA_ONLY:
            return None
        if kind in GA_TO_BETA:
            event = {**event, "type": GA_TO_BETA[kind]}
    if "event_id" not in event:
        event = {"event_id": new_id("event"), **event}
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
