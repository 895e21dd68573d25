"""Bad input on the Twilio stream, against a real server: each message is logged with a clear code and counted, and
the call goes on; what cannot be a call (no start, a format we cannot decode, a full server) is closed."""

import asyncio
import base64
import json
import logging
import math

import numpy as np
import websockets

from voiceserver.settings import LimitsConfig, Settings, TwilioConfig
from voiceserver.testing.fake_twilio import SILENCE, FakeTwilioCall, to_mulaw_8k
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server

SID = "MZ" + "5" * 32


def tone(ms: int, rate: int = 16000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


def start(fmt: dict | None = None) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA" + "6" * 32, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
        "mediaFormat": fmt or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {}}})


def media(audio: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": SID,
                       "media": {"track": "inbound", "payload": base64.b64encode(audio).decode()}})


BAD = [
    ("this is not json", "invalid_json"),
    ("[1, 2, 3]", "invalid_message"),
    ('{"event": "bogus", "streamSid": "MZ"}', "unknown_event"),
    ('{"event": "media", "streamSid": "MZ", "media": {"payload": "***"}}', "invalid_audio"),
    ('{"event": "mark", "streamSid": "MZ", "mark": {"name": "never-sent"}}', "unknown_mark"),
    ('{"event": "dtmf", "streamSid": "MZ", "dtmf": {"digit": "x"}}', "invalid_dtmf"),
    (start(), "duplicate_start"),
    ('{"event": "media", "payload": "' + "A" * 3000 + '"}', "message_too_large"),
    (b"\x00\x01\x02", "binary_frame"),
]


async def test_bad_messages_are_logged_with_a_code_and_the_call_goes_on(caplog):
    caplog.set_level(logging.WARNING)
    settings = Settings(twilio=TwilioConfig(max_message_bytes=2048))
    async with voice_server(settings=settings, tts=ToneTTS(ms_per_char=10), stt=ScriptedSTT(["hello"])) as vs:
        ws = await websockets.connect(vs.running.ws_url + "/v1/twilio/stream")
        try:
            await ws.send('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
            await ws.send(media(SILENCE))  # before start
            await ws.send(start())
            for message, _ in BAD:
                await ws.send(message)
            speech = to_mulaw_8k(tone(600)) + SILENCE * 60
            for offset in range(0, len(speech), 160):
                await ws.send(media(speech[offset:offset + 160]))
            reply = None
            async with asyncio.timeout(20):
                while reply is None:
                    message = json.loads(await ws.recv())
                    reply = message if message["event"] == "media" else None
            assert reply["streamSid"] == SID, "the call went on and was answered"
        finally:
            await ws.close()
        metrics = vs.server.metrics.render().decode()
    codes = ["media_before_start"] + [code for _, code in BAD]
    for code in codes:
        assert f'voiceserver_errors_total{{code="{code}"}} 1.0' in metrics, code
    logged = {r.fields["code"] for r in caplog.records if getattr(r, "fields", None) and "code" in r.fields}
    assert set(codes) - {"invalid_dtmf"} <= logged, "each logged with its code"
    assert any(r.getMessage() == "session error on a call" and r.fields["code"] == "invalid_dtmf"
               for r in caplog.records), "the session's own error is logged too"


async def test_what_cannot_be_a_call_is_closed():
    settings = Settings(twilio=TwilioConfig(start_timeout_s=0.5), limits=LimitsConfig(max_sessions=1))
    async with voice_server(settings=settings, tts=ToneTTS(ms_per_char=10)) as vs:
        url = vs.running.ws_url + "/v1/twilio/stream"
        silent = await websockets.connect(url)
        await silent.send('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
        async with asyncio.timeout(5):
            await silent.wait_closed()
        assert silent.close_code == 1008

        wideband = await websockets.connect(url)
        await wideband.send(start({"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}))
        async with asyncio.timeout(5):
            await wideband.wait_closed()
        assert wideband.close_code == 1008 and vs.server.hub.sessions == {}

        async with FakeTwilioCall.dial(vs.http_url) as first:
            await first.wait_for(lambda c: vs.server.hub.sessions, timeout=5)
            second = await FakeTwilioCall.connect(url, {}, call_sid="CA" + "7" * 32, account_sid="AC" + "0" * 32)
            await asyncio.wait_for(second.closed.wait(), 5)
            assert second.ws.close_code == 1013, "server full: the same limit as every gateway"
            await second.hang_up()
        metrics = vs.server.metrics.render().decode()
    for code in ("start_timeout", "unsupported_media_format", "server_full"):
        assert f'voiceserver_errors_total{{code="{code}"}} 1.0' in metrics, code
