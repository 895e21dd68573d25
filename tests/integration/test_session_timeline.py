"""A voice session driven through a timeline with scripted engines (set delays) on a real server and client.

"Speech" here is a 440 Hz tone, which webrtcvad reliably classifies as voiced; silence is zeros.
"""

import math

import numpy as np
import pytest

from voiceserver.agent import Agent
from voiceserver.audio import rms_dbfs
from voiceserver.audio.format import AudioFormat
from voiceserver.client import AudioFrame, VoiceClient
from voiceserver.settings import Settings, TurnConfig
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server

RATE = 16000


def tone(ms: int, rate: int = RATE, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2").tobytes()


def silence(ms: int, rate: int = RATE) -> bytes:
    return b"\x00\x00" * int(rate * ms / 1000)


def agent_with(*replies, **kwargs) -> tuple[Agent, ScriptedChatModel]:
    model = ScriptedChatModel(list(replies), **kwargs)
    return Agent(name="Assistant", instructions="Be brief.", model=model), model


async def test_spoken_turn_events_in_order():
    agent, model = agent_with("Hello there. The weather is sunny today.")
    stt = ScriptedSTT(["what is the weather"], delay_s=0.05)
    tts = ToneTTS(sample_rate=22050)
    async with voice_server(agent=agent, stt=stt, tts=tts) as vs, VoiceClient.connect(vs.ws_url) as client:
        assert client.session["type"] == "session.started" and client.session["thread"]
        turn = await client.ask_audio(tone(800), realtime=False)
    kinds = [e["type"] for e in turn.events]
    order = ["speech.started", "speech.stopped", "transcript", "response.started", "response.text.delta",
             "response.audio.started", "response.done", "metrics"]
    positions = [kinds.index(k) for k in order]
    assert positions == sorted(positions), kinds
    assert turn.transcript == "what is the weather"
    assert turn.reply_text == "Hello there. The weather is sunny today."
    # Tone TTS: 20 ms of audio per character at 22050 Hz, resampled to the 16 kHz output.
    expected_ms = sum(len(p) for p in tts.phrases) * 20
    assert abs(AudioFormat().ms_for_bytes(len(turn.audio)) - expected_ms) < 50
    assert rms_dbfs(turn.audio) > -20
    assert len(tts.phrases) >= 2, "the reply is spoken phrase by phrase"
    assert set(turn.metrics) >= {"stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms"}
    assert all(turn.metrics[k] is not None and turn.metrics[k] >= 0 for k in
               ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms"))
    user_turn = model.requests[0].messages[-1]
    assert user_turn.role == "user" and user_turn.content == "what is the weather"


async def test_barge_in_cancels_reply_and_keeps_only_heard_text():
    long_reply = ("One two three four. Five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
                  "seventeen eighteen nineteen twenty.")
    agent, model = agent_with(Reply(text=long_reply, chunk_delay_s=0.01), "Okay, stopping.")
    tts = ToneTTS(ms_per_char=40)
    settings = Settings(turn=TurnConfig(output_lead_ms=100))
    async with voice_server(agent=agent, stt=ScriptedSTT(["tell me a story", "stop"]), tts=tts,
                            settings=settings) as vs, VoiceClient.connect(vs.ws_url) as client:
        await client.stream_audio(tone(600) + silence(700), realtime=False)
        first_turn = None
        audio_frames = 0
        while audio_frames < 15:  # about 1.5 s of reply audio has been sent
            item = await client.next_event(10)
            if isinstance(item, AudioFrame):
                audio_frames += 1
            elif item["type"] == "response.started":
                first_turn = item["turn_id"]
        await client.stream_audio(tone(600) + silence(700), realtime=True)
        events = []
        while True:
            item = await client.next_event(10)
            if isinstance(item, AudioFrame):
                continue
            events.append(item)
            if item["type"] == "metrics" and item["turn_id"] != first_turn:
                break
    cancelled = next(e for e in events if e["type"] == "response.cancelled")
    assert cancelled["turn_id"] == first_turn and cancelled["reason"] == "barge_in"
    heard = cancelled["heard_text"]
    assert heard and long_reply.startswith(heard.split(".")[0]), heard
    assert len(heard) < len(long_reply)
    done = next(e for e in events if e["type"] == "response.done" and e["turn_id"] == first_turn)
    assert done["interrupted"] is True and done["text"] == heard
    assert tts.cancelled >= 1, "the phrase being synthesised was stopped"
    # The second turn's model call sees only what the caller heard of the first reply.
    history = [(m.role, m.content) for m in model.requests[1].messages if m.role in ("user", "assistant")]
    assert ("user", "tell me a story") in history
    assert ("assistant", heard) in history
    assert all(long_reply != content for _, content in history)
    assert vs.server.metrics.barge_ins._value.get() == 1


async def test_response_played_limits_heard_text():
    agent, model = agent_with(Reply(text="Alpha beta gamma delta. Epsilon zeta eta theta.", chunk_delay_s=0.0),
                              "Fine.")
    async with voice_server(agent=agent, tts=ToneTTS(ms_per_char=30),
                            settings=Settings(turn=TurnConfig(output_lead_ms=60000))) as vs, \
            VoiceClient.connect(vs.ws_url) as client:
        await client.send_text("go")
        turn_id = (await client.wait_for("response.audio.started"))["turn_id"]
        await client.wait_for("response.done")
        # All audio was sent at once (large lead), but the client played only the first 300 ms.
        await client.played(turn_id, 300)
        await client.send_text("next")
        await client.wait_for("response.done")
    assert model.requests[1].messages[-2].role == "assistant"
    heard = model.requests[1].messages[-2].content
    assert heard == "Alpha beta gamma delta. Epsilon zeta eta theta.", "a finished reply is kept whole"


async def test_cancel_mid_reply_with_played_ms():
    agent, model = agent_with(Reply(text="Alpha beta gamma delta. Epsilon zeta eta theta.", chunk_delay_s=0.02),
                              "Fine.")
    tts = ToneTTS(ms_per_char=30, chunk_delay_s=0.05)
    async with voice_server(agent=agent, tts=tts, settings=Settings(turn=TurnConfig(output_lead_ms=60000))) as vs, \
            VoiceClient.connect(vs.ws_url) as client:
        await client.send_text("go")
        turn_id = (await client.wait_for("response.audio.started"))["turn_id"]
        received = 0
        while received < 6:  # 600 ms of audio in hand, of which the client says it played 400 ms
            if isinstance(await client.next_event(10), AudioFrame):
                received += 1
        await client.played(turn_id, 400)
        await client.cancel()
        cancelled = await client.wait_for("response.cancelled")
    assert cancelled["turn_id"] == turn_id and cancelled["reason"] == "client_cancel"
    # "Alpha beta gamma delta." is 23 characters = 690 ms of audio; 400 ms played is about half of its words.
    assert cancelled["heard_text"] in ("Alpha beta", "Alpha")


async def test_typed_turn_and_conversation_history_without_memory():
    agent, model = agent_with("First answer.", "Second answer.")
    async with voice_server(agent=agent) as vs, VoiceClient.connect(vs.ws_url) as client:
        one = await client.ask_text("first question")
        two = await client.ask_text("second question")
    assert (one.reply_text, two.reply_text) == ("First answer.", "Second answer.")
    assert one.transcript is None and one.audio
    convo = [(m.role, m.content) for m in model.requests[1].messages if m.role in ("user", "assistant")]
    assert convo == [("user", "first question"), ("assistant", "First answer."), ("user", "second question")]


async def test_speech_before_reply_is_carried_into_next_turn():
    """The caller pauses mid-sentence, then continues before the answer starts: nothing they said is lost."""
    agent, model = agent_with(Reply(text="Slow answer.", first_delay_s=1.5), "Combined answer.")
    stt = ScriptedSTT(lambda audio: f"{len(audio)} bytes", delay_s=0.05)
    async with voice_server(agent=agent, stt=stt) as vs, VoiceClient.connect(vs.ws_url) as client:
        await client.stream_audio(tone(500) + silence(650) + tone(500) + silence(800), realtime=True)
        while True:
            item = await client.next_event(10)
            if isinstance(item, dict) and item["type"] == "response.done" and not item["interrupted"]:
                break
    texts = [m.content for m in model.requests[-1].messages if m.role == "user"]
    # Both utterances reach the model: as two user messages (the first was answered too late and cut), or as one
    # transcription of both parts joined (when the cut came before the first was transcribed).
    total = sum(int(t.split()[0]) for t in texts)
    assert total >= 2 * len(tone(500)), texts
    assert vs.server.metrics.turns.labels("ok")._value.get() >= 1


@pytest.mark.parametrize("fmt", [AudioFormat("mulaw", 8000), AudioFormat("pcm16", 48000), AudioFormat("pcm16", 8000),
                                 AudioFormat("pcm16", 24000)])
async def test_other_formats_in_and_out(fmt):
    from voiceserver.audio import StreamConverter

    agent, _ = agent_with("Sure thing.")
    to_fmt = StreamConverter(AudioFormat("pcm16", 16000), fmt)
    speech = to_fmt.convert(tone(800) + silence(900)) + to_fmt.flush()
    async with voice_server(agent=agent) as vs, \
            VoiceClient.connect(vs.ws_url, input_format=fmt, output_format=fmt) as client:
        assert client.session["audio"] == fmt.to_dict() and client.session["output_audio"] == fmt.to_dict()
        await client.stream_audio(speech, realtime=False)
        turn = await client.collect_turn(20)
    assert turn.transcript == "hello there" and turn.reply_text == "Sure thing."
    assert turn.audio_format == fmt
    back = StreamConverter(fmt, AudioFormat("pcm16", 16000))
    assert rms_dbfs(back.convert(turn.audio) + back.flush()) > -20
