"""The Realtime conversation mapper on values: session events in, server events and session actions out, with no
socket and no session (the actions are inspected instead of run)."""

from __future__ import annotations

import base64

import numpy as np

from voiceserver.audio.format import PCM16_16K, AudioChunk, AudioFormat
from voiceserver.gateway import realtime_codec as codec
from voiceserver.gateway.realtime_items import Identity
from voiceserver.gateway.realtime_shapes import RealtimeSettings, ResponseParams, TurnDetection
from voiceserver.gateway.realtime_state import (
    Drive,
    RealtimeConversation,
    RealtimeLimits,
    ReplaceHeard,
    Send,
    Transcribe,
)
from voiceserver.session.events import (
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
    SpeechStarted,
    SpeechStopped,
    StartSession,
    Transcript,
    UpdateSession,
)

LIMITS = RealtimeLimits(max_items=6, max_buffer_ms=1000, audio_delta_ms=50)


def mapper(**settings) -> RealtimeConversation:
    return RealtimeConversation(dialect="ga", settings=RealtimeSettings(**settings), limits=LIMITS,
                                session_id="sess_1", identity=Identity("caller", "thread", "Assistant"))


def sent(actions) -> list[str]:
    return [a.event["type"] for a in actions if isinstance(a, Send)]


def driven(actions) -> list:
    return [a.event for a in actions if isinstance(a, Drive)]


def pcm24(ms: int) -> bytes:
    return (np.ones(24 * ms, dtype="<i2") * 1000).tobytes()


def text_item(text: str) -> codec.ItemCreate:
    return codec.ItemCreate(None, {"type": "message", "role": "user", "object": "realtime.item",
                                   "status": "completed", "content": [{"type": "input_text", "text": text}]})


def test_server_vad_turn_maps_to_the_realtime_events():
    m = mapper(transcription={"model": "whisper"})
    first = m.on_client(codec.AudioAppend(None, pcm24(20)), 1.0)
    start, audio = driven(first)
    assert isinstance(start, StartSession) and isinstance(audio, InputAudio) and audio.arrived_at == 1.0
    assert start.config.input_format == PCM16_16K and start.config.auto_respond and start.config.barge_in
    assert 560 <= len(audio.audio) <= 640  # 20 ms of 24 kHz pcm16 as 16 kHz (the resampler keeps a few samples)
    actions = m.on_session(SpeechStarted("t1", 300, 500), 2.0)
    assert sent(actions) == ["input_audio_buffer.speech_started"] and actions[0].event["audio_start_ms"] == 300
    item_id = actions[0].event["item_id"]
    actions = m.on_session(SpeechStopped("t1", 1800), 2.0)
    assert sent(actions) == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                             "conversation.item.added"]
    assert all(a.event.get("item_id", item_id) == item_id for a in actions[:2])
    done = m.on_session(Transcript("t1", "hello"), 2.0)
    assert sent(done) == ["conversation.item.input_audio_transcription.completed", "conversation.item.done"]
    assert done[0].event["usage"] == {"type": "duration", "seconds": 1.5}
    assert sent(m.on_session(ResponseStarted("t1"), 2.0)) == ["response.created"]
    opened = m.on_session(ResponseTextDelta("t1", "Hi there."), 2.0)
    assert sent(opened) == ["response.output_item.added", "conversation.item.added", "response.content_part.added",
                            "response.output_audio_transcript.delta"]
    deltas = m.on_session(ResponseAudio("t1", AudioChunk(pcm24(120), 24000)), 2.1)
    assert sent(deltas) == ["response.output_audio.delta"] * 3  # 50 ms pieces (the audio_delta_ms limit)
    assert sum(len(base64.b64decode(a.event["delta"])) for a in deltas) == 24 * 120 * 2
    closing = m.on_session(ResponseDone("t1", "Hi there."), 2.5)
    assert sent(closing) == ["response.output_audio.done", "response.output_audio_transcript.done",
                             "response.content_part.done", "response.output_item.done", "conversation.item.done",
                             "response.done", "rate_limits.updated"]
    response = closing[-2].event["response"]
    assert response["status"] == "completed" and response["output"][0]["content"][0]["transcript"] == "Hi there."
    assert m.active is None


