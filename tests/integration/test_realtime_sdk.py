"""ws /v1/realtime judged by the official ``openai`` SDK (GA ``client.realtime.connect`` and beta
``client.beta.realtime.connect``) against a real server on 127.0.0.1 port 0 with scripted STT / model / TTS: a
spoken turn with server VAD, text-only output, a function-tool round trip next to a server-side tool, cancel and
truncate with the heard text in LanceDB memory, manual commit with ``turn_detection: null``, G.711 formats, and
every bad input getting one error while the session goes on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from voiceserver.agent import Agent, create_tool
from voiceserver.audio.alaw import alaw_decode, alaw_encode
from voiceserver.audio.mulaw import mulaw_decode, mulaw_encode
from voiceserver.audio.resample import resample_pcm16
from voiceserver.memory import LanceDBStore, Memory
from voiceserver.settings import Settings, TurnConfig
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server

REPLY = "Hello there. Nice to meet you."
STORY = ("One two three four five six seven eight. Nine ten eleven twelve thirteen fourteen fifteen sixteen. "
         "Seventeen eighteen nineteen twenty.")
AGAIN = ("Once upon a time a fox lived by a river. It liked the rain and the wind. "
         "Every morning it went fishing.")
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def tone24(ms: int) -> bytes:
    t = np.arange(int(24 * ms)) / 24000
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


def silence24(ms: int) -> bytes:
    return b"\x00\x00" * 24 * ms


def client_for(vs, key: str = "sk-test") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=vs.http_url + "/v1", websocket_base_url=vs.running.ws_url + "/v1",
                       max_retries=0)


async def stream(conn, audio: bytes, *, frame_ms: int = 20, bytes_per_ms: int = 48) -> None:
    step = frame_ms * bytes_per_ms
    for i in range(0, len(audio), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + step]).decode())
        await asyncio.sleep(frame_ms / 1000)


async def until(conn, kind: str, timeout: float = 20.0) -> list:
    """Every event up to and including the first of ``kind``."""
    seen = []
    async with asyncio.timeout(timeout):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return seen
    raise AssertionError(f"connection closed before {kind}: {[e.type for e in seen]}")


def kinds(events, *, audio: bool = False) -> list[str]:
    return [e.type for e in events if audio or not e.type.endswith("audio.delta")]


def audio_of(events) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in events if e.type.endswith("audio.delta"))


def agent_with(*replies, tools=None, memory=None) -> tuple[Agent, ScriptedChatModel]:
    model = ScriptedChatModel(list(replies))
    return Agent(name="Assistant", instructions="Be brief.", model=model, tools=tools, memory=memory), model


async def test_ga_spoken_turn_with_server_vad():
    agent, model = agent_with(REPLY)
    async with voice_server(agent=agent, stt=ScriptedSTT(["what is up"]), tts=ToneTTS(sample_rate=22050)) as vs, \
            client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "realtime"
        assert created.session.audio.input.format.type == "audio/pcm"
        assert created.session.audio.input.format.rate == 24000
        assert created.session.audio.input.turn_detection.type == "server_vad"
        await stream(conn, tone24(600) + silence24(900))
        events = await until(conn, "response.done")
    assert kinds(events) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
        "conversation.item.added", "conversation.item.input_audio_transcription.completed",
        "conversation.item.done", "response.created", "response.output_item.added", "conversation.item.added",
        "response.content_part.added", "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta", "response.output_audio.done",
        "response.output_audio_transcript.done", "response.content_part.done", "response.output_item.done",
        "conversation.item.done", "response.done"]
    started, stopped, committed = events[0], events[1], events[2]
    assert started.item_id == stopped.item_id == committed.item_id
    assert 0 <= started.audio_start_ms < 600 < stopped.audio_end_ms < 1500
    transcribed = next(e for e in events if e.type.endswith("transcription.completed"))
    assert transcribed.item_id == started.item_id and transcribed.transcript == "what is up"
    assert transcribed.usage.type == "duration" and transcribed.usage.seconds > 0.5
    deltas = [e.delta for e in events if e.type == "response.output_audio_transcript.delta"]
    assert "".join(deltas) == REPLY
    audio = np.frombuffer(audio_of(events), dtype="<i2")
    # ToneTTS speaks 20 ms a character; the reply comes back as 24 kHz pcm16 (two phrases).
    assert abs(len(audio) / 24 - 20 * (len("Hello there.") + len("Nice to meet you."))) < 60
    assert np.abs(audio).max() > 0.25 * 32767
    done = events[-1].response
    assert done.status == "completed" and done.output[0].type == "message"
    assert done.output[0].content[0].transcript == REPLY and done.output[0].status == "completed"
    assert done.usage.output_tokens > 0 and done.usage.total_tokens == done.usage.input_tokens + \
        done.usage.output_tokens
    assert model.requests[0].messages[-1].content == "what is up"


async def test_ga_text_message_with_text_only_output_and_per_response_instructions():
    agent, model = agent_with("Bonjour. Comment allez-vous?")
    async with voice_server(agent=agent) as vs, client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Say hello in French"}]})
        added = await until(conn, "conversation.item.done")
        await conn.response.create(response={"output_modalities": ["text"], "instructions": "Answer in French.",
                                             "max_output_tokens": 50})
        events = await until(conn, "response.done")
        rate = await conn.recv()
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "And in German?"}]})
        await conn.response.create()
        await until(conn, "response.done")
    assert kinds(added) == ["conversation.item.added", "conversation.item.done"]
    assert added[0].item.content[0].text == "Say hello in French"
    assert "response.output_audio.delta" not in kinds(events, audio=True)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Bonjour. Comment allez-vous?"
    assert next(e for e in events if e.type == "response.output_text.done").text == text
    assert events[-1].response.status == "completed" and events[-1].response.output_modalities == ["text"]
    assert rate.type == "rate_limits.updated"
    request = model.requests[0]
    assert request.messages[0].role == "system" and request.messages[0].content == "Answer in French."
    assert request.messages[-1].content == "Say hello in French" and request.max_tokens == 50
    # No memory: the conversation's items are the next response's context; the session's instructions are back.
    assert [(m.role, m.content) for m in model.requests[1].messages] == [
        ("system", "Be brief."), ("user", "Say hello in French"), ("assistant", "Bonjour. Comment allez-vous?"),
        ("user", "And in German?")]


async def test_ga_function_tool_round_trip_next_to_a_server_tool():
    clock_calls = []

    async def clock(args, ctx):
        clock_calls.append(ctx.tool_call_id)
        return {"time": "noon"}

    server_tool = create_tool(id="clock", description="The time now.", execute=clock)
    agent, model = agent_with(Reply(tool_calls=[("clock", {})]), Reply(tool_calls=[("get_weather", {"city": "Paris"})]),
                              "It is noon and sunny in Paris.", tools={"clock": server_tool})
    async with voice_server(agent=agent) as vs, client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": "auto"})
        updated = await until(conn, "session.updated")
        assert updated[-1].session.tools[0].name == "get_weather"
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Weather now?"}]})
        await conn.response.create()
        first = await until(conn, "response.done")
        calls = [o for o in first[-1].response.output if o.type == "function_call"]
        assert [c.name for c in calls] == ["get_weather"] and json.loads(calls[0].arguments) == {"city": "Paris"}
        done_args = next(e for e in first if e.type == "response.function_call_arguments.done")
        assert done_args.call_id == calls[0].call_id and done_args.name == "get_weather"
        assert clock_calls, "the agent's own tool ran on the server in the same response"
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": calls[0].call_id,
                                                  "output": json.dumps({"conditions": "sunny"})})
        await conn.response.create()
        second = await until(conn, "response.done")
    assert "".join(e.delta for e in second if e.type == "response.output_audio_transcript.delta") == \
        "It is noon and sunny in Paris."
    last = model.requests[-1].messages
    assert last[-1].role == "tool" and json.loads(last[-1].content) == {"conditions": "sunny"}
    assert any(m.role == "tool" and "noon" in (m.content or "") for m in last)
    offered = {t.name for t in model.requests[0].tools}
    assert {"clock", "get_weather"} <= offered


async def test_ga_cancel_then_truncate_keeps_the_heard_text_in_memory(tmp_path):
    memory = Memory(storage=LanceDBStore(str(tmp_path / "memory")), embedder=None,
                    options={"semantic_recall": {"enabled": False}, "working_memory": {"enabled": False}})
    # A second story for "Again": the same words twice would be a repeat, which the agent does not say.
    agent, model = agent_with(STORY, AGAIN, memory=memory)
    # The first phrase is the first sentence (cut at 32 characters, not the default 16): the timings below use it.
    settings = Settings(turn=TurnConfig(output_lead_ms=300, reply_max_sentences=0, first_phrase_max_chars=32))
    async with voice_server(agent=agent, memory=memory, tts=ToneTTS(ms_per_char=40, sample_rate=24000),
                            settings=settings) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        query = {"resource": "caller-1", "thread": "talk-1"}
        async with client_for(vs).realtime.connect(model="gpt-realtime", extra_query=query) as conn:
            await conn.recv()
            # 1) the client cancels, then tells how much it played
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Tell a story"}]})
            await conn.response.create()
            got = []
            async for event in conn:
                got.append(event)
                if len(audio_of(got)) >= 48 * 2500:  # 2.5 s of reply audio arrived
                    break
            await conn.response.cancel()
            got += await until(conn, "response.done")
            assert got[-1].response.status == "cancelled"
            assert got[-1].response.status_details.reason == "client_cancelled"
            item_id = got[-1].response.output[0].id
            first_phrase = next(e.delta for e in got if e.type == "response.output_audio_transcript.delta")
            played = 40 * len(first_phrase) + 600  # the first sentence and a bit of the second
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=played)
            truncated = await until(conn, "conversation.item.truncated")
            assert truncated[-1].audio_end_ms == played and truncated[-1].item_id == item_id
            await conn.conversation.item.retrieve(item_id=item_id)
            item = (await until(conn, "conversation.item.retrieved"))[-1].item
            heard = item.content[0].transcript
            assert heard.startswith(first_phrase) and len(first_phrase) < len(heard) < len(STORY) / 2
            # 2) a truncate while the reply still plays stops it at that point
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Again"}]})
            await conn.response.create()
            got2 = []
            async for event in conn:
                got2.append(event)
                if len(audio_of(got2)) >= 48 * 1500:
                    break
            item2 = next(e.item.id for e in got2 if e.type == "response.output_item.added")
            await conn.conversation.item.truncate(item_id=item2, content_index=0, audio_end_ms=1000)
            got2 += await until(conn, "response.done")
            assert got2[-1].response.status == "cancelled"
            heard2 = got2[-1].response.output[0].content[0].transcript
        stored = (await http.get("/v1/memory/threads/talk-1/messages", params={"resource": "caller-1"})).json()
    texts = [(m["role"], m["content"], m["metadata"].get("interrupted")) for m in stored["messages"]]
    assert texts[0] == ("user", "Tell a story", None)
    assert texts[1] == ("assistant", heard, True)  # exactly what was heard, not what was generated or sent
    assert texts[2] == ("user", "Again", None)
    assert texts[3][0] == "assistant" and texts[3][2] is True
    assert texts[3][1] == heard2 == " ".join(AGAIN.split()[:len(heard2.split())])
    assert 0 < len(heard2.split()) < 8


async def test_ga_manual_commit_with_turn_detection_null_and_g711_alaw():
    agent, model = agent_with(REPLY)
    stt = ScriptedSTT(["manual words"])
    async with voice_server(agent=agent, stt=stt, tts=ToneTTS()) as vs, \
            client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"turn_detection": None, "format": {"type": "audio/pcma"}},
            "output": {"format": {"type": "audio/pcma"}}}})
        updated = (await until(conn, "session.updated"))[-1].session
        assert updated.audio.input.turn_detection is None and updated.audio.output.format.type == "audio/pcma"
        alaw = bytes([0xD5]) * 8 * 100  # 100 ms of A-law silence
        tone8 = alaw_encode(resample_pcm16(tone24(800), 24000, 8000))
        await stream(conn, alaw + tone8 + alaw, bytes_per_ms=8)
        await conn.input_audio_buffer.clear()
        cleared = await until(conn, "input_audio_buffer.cleared")
        assert kinds(cleared) == ["input_audio_buffer.cleared"]  # no VAD events in manual mode
        await stream(conn, tone8 + alaw, bytes_per_ms=8)
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
    assert kinds(events)[:5] == ["input_audio_buffer.committed", "conversation.item.added", "response.created",
                                 "conversation.item.input_audio_transcription.completed", "conversation.item.done"]
    assert events[3].transcript == "manual words"
    assert len(stt.calls) == 1 and 0.8 * 16000 * 2 < stt.calls[0] < 1.0 * 16000 * 2  # only the committed audio
    reply = np.frombuffer(alaw_decode(audio_of(events)), dtype="<i2")
    assert abs(len(reply) / 8 - 20 * (len("Hello there.") + len("Nice to meet you."))) < 60
    assert np.abs(reply).max() > 0.2 * 32767
    assert model.requests[0].messages[-1].content == "manual words"


async def test_beta_spoken_turn_names_and_g711_ulaw():
    agent, _ = agent_with(REPLY)
    async with voice_server(agent=agent, stt=ScriptedSTT(["beta words"]), tts=ToneTTS()) as vs, \
            client_for(vs).beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        created = await conn.recv()
        assert created.session.input_audio_format == "pcm16" and created.session.modalities == ["text", "audio"]
        await conn.session.update(session={"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
                                           "input_audio_transcription": {"model": "whisper-1"},
                                           "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}})
        updated = await conn.recv()
        assert updated.type == "session.updated" and updated.session.output_audio_format == "g711_ulaw"
        assert updated.session.turn_detection.silence_duration_ms == 400
        speech = mulaw_encode(resample_pcm16(tone24(600) + silence24(800), 24000, 8000))
        await stream(conn, speech, bytes_per_ms=8)
        events = await until(conn, "response.done")
    names = kinds(events, audio=True)
    assert "conversation.item.created" in names and "conversation.item.added" not in names
    assert "conversation.item.done" not in names
    assert "response.audio.delta" in names and "response.audio_transcript.delta" in names
    assert "response.output_audio.delta" not in names
    transcript = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert transcript.transcript == "beta words"
    reply = np.frombuffer(mulaw_decode(audio_of(events)), dtype="<i2")
    assert abs(len(reply) / 8 - 20 * (len("Hello there.") + len("Nice to meet you."))) < 60
    done = events[-1].response
    assert done.status == "completed" and done.output[0].content[0].type == "audio"
    assert done.output_audio_format == "g711_ulaw"


async def test_bad_inputs_each_get_one_error_and_the_session_goes_on():
    agent, _ = agent_with(REPLY)
    async with voice_server(agent=agent) as vs, client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        cases = [
            ("not json {", "invalid_json", None),
            (json.dumps(["a list"]), "invalid_event", "type"),
            (json.dumps({"type": "response.dance", "event_id": "e1"}), "unknown_event", "type"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@", "event_id": "e2"}),
             "invalid_base64", "audio"),
            (json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/opus"}}}}}), "invalid_audio_format",
             "session.audio.input.format.type"),
            (json.dumps({"type": "session.update", "session": {"type": "realtime", "colour": "blue"}}),
             "unknown_parameter", "session.colour"),
            (json.dumps({"type": "conversation.item.truncate", "item_id": "item_nope", "audio_end_ms": 5}),
             "item_not_found", "item_id"),
            (json.dumps({"type": "response.cancel"}), "response_cancel_not_active", None),
            (json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "robot",
                                                                      "content": []}}), "invalid_value",
             "item.role"),
        ]
        for raw, code, param in cases:
            await conn.send_raw(raw)
            error = await asyncio.wait_for(conn.recv(), 10)
            assert error.type == "error" and error.error.code == code, (raw, error)
            sent_id = json.loads(raw).get("event_id") if code not in ("invalid_json", "invalid_event") else None
            assert error.error.event_id == sent_id
            assert error.error.param == param and error.error.type == "invalid_request_error"
            assert error.error.message
        assert error.error.event_id is None  # the last bad event carried no event_id
        # The same events again, nothing queued behind them: the session answers normally.
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hi"}]})
        await conn.response.create()
        await conn.response.create()  # a second one while the first runs
        events = await until(conn, "response.done")
        busy = [e for e in events if e.type == "error"]
        assert [e.error.code for e in busy] == ["conversation_already_has_active_response"]
        assert events[-1].response.status == "completed"


async def test_unknown_event_echoes_the_client_event_id():
    agent, _ = agent_with(REPLY)
    async with voice_server(agent=agent) as vs, client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.send_raw(json.dumps({"type": "nope", "event_id": "evt_client_7"}))
        error = await conn.recv()
    assert error.error.event_id == "evt_client_7" and error.event_id != "evt_client_7"


async def test_api_keys_are_checked_and_every_event_stays_small():
    agent, _ = agent_with(STORY)
    settings = Settings(api_keys=["sk-right"], turn=TurnConfig(reply_max_sentences=0),
                        openai_endpoints={"realtime_audio_delta_ms": 500})
    async with voice_server(agent=agent, settings=settings, tts=ToneTTS(sample_rate=24000)) as vs:
        with pytest.raises(websockets.InvalidStatus) as refused:  # refused before the upgrade
            async with client_for(vs, key="sk-wrong").realtime.connect(model="gpt-realtime") as conn:
                await conn.recv()
        assert refused.value.response.status_code == 403
        async with client_for(vs, key="sk-right").realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "long one"}]})
            await conn.response.create()
            sizes, deltas = [], 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    while True:
                        raw = await conn.recv_bytes()
                        sizes.append(len(raw))
                        event = json.loads(raw)
                        deltas += event["type"] == "response.output_audio.delta"
                        if event["type"] == "response.done":
                            break
    assert deltas > 5 and max(sizes) < 64 * 1024  # 500 ms of 24 kHz pcm16 in base64 is 32 KB


async def test_ga_server_vad_without_create_response_waits_for_response_create():
    agent, model = agent_with(REPLY)
    async with voice_server(agent=agent, stt=ScriptedSTT(["hold on"]), tts=ToneTTS()) as vs, \
            client_for(vs).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "create_response": False, "silence_duration_ms": 500}}}})
        await until(conn, "session.updated")
        await stream(conn, tone24(600) + silence24(900))
        heard = await until(conn, "conversation.item.done")
        await asyncio.sleep(0.5)
        assert model.calls == 0  # committed and transcribed, not answered
        await conn.response.create()
        events = await until(conn, "response.done")
    assert "input_audio_buffer.committed" in kinds(heard) and heard[-1].item.content[0].transcript == "hold on"
    assert events[-1].response.status == "completed"
    assert model.requests[0].messages[-1].content == "hold on"


async def test_ga_out_of_band_response_keeps_nothing(tmp_path):
    memory = Memory(storage=LanceDBStore(str(tmp_path / "memory")), embedder=None,
                    options={"semantic_recall": {"enabled": False}, "working_memory": {"enabled": False}})
    agent, model = agent_with("Sure.", "A summary.", memory=memory)
    async with voice_server(agent=agent, memory=memory) as vs, httpx.AsyncClient(base_url=vs.http_url) as http:
        query = {"resource": "caller-2", "thread": "oob-1"}
        async with client_for(vs).realtime.connect(model="gpt-realtime", extra_query=query) as conn:
            await conn.recv()
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Hello"}]})
            await conn.response.create()
            await until(conn, "response.done")
            await conn.response.create(response={"conversation": "none", "output_modalities": ["text"],
                                                 "instructions": "Summarise.", "metadata": {"topic": "summary"}})
            events = await until(conn, "response.done")
        stored = (await http.get("/v1/memory/threads/oob-1/messages", params={"resource": "caller-2"})).json()
    assert "conversation.item.added" not in kinds(events) and "conversation.item.done" not in kinds(events)
    done = events[-1].response
    assert done.conversation_id is None and done.metadata == {"topic": "summary"}
    assert done.output[0].content[0].text == "A summary."
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [("user", "Hello"), ("assistant", "Sure.")]
    # The conversation so far is its context (memory is not used, so not written either).
    assert [(m.role, m.content) for m in model.requests[1].messages] == [
        ("system", "Summarise."), ("user", "Hello"), ("assistant", "Sure.")]


async def test_an_event_over_the_limit_closes_with_1009_and_a_full_server_refuses_with_1013():
    agent, _ = agent_with(REPLY)
    settings = Settings(limits={"max_sessions": 1}, openai_endpoints={"realtime_max_event_bytes": 4096})
    async with voice_server(agent=agent, settings=settings) as vs:
        url = vs.running.ws_url + "/v1/realtime?model=gpt-realtime"
        async with client_for(vs).realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            async with websockets.connect(url) as refused:  # the one session slot is taken
                error = json.loads(await refused.recv())
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await refused.recv()
            assert error["error"]["code"] == "server_full" and closed.value.rcvd.code == 1013
            await conn.send_raw(json.dumps({"type": "input_audio_buffer.append",
                                            "audio": base64.b64encode(bytes(6000)).decode()}))
            too_big = await conn.recv()
            assert too_big.error.code == "event_too_large"
            with pytest.raises(websockets.ConnectionClosedError) as gone:  # the server closed the connection
                await asyncio.wait_for(conn.recv(), 10)
            assert gone.value.rcvd.code == 1009
        async with websockets.connect(url) as again:  # the slot is free again
            assert json.loads(await again.recv())["type"] == "session.created"
