"""The conversation items of one Realtime connection, and the session settings its turn detection stands for.

:class:`Conversation` keeps the items in order (insertion after a given item or at the root, removal, a bound on
their number: the oldest go first, as OpenAI's own context truncation does) and what each one is to the answerer:
new input not yet taken by a response, or context already answered. Private keys (``_consumed``, ``_turn``,
``_origin``) stay on the server; :func:`~voiceserver.gateway.realtime_shapes.render_item` leaves them out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..audio.format import PCM16_16K
from ..session.events import SessionConfig
from .realtime_response import SESSION_OUTPUT
from .realtime_shapes import EAGERNESS_SILENCE_MS, Dialect, RealtimeSettings, render_item


@dataclass
class Identity:
    resource: str | None = None
    thread: str | None = None
    agent: str | None = None


def core_config(settings: RealtimeSettings, identity: Identity) -> SessionConfig:
    """The session settings that follow from the Realtime ones (formats are fixed: the gateway converts)."""
    turn = settings.turn_detection
    config = SessionConfig(resource=identity.resource, thread=identity.thread, agent=identity.agent,
                           input_format=PCM16_16K, output_format=SESSION_OUTPUT)
    if turn is None:  # manual turn-taking: audio is buffered by the gateway and never reaches the session's VAD
        config.auto_respond = config.barge_in = False
        return config
    config.vad_aggressiveness = min(3, int(turn.threshold * 4))  # 0.5 (OpenAI's default) -> 2
    config.vad_prefix_ms = turn.prefix_padding_ms
    config.vad_silence_ms = (EAGERNESS_SILENCE_MS[turn.eagerness] if turn.type == "semantic_vad"
                             else turn.silence_duration_ms)
    config.auto_respond = turn.create_response
    config.barge_in = turn.interrupt_response
    return config


def user_audio_item(item_id: str, turn_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                            "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}
    if turn_id is not None:
        item["_turn"] = turn_id
    return item


def transcript_events(item: dict[str, Any], text: str | None, error: tuple[str, str] | None, dialect: Dialect,
                      report: bool, previous_id: str | None) -> list[dict[str, Any]]:
    """A user audio item got its transcript (or its transcription failed): set it, and the events that say so
    (``...transcription.completed`` only when the client asked for transcription events: ``report``)."""
    index = next((i for i, p in enumerate(item["content"]) if p["type"] == "input_audio"), 0)
    events: list[dict[str, Any]] = []
    if error is not None:
        code, message = error
        item["content"][index]["transcript"] = ""
        events.append({"type": "conversation.item.input_audio_transcription.failed", "item_id": item["id"],
                       "content_index": index, "error": {"type": "server_error", "code": code, "message": message,
                                                         "param": None}})
    else:
        item["content"][index]["transcript"] = text or ""
        if report:
            seconds = round(item.get("_audio_ms", 0) / 1000, 3)
            events.append({"type": "conversation.item.input_audio_transcription.completed", "item_id": item["id"],
                           "content_index": index, "transcript": text or "",
                           "usage": {"type": "duration", "seconds": seconds}})
    events.append({"type": "conversation.item.done", "item": render_item(item, dialect),
                   "previous_item_id": previous_id})
    return events


class Conversation:
    """Ordered, bounded items (see the module notes)."""

    def __init__(self, max_items: int):
        self.max_items = max_items
        self.items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def get(self, item_id: str) -> dict[str, Any] | None:
        return self.items.get(item_id)

    def add(self, item: dict[str, Any], *, after: str | None = None, origin: str = "client") -> None:
        """Append ``item``, or insert it after the item ``after`` ("root": first)."""
        item.setdefault("_origin", origin)
        self.items[item["id"]] = item
        if after == "root":
            self.items.move_to_end(item["id"], last=False)
        elif after is not None and after in self.items:
            keys = list(self.items)
            for key in keys[keys.index(after) + 1:-1]:
                self.items.move_to_end(key)
        while len(self.items) > self.max_items:
            self.items.popitem(last=False)

    def remove(self, item_id: str) -> bool:
        return self.items.pop(item_id, None) is not None

    def last_id(self) -> str | None:
        return next(reversed(self.items), None) if self.items else None

    def previous_of(self, item_id: str) -> str | None:
        previous = None
        for key in self.items:
            if key == item_id:
                return previous
            previous = key
        return previous

    def pending(self, turn_id: str | None) -> list[dict[str, Any]]:
        """Items no response has taken as input yet (the audio item of ``turn_id`` itself left out)."""
        return [item for item in self.items.values() if not item.get("_consumed")
                and (turn_id is None or item.get("_turn") != turn_id) and item.get("_origin") != "response"]

    def context(self, exclude_turn: str | None) -> list[dict[str, Any]]:
        """The conversation an answerer without memory is given: the items already answered, in order."""
        return [item for item in self.items.values() if item.get("_consumed")
                and (exclude_turn is None or item.get("_turn") != exclude_turn)]

    def consume(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            item["_consumed"] = True