def test_output_audio_in_mu_law_is_converted_per_response():
    m = mapper(output_format=AudioFormat("mulaw", 8000))
    m.on_client(text_item("hi"), 0.0)
    m.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    m.on_session(ResponseStarted("t9"), 0.0)
    m.on_session(ResponseTextDelta("t9", "Hello."), 0.0)
    deltas = m.on_session(ResponseAudio("t9", AudioChunk(pcm24(200), 24000)), 0.0)
    deltas += m.on_session(ResponseDone("t9", "Hello."), 0.0)
    mulaw = b"".join(base64.b64decode(a.event["delta"]) for a in deltas if a.event["type"].endswith("audio.delta"))
    assert abs(len(mulaw) - 8 * 200) <= 2  # one byte a sample at 8 kHz


def test_response_create_takes_the_new_items_as_input_and_refuses_a_second_one():
    m = mapper()
    assert sent(m.on_client(text_item("first"), 0.0)) == ["conversation.item.added", "conversation.item.done"]
    m.on_client(text_item("second"), 0.0)
    actions = m.on_client(codec.ResponseCreate("e1", ResponseParams(instructions="Short.")), 0.0)
    assert sent(actions) == ["response.created"]
    start, text = driven(actions)
    assert isinstance(start, StartSession) and text == InputText("first second")
    assert m.port_requests[0].params.instructions == "Short."
    busy = m.on_client(codec.ResponseCreate("e2", ResponseParams()), 0.0)
    assert busy[0].event["error"]["code"] == "conversation_already_has_active_response"
    assert busy[0].event["error"]["event_id"] == "e2"
    assert m.on_session(ResponseStarted("t2"), 0.0) == []  # bound to the response already announced
    assert m.active is not None and m.active.turn_id == "t2"


def test_a_response_waits_for_the_transcription_of_its_input():
    m = mapper(turn_detection=None)
    m.on_client(codec.AudioAppend(None, pcm24(500)), 0.0)
    committed = m.on_client(codec.AudioCommit(None), 0.0)
    assert sent(committed) == ["input_audio_buffer.committed", "conversation.item.added"]
    transcribe = [a for a in committed if isinstance(a, Transcribe)][0]
    assert abs(len(transcribe.audio) - 16 * 500 * 2) <= 4  # the whole commit, resampler tail included
    waiting = m.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    assert sent(waiting) == ["response.created"] and driven(waiting) == []
    released = m.on_transcribed(transcribe.item_id, "book a table")
    assert sent(released) == ["conversation.item.done"]  # no transcription events: the client did not ask
    assert driven(released)[-1] == InputText("book a table")


def test_manual_buffer_limits_and_empty_commit():
    m = mapper(turn_detection=None)
    assert m.on_client(codec.AudioAppend(None, pcm24(50)), 0.0) == []  # buffered, not sent to the session
    empty = m.on_client(codec.AudioCommit("c1"), 0.0)
    assert empty[0].event["error"]["code"] == "input_audio_buffer_commit_empty"
    full = m.on_client(codec.AudioAppend("a1", pcm24(1200)), 0.0)
    assert full[0].event["error"]["code"] == "input_audio_buffer_full"
    cleared = m.on_client(codec.AudioClear(None), 0.0)
    assert sent(cleared) == ["input_audio_buffer.cleared"] and driven(cleared) == []


def test_vad_commit_with_nothing_voiced_is_reported_behind_the_session_events():
    m = mapper()
    actions = m.on_client(codec.AudioCommit(None), 0.0)
    assert [type(e) for e in driven(actions)] == [StartSession, InputCommit]
    assert sent(m.on_marker("commit")) == ["error"]
    m.on_client(codec.AudioCommit(None), 0.0)
    m.on_session(SpeechStarted("t1", 0, 200), 0.0)
    m.on_session(SpeechStopped("t1", 900), 0.0)
    assert m.on_marker("commit") == []


def test_turn_detection_changes_reach_a_started_session():
    m = mapper()
    m.on_client(codec.AudioAppend(None, pcm24(20)), 0.0)
    update = m.on_client(codec.SessionUpdate(None, {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 0.9, "silence_duration_ms": 800, "create_response": False,
        "interrupt_response": False}}}}), 0.0)
    assert sent(update) == ["session.updated"]
    config = driven(update)[0].config
    assert isinstance(driven(update)[0], UpdateSession)
    assert (config.vad_aggressiveness, config.vad_silence_ms, config.auto_respond, config.barge_in) == \
        (3, 800, False, False)
    manual = m.on_client(codec.SessionUpdate(None, {"audio": {"input": {"turn_detection": None}}}), 0.0)
    assert [type(e) for e in driven(manual)] == [UpdateSession, ClearInput]
    assert driven(m.on_client(codec.SessionUpdate(None, {"instructions": "x"}), 0.0)) == []  # nothing to change


