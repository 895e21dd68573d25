"""Bad input on the native protocol: each gets a clear error or close code; the server and other sessions carry on."""

import asyncio
import json
import math

import numpy as np
import pytest
import websockets

from voiceserver.agent import Agent
from voiceserver.client import VoiceClient, VoiceClientError
from voiceserver.settings import LimitsConfig, Settings
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server


def tone(ms: int, rate: int = 16000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


async def raw(url):
    return await websockets.connect(url, max_size=1 << 22)


async def next_json(ws, timeout=10):
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, str):
            return json.loads(message)


async def test_bad_frames_get_errors_and_the_session_carries_on():
    async with voice_server() as vs:
        ws = await raw(vs.ws_url)
        try:
            await ws.send(json.dumps({"type": "session.start"}))
            assert (await next_json(ws))["type"] == "session.started"
            cases = [("not json at all", "invalid_json"), ('{"type":"bogus"}', "unknown_type"),
                     ('{"hello":1}', "unknown_type"), ("[1,2,3]", "invalid_message"),
                     ('{"type":"session.start"}', "session_already_started"),
                     ('{"type":"input.text","text":""}', "empty_text"),
                     ('{"type":"tool.approve","tool_call_id":"nope"}', "no_pending_approval")]
            for frame, code in cases:
                await ws.send(frame)
                reply = await next_json(ws)
                assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
                assert reply["message"]
            await ws.send(json.dumps({"type": "input.text", "text": "still there?"}))
            kinds = []
            while "response.done" not in kinds:
                kinds.append((await next_json(ws))["type"])
            assert "response.started" in kinds
        finally:
            await ws.close()
        metrics = vs.server.metrics.render().decode()
        assert 'voiceserver_errors_total{code="invalid_json"} 1.0' in metrics


async def test_session_start_with_bad_format_then_good():
    async with voice_server() as vs:
        ws = await raw(vs.ws_url)
        try:
            await ws.send(json.dumps({"type": "session.start", "audio": {"encoding": "opus", "sample_rate": 48000}}))
            error = await next_json(ws)
            assert error["code"] == "invalid_audio_format" and "allowed" in error["message"]
            await ws.send(json.dumps({"type": "session.start", "audio": {"encoding": "pcm16", "sample_rate": 44100}}))
            assert (await next_json(ws))["code"] == "invalid_audio_format"
            await ws.send(json.dumps({"type": "session.start", "audio": {"encoding": "mulaw", "sample_rate": 8000}}))
            started = await next_json(ws)
            assert started["type"] == "session.started"
            assert started["audio"] == {"encoding": "mulaw", "sample_rate": 8000}
        finally:
            await ws.close()


async def test_text_over_limit():
    settings = Settings(limits=LimitsConfig(max_text_chars=50))
    async with voice_server(settings=settings) as vs, VoiceClient.connect(vs.ws_url) as client:
        await client.send_text("x" * 51)
        error = await client.wait_for("error")
        assert error["code"] == "text_too_long" and "50" in error["message"]
        turn = await client.ask_text("short one")
        assert turn.reply_text


async def test_odd_byte_frames_do_not_shift_the_stream():
    heard: list[bytes] = []

    def transcribe(audio: bytes) -> str:
        heard.append(audio)
        return "ok"

    stream = tone(700) + b"\x00\x00" * 16000
    async with voice_server(stt=ScriptedSTT(transcribe)) as vs, VoiceClient.connect(vs.ws_url) as client:
        for offset in range(0, len(stream), 641):  # odd-sized frames split samples across frames
            await client.send_audio(stream[offset:offset + 641])
        turn = await client.collect_turn(20)
    assert turn.transcript == "ok"
    (utterance,) = heard
    position = stream.find(utterance[:4000])
    assert position >= 0 and position % 2 == 0, "the utterance is the original samples, aligned"
    assert stream[position:position + len(utterance)] == utterance


async def test_audio_before_session_start_uses_defaults():
    async with voice_server() as vs:
        ws = await raw(vs.ws_url + "?resource=caller-7")
        try:
            await ws.send(tone(100))
            started = await next_json(ws)
            assert started["type"] == "session.started" and started["resource"] == "caller-7"
            assert started["audio"] == {"encoding": "pcm16", "sample_rate": 16000}
        finally:
            await ws.close()


async def test_frame_over_64k_closes_1009():
    async with voice_server() as vs:
        ws = await raw(vs.ws_url)
        await ws.send(json.dumps({"type": "session.start"}))
        await next_json(ws)
        await ws.send(b"\x00" * (64 * 1024 + 2))
        error = await next_json(ws)
        assert error["code"] == "frame_too_large"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1009
        # The server is fine: a new session works.
        async with VoiceClient.connect(vs.ws_url) as client:
            assert (await client.ask_text("hello")).reply_text


async def test_invalid_ids_in_url_close_1008():
    async with voice_server() as vs:
        ws = await raw(vs.ws_url + "?resource=x'%20OR%20'1'='1")
        error = await next_json(ws)
        assert error["code"] == "invalid_id"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1008


async def test_client_vanishing_mid_reply_frees_its_work_and_others_carry_on():
    slow = Reply(text="This is a long answer that keeps going. " * 6, chunk_delay_s=0.02)
    model = ScriptedChatModel([slow])
    agent = Agent(name="Assistant", instructions="Be brief.", model=model)
    tts = ToneTTS(ms_per_char=30, chunk_delay_s=0.01)
    async with voice_server(agent=agent, tts=tts) as vs:
        ws = await raw(vs.ws_url)
        await ws.send(json.dumps({"type": "session.start"}))
        await next_json(ws)
        await ws.send(json.dumps({"type": "input.text", "text": "talk for a while"}))
        while True:
            message = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(message, bytes):
                break
        assert len(vs.server.hub.sessions) == 1
        ws.transport.abort()  # vanish without a close frame
        for _ in range(200):
            if not vs.server.hub.sessions:
                break
            await asyncio.sleep(0.02)
        assert not vs.server.hub.sessions, "the session was closed and released"
        assert tts.cancelled >= 1, "its synthesis was stopped"
        gauge = vs.server.metrics.sessions.labels("native")._value.get()
        assert gauge == 0
        async with VoiceClient.connect(vs.ws_url) as client:
            assert (await client.ask_text("another caller")).reply_text


async def test_server_full_closes_1013():
    settings = Settings(limits=LimitsConfig(max_sessions=1))
    async with voice_server(settings=settings) as vs, VoiceClient.connect(vs.ws_url):
        ws = await raw(vs.ws_url)
        error = await next_json(ws)
        assert error["code"] == "server_full"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1013


async def test_session_end_closes_normally():
    async with voice_server() as vs:
        async with VoiceClient.connect(vs.ws_url) as client:
            await client.end()
            closed = await client.wait_for("session.closed")
            assert closed["reason"] == "client_end"
            with pytest.raises(VoiceClientError):
                await client.next_event(5)
        assert client.ws.close_code == 1000
