"""The Realtime conversation of one connection, sans-I/O: client events and session events in, actions out.

The mapper holds what the protocol makes the server remember — the session settings, the conversation items, the
response in progress, the input audio buffer of manual turn-taking — and maps it onto the session core:

- ``server_vad`` / ``semantic_vad``: appended audio goes to the session (its VAD ends utterances); speech events
  become ``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` and a user item; the
  session's transcript becomes ``...input_audio_transcription.completed``. ``create_response`` and
  ``interrupt_response`` are the session's ``auto_respond`` and ``barge_in``.
- ``turn_detection: null``: audio is buffered here (bounded) until ``input_audio_buffer.commit`` makes it a user
  item; it is transcribed outside any turn (:class:`Transcribe`).
- ``response.create``: the items created since the last response are the new input; the session is asked for a
  turn with typed input (:class:`Drive` of ``InputText``), and the answerer (realtime_port.py) reads the
  response's parameters from :attr:`port_requests`. A response waits for pending transcriptions first.
- Session reply events become the response events (realtime_response.py).

Actions are returned in order: :class:`Send` a server event, :class:`Drive` the session with an inbound event,
:class:`Transcribe` an item's audio, :class:`Mark` (queue a marker behind what the session has queued so far),
:class:`ReplaceHeard` (tell the answerer what was heard of a finished reply).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..audio import StreamConverter
from ..audio.format import PCM16_16K
from ..ids import new_id
from ..session.events import (
    CancelResponse,
    ClearInput,
    ErrorEvent,
    InputAudio,
    InputCommit,
    InputText,
    ResponseAudio,
    ResponseCancelled,
    ResponseDone,
    ResponsePlayed,
    ResponseStarted,
    ResponseTextDelta,
    SessionConfig,
    SpeechStarted,
    SpeechStopped,
    StartSession,
    Transcript,
    UpdateSession,
)
from . import realtime_codec as codec
from .realtime_items import Conversation, Identity, core_config, transcript_events, user_audio_item
from .realtime_response import RealtimeResponse, truncate_problem
from .realtime_shapes import (
    Dialect,
    Limits,
    RealtimeSettings,
    ResponseParams,
    ShapeError,
    apply_session,
    item_text,
    render_item,
    render_session,
)

TRIGGER = "(the client asked for a response)"  # typed input of a response with no new words
MIN_COMMIT_MS = 100
CLIENT_ERROR_CODES = ("text_too_long", "empty_text", "invalid_message", "invalid_json", "unknown_type")


def _too_small(buffered_ms: float) -> str:
    return (f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of audio, "
            f"but buffer only has {buffered_ms:.2f}ms of audio.")


@dataclass(slots=True)
class Send:
    event: dict[str, Any]


@dataclass(slots=True)
class Drive:
    event: Any


@dataclass(slots=True)
class Transcribe:
    item_id: str
    audio: bytes  # 16 kHz pcm16


@dataclass(slots=True)
class Mark:
    name: str


@dataclass(slots=True)
class ReplaceHeard:
    turn_id: str
    heard_text: str


@dataclass(frozen=True)
class RealtimeLimits(Limits):
    max_buffer_ms: int = 60_000
    max_items: int = 500
    audio_delta_ms: int = 200
    max_trigger_chars: int = 4000


@dataclass
class TurnNotes:
    """What the answerer reports about a turn: the client function calls it made, how it finished, its usage."""

    function_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


class TurnLedger(dict[str, TurnNotes]):
    """The answerer's notes by turn id, kept until the turn's response is done (the last 32 at most)."""

    def for_turn(self, turn_id: str | None) -> TurnNotes:
        key = turn_id or ""
        if key not in self:
            if len(self) >= 32:
                self.pop(next(iter(self)))
            self[key] = TurnNotes()
        return self[key]


class RealtimeConversation:
    """See the module notes. ``now`` values are the session clock (for the arrival of audio)."""

    def __init__(self, *, dialect: Dialect, settings: RealtimeSettings, limits: RealtimeLimits, session_id: str,
                 identity: Identity):
        self.dialect = dialect
        self.settings = settings
        self.limits = limits
        self.session_id = session_id
        self.identity = identity
        self.conversation = Conversation(limits.max_items)
        self.turn_items: dict[str, str] = {}  # session turn id -> the user audio item it made
        self.answered_turns: set[str] = set()  # audio turns whose words an answer already took as input
        self.responses: dict[str, RealtimeResponse] = {}  # by session turn id, the last few (truncate needs them)
        self.by_item: dict[str, RealtimeResponse] = {}
        self.active: RealtimeResponse | None = None
        self.requested: RealtimeResponse | None = None  # asked for, not yet bound to a session turn
        self.waiting: RealtimeResponse | None = None  # asked for, waiting for transcriptions
        self.port_requests: deque[RealtimeResponse] = deque(maxlen=4)  # what the answerer reads at open_turn
        self.notes = TurnLedger()
        self.transcribing: set[str] = set()
        self.core_started = False
        self._buffer = bytearray()  # manual turn-taking: 16 kHz pcm16 not committed yet
        self._input = StreamConverter(settings.input_format, PCM16_16K)
        self._stopped_since_commit = False
        self._speech_started_ms = 0

    # --- the session's view -------------------------------------------------------------------------------------

    @property
    def manual(self) -> bool:
        return self.settings.turn_detection is None

    def core_config(self) -> SessionConfig:
        return core_config(self.settings, self.identity)

    def _core(self) -> list[Any]:
        if self.core_started:
            return []
        self.core_started = True
        return [Drive(StartSession(self.core_config()))]

    def session_created(self) -> dict[str, Any]:
        return {"type": "session.created", "session": render_session(self.settings, self.dialect, self.session_id)}

    # --- client events ----------------------------------------------------------------------------------------

    def on_client(self, event: Any, now: float) -> list[Any]:
        """The actions for one decoded client event (or a codec error)."""
        if isinstance(event, codec.ClientError):
            return [self._error(event.code, event.message, event.param, event.event_id)]
        handler = getattr(self, "_on_" + type(event).__name__)
        try:
            return handler(event, now)
        except ShapeError as exc:
            return [self._error(exc.code, str(exc), exc.param, event.event_id)]

    def _on_SessionUpdate(self, ev: codec.SessionUpdate, now: float) -> list[Any]:
        before = self.settings
        after = apply_session(before, ev.session, self.dialect, self.limits)
        self.settings = after
        actions: list[Any] = []
        if after.input_format != before.input_format:
            self._input = StreamConverter(after.input_format, PCM16_16K)
        if self.core_started and core_config(after, self.identity) != core_config(before, self.identity):
            actions.append(Drive(UpdateSession(self.core_config())))
            if after.turn_detection is None and before.turn_detection is not None:
                actions.append(Drive(ClearInput()))  # manual from now on: audio is buffered here
        if after.turn_detection is not None and before.turn_detection is None and self._buffer:
            actions += self._core() + [Drive(InputAudio(bytes(self._buffer), now))]
            self._buffer.clear()
        actions.append(Send({"type": "session.updated",
                             "session": render_session(after, self.dialect, self.session_id)}))
        return actions

    def _on_AudioAppend(self, ev: codec.AudioAppend, now: float) -> list[Any]:
        pcm = self._input.convert(ev.audio)
        if not self.manual:
            return [*self._core(), Drive(InputAudio(pcm, now))]
        if len(self._buffer) + len(pcm) > PCM16_16K.bytes_for_ms(self.limits.max_buffer_ms):
            return [self._error("input_audio_buffer_full", f"The input audio buffer holds at most "
                                f"{self.limits.max_buffer_ms} ms; commit or clear it.", "audio", ev.event_id)]
        self._buffer += pcm
        return []

    def _on_AudioCommit(self, ev: codec.AudioCommit, now: float) -> list[Any]:
        if not self.manual:
            self._stopped_since_commit = False
            return [*self._core(), Drive(InputCommit()), Mark("commit")]
        self._buffer += self._input.flush()  # the resampler's last few samples belong to this commit
        buffered_ms = PCM16_16K.ms_for_bytes(len(self._buffer))
        if buffered_ms < MIN_COMMIT_MS:
            return [self._error("input_audio_buffer_commit_empty", _too_small(buffered_ms), None, ev.event_id)]
        audio = bytes(self._buffer)
        self._buffer.clear()
        item = user_audio_item(new_id("item"))
        item["_audio_ms"] = buffered_ms
        actions = [Send({"type": "input_audio_buffer.committed", "item_id": item["id"],
                         "previous_item_id": self.conversation.last_id()})]
        actions += self._add_item(item, done=False)
        self.transcribing.add(item["id"])
        return [*actions, Transcribe(item["id"], audio)]

    def _on_AudioClear(self, ev: codec.AudioClear, now: float) -> list[Any]:
        self._buffer.clear()
        drive = [Drive(ClearInput())] if self.core_started else []
        return [*drive, Send({"type": "input_audio_buffer.cleared"})]

    def _on_ItemCreate(self, ev: codec.ItemCreate, now: float) -> list[Any]:
        item = ev.item
        item_id = item.setdefault("id", new_id("item"))
        if item_id in self.conversation:
            return [self._error("duplicate_item_id", f"Item with id '{item_id}' already exists.", "item.id",
                                ev.event_id)]
        if ev.previous_item_id not in (None, "root") and ev.previous_item_id not in self.conversation:
            return [self._error("item_not_found", f"Item with item_id not found: {ev.previous_item_id}",
                                "previous_item_id", ev.event_id)]
        audio = [part.pop("_audio") for part in item.get("content") or [] if "_audio" in part]
        needs_transcript = bool(audio) and any(p.get("type") == "input_audio" and p.get("transcript") is None
                                               for p in item["content"])
        actions = self._add_item(item, done=not needs_transcript, after=ev.previous_item_id)
        if needs_transcript:
            converter = StreamConverter(self.settings.input_format, PCM16_16K)
            self.transcribing.add(item_id)
            actions.append(Transcribe(item_id, converter.convert(b"".join(audio)) + converter.flush()))
        return actions

    def _on_ItemTruncate(self, ev: codec.ItemTruncate, now: float) -> list[Any]:
        item, response = self.conversation.get(ev.item_id), self.by_item.get(ev.item_id)
        if item is None:
            return [self._missing(ev.item_id, ev.event_id)]
        problem = truncate_problem(item, response, ev.content_index, ev.audio_end_ms)
        if problem is not None or response is None:
            message, param = problem or ("", None)
            return [self._error("invalid_value", message, param, ev.event_id)]
        heard = response.heard_at(ev.audio_end_ms)
        actions: list[Any] = []
        if response is self.active and response.turn_id is not None:
            actions += [Drive(ResponsePlayed(response.turn_id, ev.audio_end_ms)), Drive(CancelResponse())]
        elif response.turn_id is not None:
            actions.append(ReplaceHeard(response.turn_id, heard))
        return [*actions, Send({"type": "conversation.item.truncated", "item_id": ev.item_id,
                                "content_index": ev.content_index, "audio_end_ms": ev.audio_end_ms})]

    def _on_ItemDelete(self, ev: codec.ItemDelete, now: float) -> list[Any]:
        if not self.conversation.remove(ev.item_id):
            return [self._missing(ev.item_id, ev.event_id)]
        return [Send({"type": "conversation.item.deleted", "item_id": ev.item_id})]

    def _on_ItemRetrieve(self, ev: codec.ItemRetrieve, now: float) -> list[Any]:
        item = self.conversation.get(ev.item_id)
        if item is None:
            return [self._missing(ev.item_id, ev.event_id)]
        return [Send({"type": "conversation.item.retrieved", "item": render_item(item, self.dialect)})]

    def _on_ResponseCreate(self, ev: codec.ResponseCreate, now: float) -> list[Any]:
        busy = self.active or self.requested or self.waiting
        if busy is not None:
            return [self._error("conversation_already_has_active_response", "Conversation already has an active "
                                f"response in progress: {busy.id}. Wait until the response is finished before "
                                "creating a new one.", None, ev.event_id)]
        response = self._new_response(ev.params)
        self.requested = response
        actions = [Send({"type": "response.created", "response": response.render(self.dialect, final=False)})]
        if self.transcribing and not response.out_of_band and ev.params.input is None:
            self.waiting = response  # its input is still being transcribed
            return actions
        return actions + self._start(response)

    def _on_ResponseCancel(self, ev: codec.ResponseCancel, now: float) -> list[Any]:
        target = self.active or self.requested or self.waiting
        if target is None or (ev.response_id is not None and ev.response_id != target.id):
            return [self._error("response_cancel_not_active", "Cancellation failed: no active response found.",
                                None, ev.event_id)]
        return self._cancel(target)

    def _on_OutputAudioClear(self, ev: codec.OutputAudioClear, now: float) -> list[Any]:
        target = self.active or self.requested
        cancel = self._cancel(target) if target is not None else []
        return [*cancel, Send({"type": "output_audio_buffer.cleared",
                               "response_id": target.id if target else None})]

    def _cancel(self, target: RealtimeResponse) -> list[Any]:
        target.cancel_reason = "client_cancelled"
        if target is self.waiting:  # it never started
            self.waiting = self.requested = None
            return self._done(target, interrupted=True)
        if target.turn_id is None:  # its turn is starting: cancelled once the session says it started
            target.cancel_requested = True
            return []
        return [Drive(CancelResponse())]

    # --- responses asked for ------------------------------------------------------------------------------------

    def _new_response(self, params: ResponseParams) -> RealtimeResponse:
        s = self.settings
        audio = s.audio_output if params.audio_output is None else params.audio_output
        fmt = params.output_format or s.output_format
        max_tokens = params.max_output_tokens if params.max_output_tokens is not None else s.max_output_tokens
        return RealtimeResponse(params=params, audio_output=audio, output_format=fmt,
                                voice=params.voice or s.voice, max_output_tokens=max_tokens,
                                delta_bytes=fmt.bytes_for_ms(self.limits.audio_delta_ms))

    def _start(self, response: RealtimeResponse) -> list[Any]:
        """Ask the session for the turn that answers ``response``."""
        self.port_requests.append(response)
        words = " ".join(t for t in (item_text(i) for i in self.conversation.pending(None)) if t) or TRIGGER
        return [*self._core(), Drive(InputText(words[:self.limits.max_trigger_chars]))]

    def consume(self, items: list[dict[str, Any]], turn_id: str | None) -> None:
        """The answerer took ``items`` (and the words of the audio turn ``turn_id``) as a response's input."""
        self.conversation.consume(items)
        if turn_id is not None:
            self.answered_turns.add(turn_id)
            item = self.conversation.get(self.turn_items.get(turn_id, ""))
            if item is not None:
                item["_consumed"] = True

    # --- transcriptions outside a turn ----------------------------------------------------------------------

    def on_transcribed(self, item_id: str, text: str | None, error: tuple[str, str] | None = None) -> list[Any]:
        self.transcribing.discard(item_id)
        item = self.conversation.get(item_id)
        actions: list[Any] = []
        if item is not None:
            actions += self._transcript(item, text, error)
        return actions + self._release_waiting()

    def _transcript(self, item: dict[str, Any], text: str | None, error: tuple[str, str] | None) -> list[Any]:
        events = transcript_events(item, text, error, self.dialect, self.settings.transcription is not None,
                                   self.conversation.previous_of(item["id"]))
        return [Send(e) for e in events]

    def _release_waiting(self) -> list[Any]:
        if self.waiting is None or self.transcribing:
            return []
        response, self.waiting = self.waiting, None
        return self._start(response)

    # --- session events ---------------------------------------------------------------------------------------

    def on_session(self, event: Any, now: float) -> list[Any]:
        """The actions for one event the session queued."""
        handler = getattr(self, "_from_" + type(event).__name__, None)
        return handler(event, now) if handler is not None else []

    def on_marker(self, name: str) -> list[Any]:
        if name == "commit" and not self._stopped_since_commit:
            return [self._error("input_audio_buffer_commit_empty", "Error committing input audio buffer: no speech "
                                "in the buffer.")]
        return []

    def _from_SpeechStarted(self, ev: SpeechStarted, now: float) -> list[Any]:
        if self.manual:
            return []
        item_id = self.turn_items.setdefault(ev.turn_id, new_id("item"))
        if len(self.turn_items) > self.limits.max_items:
            self.turn_items.pop(next(iter(self.turn_items)))
        self._speech_started_ms = ev.audio_ms
        return [Send({"type": "input_audio_buffer.speech_started", "audio_start_ms": ev.audio_ms,
                      "item_id": item_id})]

    def _from_SpeechStopped(self, ev: SpeechStopped, now: float) -> list[Any]:
        self._stopped_since_commit = True
        item_id = self.turn_items.setdefault(ev.turn_id, new_id("item"))
        item = user_audio_item(item_id, turn_id=ev.turn_id)
        item["_consumed"] = ev.turn_id in self.answered_turns
        item["_audio_ms"] = max(ev.audio_ms - self._speech_started_ms, 0)
        self.transcribing.add(item_id)
        actions = [Send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.audio_ms,
                         "item_id": item_id}),
                   Send({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": self.conversation.last_id()})]
        return actions + self._add_item(item, done=False)

    def _from_Transcript(self, ev: Transcript, now: float) -> list[Any]:
        item_id = self.turn_items.get(ev.turn_id)
        if item_id is None:
            return []
        self.transcribing.discard(item_id)
        item = self.conversation.get(item_id)
        actions = self._transcript(item, ev.text, None) if item is not None else []
        return actions + self._release_waiting()

    def _from_ResponseStarted(self, ev: ResponseStarted, now: float) -> list[Any]:
        requested = self.requested
        if requested is not None and requested is not self.waiting and ev.turn_id not in self.turn_items:
            self.requested = None
            response, actions = requested, []
        else:  # the session answered on its own (an utterance, an offer, an approval question)
            response = self._new_response(ResponseParams())
            actions = [Send({"type": "response.created", "response": response.render(self.dialect, final=False)})]
        response.turn_id = ev.turn_id
        self.active = response
        self.responses[ev.turn_id] = response
        if len(self.responses) > 16:
            old = self.responses.pop(next(iter(self.responses)))
            for item in old.output:
                self.by_item.pop(item["id"], None)
        return actions + ([Drive(CancelResponse())] if response.cancel_requested else [])

    def _from_ResponseTextDelta(self, ev: ResponseTextDelta, now: float) -> list[Any]:
        response = self.responses.get(ev.turn_id)
        if response is None:
            return []
        actions: list[Any] = []
        if response.message is None:
            opened = response.open_message()
            assert response.message is not None
            self.by_item[response.message["id"]] = response
            actions += [Send(opened[0])]
            if not response.out_of_band:
                response.message["_consumed"] = True  # the reply is context for what follows, never new input
                actions += self._add_item(response.message, done=None, origin="response")
            actions += [Send(e) for e in opened[1:]]
        return [*actions, Send(response.text_delta(ev.delta))]

    def _from_ResponseAudio(self, ev: ResponseAudio, now: float) -> list[Any]:
        response = self.responses.get(ev.turn_id)
        return [Send(e) for e in response.audio(ev.chunk.audio, ev.phrase_index, now)] if response else []

    def _from_ResponseCancelled(self, ev: ResponseCancelled, now: float) -> list[Any]:
        response = self.responses.get(ev.turn_id)
        if response is not None:
            response.cancel_reason = "turn_detected" if ev.reason == "barge_in" else "client_cancelled"
        return []

    def _from_ResponseDone(self, ev: ResponseDone, now: float) -> list[Any]:
        response = self.responses.get(ev.turn_id)
        in_progress = response is not None and response.status == "in_progress"
        return self._done(response, interrupted=ev.interrupted) if in_progress else []

    def _from_ErrorEvent(self, ev: ErrorEvent, now: float) -> list[Any]:
        kind = "invalid_request_error" if ev.code in CLIENT_ERROR_CODES else "server_error"
        actions: list[Any] = [Send(codec.error_event(ev.code, ev.message, kind=kind))]
        requested = self.requested
        if requested is not None and requested is not self.waiting and ev.turn_id is None and \
                ev.code in ("text_too_long", "empty_text"):  # the session refused the turn this response asked for
            requested.error = {"type": kind, "code": ev.code, "message": ev.message}
            return actions + self._done(requested, interrupted=False)
        response = self.responses.get(ev.turn_id or "")
        if response is not None and response.status == "in_progress":
            response.error = {"type": kind, "code": ev.code, "message": ev.message}
        item_id = self.turn_items.get(ev.turn_id or "")
        if item_id in self.transcribing and ev.code.startswith("stt_"):
            self.transcribing.discard(item_id)
            item = self.conversation.get(item_id)
            if item is not None:
                actions += self._transcript(item, None, (ev.code, ev.message))
            actions += self._release_waiting()
        return actions

    def _done(self, response: RealtimeResponse, *, interrupted: bool) -> list[Any]:
        notes = self.notes.pop(response.turn_id or "", TurnNotes())
        response.finish_reason = notes.finish_reason
        response.usage = notes.usage
        calls = [{"id": new_id("item"), "object": "realtime.item", "type": "function_call", "status": "completed",
                  **call} for call in notes.function_calls]
        events = response.finish(interrupted=interrupted, function_calls=calls)
        actions: list[Any] = []
        for event in events:
            actions.append(Send(event))
            item = event.get("item")
            if response.out_of_band or item is None:
                continue
            if event["type"] == "response.output_item.added" and item["type"] == "function_call":
                stored = next(c for c in calls if c["id"] == item["id"])
                stored["_consumed"] = True  # the call is output; its output will be the new input
                actions += self._add_item(stored, done=False, origin="response")
            elif event["type"] == "response.output_item.done" and item["id"] in self.conversation:
                actions.append(Send({"type": "conversation.item.done", "item": render_item(item, self.dialect),
                                     "previous_item_id": self.conversation.previous_of(item["id"])}))
        if self.active is response:
            self.active = None
        if self.requested is response:
            self.requested = None
        actions.append(Send({"type": "response.done", "response": response.render(self.dialect, final=True)}))
        actions.append(Send(response.rate_limits()))
        return actions

    # --- items -------------------------------------------------------------------------------------------------

    def _add_item(self, item: dict[str, Any], *, done: bool | None, after: str | None = None,
                  origin: str = "client") -> list[Any]:
        """Put an item in the conversation: ``conversation.item.added`` (and ``.done`` when ``done``)."""
        self.conversation.add(item, after=after, origin=origin)
        previous = self.conversation.previous_of(item["id"])
        rendered = render_item(item, self.dialect)
        actions = [Send({"type": "conversation.item.added", "item": rendered, "previous_item_id": previous})]
        if done:
            actions.append(Send({"type": "conversation.item.done", "item": rendered, "previous_item_id": previous}))
        return actions

    def _missing(self, item_id: str, event_id: str | None) -> Send:
        return self._error("item_not_found", f"Item with item_id not found: {item_id}", "item_id", event_id)

    def _error(self, code: str, message: str, param: str | None = None, event_id: str | None = None) -> Send:
        return Send(codec.error_event(code, message, param=param, event_id=event_id))