def test_semantic_vad_eagerness_picks_the_endpoint():
    m = mapper(turn_detection=TurnDetection(type="semantic_vad", eagerness="low"))
    assert m.core_config().vad_silence_ms == 1200


def test_truncate_after_and_during_a_reply():
    m = mapper()
    m.on_client(text_item("tell"), 0.0)
    m.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    m.on_session(ResponseStarted("t1"), 0.0)
    m.on_session(ResponseTextDelta("t1", "One two three four."), 0.0)
    m.on_session(ResponseTextDelta("t1", " Five six seven eight."), 0.0)
    m.on_session(ResponseAudio("t1", AudioChunk(pcm24(1000), 24000), 0), 0.0)
    m.on_session(ResponseAudio("t1", AudioChunk(pcm24(1000), 24000), 1), 1.0)
    item_id = m.active.message["id"]
    during = m.on_client(codec.ItemTruncate(None, item_id, 0, 1500), 1.5)
    assert driven(during) == [ResponsePlayed("t1", 1500), CancelResponse()]
    assert sent(during) == ["conversation.item.truncated"]
    m.on_session(ResponseCancelled("t1", "One two three four. Five six", "client_cancel"), 1.6)
    done = m.on_session(ResponseDone("t1", "One two three four. Five six", interrupted=True), 1.6)
    response = [a.event for a in done if a.event["type"] == "response.done"][0]["response"]
    assert response["status"] == "cancelled" and response["status_details"]["reason"] == "client_cancelled"
    # 500 ms into a 21-character phrase spoken at the first phrase's rate (about 1.1 s): one of its four words.
    assert response["output"][0]["content"][0]["transcript"] == "One two three four. Five"
    after = m.on_client(codec.ItemTruncate(None, item_id, 0, 1000), 2.0)
    assert [a for a in after if isinstance(a, ReplaceHeard)] == [ReplaceHeard("t1", "One two three four.")]
    too_far = m.on_client(codec.ItemTruncate("x", item_id, 0, 5000), 2.0)
    assert too_far[0].event["error"]["param"] == "audio_end_ms"
    unknown = m.on_client(codec.ItemTruncate("y", "item_nope", 0, 10), 2.0)
    assert unknown[0].event["error"]["code"] == "item_not_found"


def test_items_insert_after_an_item_or_at_the_root_and_stay_bounded():
    m = mapper()
    first = m.on_client(text_item("a"), 0.0)[0].event["item"]["id"]
    root = codec.ItemCreate(None, {**text_item("b").item, "id": "item_root"}, "root")
    assert m.on_client(root, 0.0)[0].event["previous_item_id"] is None
    after = codec.ItemCreate(None, {**text_item("c").item, "id": "item_c"}, first)
    assert m.on_client(after, 0.0)[0].event["previous_item_id"] == first
    assert list(m.conversation.items) == ["item_root", first, "item_c"]
    duplicate = m.on_client(codec.ItemCreate(None, {**text_item("d").item, "id": "item_c"}), 0.0)
    assert duplicate[0].event["error"]["code"] == "duplicate_item_id"
    missing = m.on_client(codec.ItemCreate(None, text_item("e").item, "item_gone"), 0.0)
    assert missing[0].event["error"]["param"] == "previous_item_id"
    for i in range(10):
        m.on_client(text_item(f"n{i}"), 0.0)
    assert len(m.conversation.items) == LIMITS.max_items
    gone = m.on_client(codec.ItemDelete(None, "item_c"), 0.0)  # the oldest items were dropped
    assert gone[0].event["error"]["code"] == "item_not_found"
    newest = list(m.conversation.items)[-1]
    assert sent(m.on_client(codec.ItemDelete(None, newest), 0.0)) == ["conversation.item.deleted"]
    assert newest not in m.conversation


def test_stt_failure_of_an_utterance_is_a_transcription_failed_event():
    m = mapper()
    m.on_session(SpeechStarted("t1", 0, 200), 0.0)
    m.on_session(SpeechStopped("t1", 900), 0.0)
    actions = m.on_session(ErrorEvent("stt_unavailable", "down", "t1"), 0.0)
    assert sent(actions) == ["error", "conversation.item.input_audio_transcription.failed",
                             "conversation.item.done"]
    assert actions[0].event["error"]["type"] == "server_error"


