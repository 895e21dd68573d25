"""One Realtime response as the client sees it: its ids and indices, its output items, the audio it was sent, and
the server events that describe it (``response.created`` ... ``response.done``). Pure: values in, event dicts out.

A response maps onto one session turn. Its assistant message item is opened at the first reply text (the session
sends text phrase by phrase, before that phrase's audio), its audio deltas carry reply audio converted to the
response's output format and cut into pieces of at most ``delta_bytes``, and the phrase timeline (which phrase each
millisecond of audio belongs to) is kept so that ``conversation.item.truncate`` can tell what the caller heard.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from ..audio import StreamConverter
from ..audio.format import AudioFormat
from ..ids import new_id
from ..session.playback import PlaybackTracker
from .realtime_shapes import PCM24, Dialect, ResponseParams, render_format, render_item

SESSION_OUTPUT = PCM24  # the format the session speaks in to this gateway


@dataclass
class RealtimeResponse:
    params: ResponseParams
    audio_output: bool
    output_format: AudioFormat
    voice: str
    max_output_tokens: int | None
    delta_bytes: int
    id: str = field(default_factory=lambda: new_id("resp"))
    turn_id: str | None = None
    status: str = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None
    text: str = ""
    phrases: list[str] = field(default_factory=list)
    timeline: PlaybackTracker = field(default_factory=PlaybackTracker)
    phrase_index: int = -1
    cancel_reason: str | None = None
    cancel_requested: bool = False  # cancelled before its session turn had started
    error: dict[str, Any] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    heard: str | None = None  # set by a truncate: what the item's transcript keeps
    _converter: StreamConverter | None = None

    @property
    def out_of_band(self) -> bool:
        return self.params.out_of_band

    @property
    def audio_ms(self) -> float:
        return self.timeline.sent_ms

    # --- the message item -------------------------------------------------------------------------------------

    def open_message(self) -> list[dict[str, Any]]:
        """The events that open the assistant message (once, at the first text)."""
        if self.message is not None:
            return []
        kind = "output_audio" if self.audio_output else "output_text"
        part = {"type": kind, "transcript": ""} if self.audio_output else {"type": kind, "text": ""}
        self.message = {"id": new_id("item"), "object": "realtime.item", "type": "message", "role": "assistant",
                        "status": "in_progress", "content": [part]}
        self.output.append(self.message)
        return [self._item_event("response.output_item.added", self.message),
                {"type": "response.content_part.added", "response_id": self.id, "item_id": self.message["id"],
                 "output_index": 0, "content_index": 0, "part": self._part(final=False)}]

    def text_delta(self, delta: str) -> dict[str, Any]:
        assert self.message is not None
        self.text += delta
        if delta.strip():
            self.phrases.append(delta.strip())
        kind = "response.output_audio_transcript.delta" if self.audio_output else "response.output_text.delta"
        return {"type": kind, "response_id": self.id, "item_id": self.message["id"], "output_index": 0,
                "content_index": 0, "delta": delta}

    def audio(self, pcm24k: bytes, phrase_index: int, now: float) -> list[dict[str, Any]]:
        """Reply audio (pcm16 at 24 kHz from the session) as audio deltas in the output format."""
        if not self.audio_output or self.message is None:
            return []
        if phrase_index != self.phrase_index:
            self.timeline.end_phrase()
            self.phrase_index = phrase_index
            self.timeline.begin_phrase(self.phrases[phrase_index] if phrase_index < len(self.phrases) else "")
        self.timeline.add_audio(SESSION_OUTPUT.ms_for_bytes(len(pcm24k)), now)
        return self._deltas(self._convert(pcm24k))

    def heard_at(self, audio_end_ms: float) -> str:
        """The words the caller heard when playback stopped ``audio_end_ms`` into this response's audio."""
        self.timeline.reported_played_ms = None
        self.timeline.report_played(audio_end_ms)
        self.heard = self.timeline.heard_text()
        if self.message is not None and self.status != "in_progress":
            self.message["content"][0]["transcript"] = self.heard
        return self.heard

    def _convert(self, pcm24k: bytes) -> bytes:
        if self.output_format == SESSION_OUTPUT:
            return pcm24k
        if self._converter is None:
            self._converter = StreamConverter(SESSION_OUTPUT, self.output_format)
        return self._converter.convert(pcm24k)

    def _deltas(self, data: bytes) -> list[dict[str, Any]]:
        assert self.message is not None
        step = max(self.delta_bytes, 2)
        return [{"type": "response.output_audio.delta", "response_id": self.id, "item_id": self.message["id"],
                 "output_index": 0, "content_index": 0,
                 "delta": base64.b64encode(data[i:i + step]).decode("ascii")} for i in range(0, len(data), step)]

    def _part(self, *, final: bool) -> dict[str, Any]:
        text = self.text if final else ""
        return {"type": "audio", "transcript": text} if self.audio_output else {"type": "text", "text": text}

    def _item_event(self, kind: str, item: dict[str, Any], index: int | None = None) -> dict[str, Any]:
        position = index if index is not None else self.output.index(item)
        return {"type": kind, "response_id": self.id, "output_index": position, "item": item}

    # --- the end ------------------------------------------------------------------------------------------------

    def finish(self, *, interrupted: bool, function_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The closing events: the message's .done events, the function calls, then the caller decides on
        response.done (see :meth:`done_event`)."""
        if interrupted:
            self.status = "cancelled"
        elif self.error is not None:
            self.status = "failed"
        elif self.finish_reason == "length":
            self.status = "incomplete"
        else:
            self.status = "completed"
        events: list[dict[str, Any]] = []
        message = self.message
        if message is not None:
            if self._converter is not None:
                events += self._deltas(self._converter.flush())
            item_id = message["id"]
            base = {"response_id": self.id, "item_id": item_id, "output_index": 0, "content_index": 0}
            if self.audio_output:
                events.append({"type": "response.output_audio.done", **base})
                events.append({"type": "response.output_audio_transcript.done", **base, "transcript": self.text})
                message["content"][0]["transcript"] = self.heard if self.heard is not None else self.text
            else:
                events.append({"type": "response.output_text.done", **base, "text": self.text})
                message["content"][0]["text"] = self.text
            events.append({"type": "response.content_part.done", **base, "part": self._part(final=True)})
            message["status"] = "completed" if self.status == "completed" else "incomplete"
            events.append(self._item_event("response.output_item.done", message))
        for call in function_calls if not interrupted else []:
            self.output.append(call)
            index = len(self.output) - 1
            base = {"response_id": self.id, "item_id": call["id"], "output_index": index, "call_id": call["call_id"]}
            events.append(self._item_event("response.output_item.added",
                                           {**call, "status": "in_progress", "arguments": ""}, index))
            events.append({"type": "response.function_call_arguments.delta", **base, "delta": call["arguments"]})
            events.append({"type": "response.function_call_arguments.done", **base, "name": call["name"],
                           "arguments": call["arguments"]})
            events.append(self._item_event("response.output_item.done", call))
        return events

    def status_details(self) -> dict[str, Any] | None:
        if self.status == "cancelled":
            return {"type": "cancelled", "reason": self.cancel_reason or "client_cancelled"}
        if self.status == "incomplete":
            return {"type": "incomplete", "reason": "max_output_tokens"}
        if self.status == "failed":
            return {"type": "failed", "error": self.error}
        return None

    def render(self, dialect: Dialect, *, final: bool) -> dict[str, Any]:
        """The ``response`` object of response.created (``final`` False) and response.done."""
        usage = None
        if final:
            prompt = int(self.usage.get("prompt_tokens", 0))
            completion = int(self.usage.get("completion_tokens", 0))
            cached = int(self.usage.get("cached_tokens", 0))
            usage = {"total_tokens": prompt + completion, "input_tokens": prompt, "output_tokens": completion,
                     "input_token_details": {"text_tokens": prompt, "audio_tokens": 0, "cached_tokens": cached,
                                             "image_tokens": 0,
                                             "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0,
                                                                       "image_tokens": 0}},
                     "output_token_details": {"text_tokens": completion, "audio_tokens": 0}}
        max_tokens: Any = self.max_output_tokens if self.max_output_tokens is not None else "inf"
        body: dict[str, Any] = {
            "id": self.id, "object": "realtime.response", "status": self.status if final else "in_progress",
            "status_details": self.status_details() if final else None,
            "output": [render_item(item, dialect) for item in self.output] if final else [],
            "usage": usage, "conversation_id": None if self.out_of_band else "conv_default",
            "max_output_tokens": max_tokens, "metadata": self.params.metadata}
        if dialect == "beta":
            body.update({"modalities": ["text", "audio"] if self.audio_output else ["text"], "voice": self.voice,
                         "output_audio_format": render_format(self.output_format, dialect), "temperature": 0.8})
        else:
            body.update({"output_modalities": ["audio"] if self.audio_output else ["text"],
                         "audio": {"output": {"format": render_format(self.output_format, dialect),
                                              "voice": self.voice}}})
        return body

    def rate_limits(self) -> dict[str, Any]:
        """``rate_limits.updated``: the server keeps no request or token quota; the one figure is this response's
        output token cap and what is left of it."""
        cap = self.max_output_tokens or 4096
        used = int(self.usage.get("completion_tokens", 0))
        return {"type": "rate_limits.updated",
                "rate_limits": [{"name": "tokens", "limit": cap, "remaining": max(cap - used, 0),
                                 "reset_seconds": 0.0}]}


def truncate_problem(item: dict[str, Any], response: RealtimeResponse | None, content_index: int,
                     audio_end_ms: int) -> tuple[str, str] | None:
    """Why ``conversation.item.truncate`` cannot apply to ``item`` (message, param), or None."""
    content = item.get("content") or []
    if response is None or content_index >= len(content) or content[content_index]["type"] != "output_audio":
        return "Only the audio of an assistant message can be truncated.", "content_index"
    if audio_end_ms > response.audio_ms + 1:
        return f"Audio content of {response.audio_ms:.0f}ms is shorter than {audio_end_ms}ms.", "audio_end_ms"
    return None