def test_an_audio_item_is_transcribed_and_a_response_waits_for_it():
    m = mapper(transcription={"model": "whisper"})
    item = {"type": "message", "role": "user", "object": "realtime.item", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None, "_audio": pcm24(300)}]}
    created = m.on_client(codec.ItemCreate(None, item), 0.0)
    assert sent(created) == ["conversation.item.added"]  # .done follows its transcription
    transcribe = [a for a in created if isinstance(a, Transcribe)][0]
    assert abs(len(transcribe.audio) - 16 * 300 * 2) <= 4 and "_audio" not in created[0].event["item"]["content"][0]
    waiting = m.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    assert driven(waiting) == []
    failed = m.on_transcribed(transcribe.item_id, None, ("stt_unavailable", "down"))
    assert sent(failed) == ["conversation.item.input_audio_transcription.failed", "conversation.item.done"]
    assert isinstance(driven(failed)[-1], InputText)  # the response goes on without those words


def test_a_response_the_session_refuses_ends_failed():
    m = mapper()
    m.on_client(text_item("x"), 0.0)
    m.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    actions = m.on_session(ErrorEvent("text_too_long", "input.text is too long"), 0.0)
    done = [a.event for a in actions if a.event["type"] == "response.done"][0]["response"]
    assert sent(actions)[0] == "error" and done["status"] == "failed"
    assert done["status_details"]["error"]["code"] == "text_too_long"
    assert m.requested is None and m.active is None  # a new response may be asked for


def test_a_reply_cut_at_its_token_cap_is_incomplete_with_its_usage():
    m = mapper()
    m.on_client(text_item("x"), 0.0)
    m.on_client(codec.ResponseCreate(None, ResponseParams(max_output_tokens=5)), 0.0)
    m.on_session(ResponseStarted("t1"), 0.0)
    m.on_session(ResponseTextDelta("t1", "One two three"), 0.0)
    notes = m.notes.for_turn("t1")  # what the answerer writes while it reads the run
    notes.finish_reason, notes.usage = "length", {"prompt_tokens": 40, "completion_tokens": 5, "cached_tokens": 32}
    actions = m.on_session(ResponseDone("t1", "One two three"), 0.0)
    done = [a.event for a in actions if a.event["type"] == "response.done"][0]["response"]
    assert done["status"] == "incomplete" and done["status_details"] == {"type": "incomplete",
                                                                       "reason": "max_output_tokens"}
    assert done["usage"]["input_tokens"] == 40 and done["usage"]["output_tokens"] == 5
    assert done["usage"]["input_token_details"]["cached_tokens"] == 32 and done["max_output_tokens"] == 5
    rate = [a.event for a in actions if a.event["type"] == "rate_limits.updated"][0]
    assert rate["rate_limits"] == [{"name": "tokens", "limit": 5, "remaining": 0, "reset_seconds": 0.0}]
    assert "t1" not in m.notes


def test_a_cancel_before_the_turn_started_cancels_it_as_soon_as_it_starts():
    m = mapper()
    m.on_client(text_item("x"), 0.0)
    m.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    assert m.on_client(codec.ResponseCancel(None), 0.0) == []  # nothing to cancel in the session yet
    started = m.on_session(ResponseStarted("t1"), 0.0)
    assert driven(started) == [CancelResponse()]
    m.on_session(ResponseCancelled("t1", "", "client_cancel"), 0.0)
    done = m.on_session(ResponseDone("t1", "", interrupted=True), 0.0)
    response = [a.event for a in done if a.event["type"] == "response.done"][0]["response"]
    assert response["status"] == "cancelled" and response["status_details"]["reason"] == "client_cancelled"
    waiting = mapper(turn_detection=None)
    waiting.on_client(codec.AudioAppend(None, pcm24(300)), 0.0)
    waiting.on_client(codec.AudioCommit(None), 0.0)
    waiting.on_client(codec.ResponseCreate(None, ResponseParams()), 0.0)
    cancelled = waiting.on_client(codec.ResponseCancel(None), 0.0)
    assert sent(cancelled)[-2:] == ["response.done", "rate_limits.updated"] and driven(cancelled) == []
    assert waiting.waiting is None and waiting.requested is None
