"""A real aiortc caller against a real server on 127.0.0.1 port 0: speech on the microphone track (Opus), the reply
on the track, the events on the data channel, barge-in, and memory keeping only what was heard."""

import asyncio
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from voiceserver.agent import Agent
from voiceserver.session.playback import PlaybackTracker
from voiceserver.settings import Settings, TurnConfig
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server
from voiceserver.testing.speech import speak
from voiceserver.testing.webrtc_caller import WebRtcCaller

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))
import memory_app  # noqa: E402

LONG_REPLY = ("Alpha beta gamma delta. Epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
              "upsilon phi chi psi omega. And a last sentence nobody hears.")


@pytest.fixture(scope="module")
def question(models_dir) -> bytes:
    return speak(models_dir, "What is the capital of France?", lead_silence_ms=300)


def utterance_ms(audio: bytes) -> str:
    return f"{len(audio) / 32:.0f}"


def dominant_hz(pcm16_16k: bytes) -> float:
    samples = np.frombuffer(pcm16_16k, dtype="<i2").astype(np.float32)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 16000)[int(np.argmax(spectrum))])


async def test_spoken_question_and_reply_on_the_tracks(question):
    """The microphone's Opus is decoded and resampled: the VAD cuts exactly one utterance about as long as the
    speech; the reply's tone arrives on the track, as long as the text says, at its pitch."""
    stt = ScriptedSTT(utterance_ms)  # the "transcript" is the utterance length the server cut
    reply = "Paris is the capital of France."
    agent = Agent(name="Assistant", instructions="x", model=ScriptedChatModel([reply]))
    async with voice_server(agent=agent, stt=stt, tts=ToneTTS(ms_per_char=20)) as vs, \
            WebRtcCaller.connect(vs.http_url, resource="caller-1") as caller:
        assert caller.session["output_audio"] == {"encoding": "pcm16", "sample_rate": 48000}
        assert caller.session["resource"] == "caller-1" and caller.session["session_id"] == caller.session_id
        caller.say(question)
        transcript = await caller.wait_for("transcript", 20)
        audio_started = await caller.wait_for("response.audio.started", 20)
        done = await caller.wait_for("response.done", 20)
        metrics = await caller.wait_for("metrics", 20)
        # The last frames are still on their way (real-time paced), and the first may not have arrived yet.
        await caller.settle(since=audio_started["_received_at"] - 0.1)
        heard = caller.audible_frames(audio_started["_received_at"] - 0.1)
    speech_ms = len(question) / 32 - 300  # without the lead silence
    cut_ms = float(transcript["text"])
    # The utterance is the speech plus up to prefix_ms (300) of pre-roll and silence_ms (500) of trailing silence,
    # give or take a late packet or two on a busy machine.
    assert speech_ms - 100 <= cut_ms <= speech_ms + 300 + 500, (cut_ms, speech_ms)
    assert len(stt.calls) >= 1 and done["text"] == reply and not done["interrupted"]
    assert metrics["voice_to_voice_ms"] > 0
    expected_ms = len(reply) * 20
    # All of it arrived (a frame or a few may be late for an aiortc jitter buffer on a busy machine).
    assert expected_ms - 200 <= 20 * len(heard) <= expected_ms + 100, (20 * len(heard), expected_ms)
    assert abs(dominant_hz(b"".join(f.pcm16_16k for f in heard)) - 440) < 15, "the tone survived Opus both ways"


async def test_events_channel_carries_the_native_messages_both_ways():
    agent = Agent(name="Assistant", instructions="x", model=ScriptedChatModel(["Sure thing."]))
    async with voice_server(agent=agent) as vs, \
            WebRtcCaller.connect(vs.http_url, resource="caller-2", thread="conv-2") as caller:
        assert caller.session["thread"] == "conv-2"
        await caller.send_text("hello")
        kinds = []
        while "metrics" not in kinds:
            kinds.append((await caller.next_event(10))["type"])
        assert kinds[:2] == ["response.started", "response.text.delta"] and "response.done" in kinds
        for message, code in ((b"\x01\x02", "invalid_message"), ("{oops", "invalid_json"),
                              ('{"type":"response.played","turn_id":"t","played_ms":5}', "invalid_message"),
                              ('{"type":"session.start"}', "session_already_started"),
                              ('{"type":"tool.approve","tool_call_id":"nope"}', "no_pending_approval")):
            caller.channel.send(message)
            error = await caller.wait_for("error", 10)
            assert error["code"] == code and error["message"], (message, error)
        await caller.send_json({"type": "ping", "id": "p1"})
        assert (await caller.wait_for("pong", 10))["id"] == "p1"
        await caller.send_json({"type": "session.end"})
        closed = await caller.wait_for("session.closed", 10)
        assert closed["reason"] == "client_end"
        for _ in range(100):
            if not vs.server.hub.sessions:
                break
            await asyncio.sleep(0.05)
        assert not vs.server.hub.sessions, "the session is freed when the caller ends it"


def heard_for(phrases: list[str], ms_per_char: float, played_ms: float) -> str:
    """What the session's rule keeps after ``played_ms`` of a reply spoken as ``phrases``."""
    tracker = PlaybackTracker()
    for phrase in phrases:
        tracker.begin_phrase(phrase)
        tracker.add_audio(len(phrase) * ms_per_char, 0.0)
        tracker.end_phrase()
    tracker.report_played(played_ms)
    return tracker.heard_text()


async def test_barge_in_stops_the_track_and_memory_keeps_what_was_heard(tmp_path, models_dir, monkeypatch, question):
    monkeypatch.setenv("LANCEDB_URI", str(tmp_path / "memory"))
    monkeypatch.setenv("VOICESERVER_MODELS_DIR", str(models_dir))
    app = memory_app.build()
    agent = app.get_agent("Assistant")
    agent.model = ScriptedChatModel([Reply(text=LONG_REPLY, chunk_delay_s=0.01)])
    agent._resolved_model = None
    tts = ToneTTS(ms_per_char=40)
    settings = Settings(turn=TurnConfig(reply_max_sentences=0))
    async with voice_server(agent=agent, memory=app.memory, tts=tts, settings=settings,
                            stt=ScriptedSTT(["tell me the alphabet", "stop"])) as vs, \
            httpx.AsyncClient(base_url=vs.http_url) as http:
        async with WebRtcCaller.connect(vs.http_url, resource="caller-3") as caller:
            await caller.send_text("tell me the alphabet")
            audio_started = await caller.wait_for("response.audio.started", 10)
            await asyncio.sleep(1.6)
            caller.say(question)  # the caller talks over the reply
            speech = await caller.wait_for("speech.started", 10)
            cancelled = await caller.wait_for("response.cancelled", 10)
            session = vs.server.hub.sessions[caller.session_id]
            played_ms = session._turn.playback.reported_played_ms  # what the track reported as sent
            await asyncio.sleep(0.6)
            reply_frames = caller.audible_frames(audio_started["_received_at"] - 0.1)
            thread = caller.session["thread"]
        messages = (await http.get(f"/v1/memory/threads/{thread}/messages")).json()["messages"]
    after_speech = [f for f in reply_frames if f.received_at > speech["_received_at"]]
    voiced = np.nonzero(np.abs(np.frombuffer(question, dtype="<i2")) > 500)[0]
    onset = caller.mic.sent_at(voiced[0] / 16 + 20)  # the frame holding the first voiced sample left the mic
    after_onset = [f for f in reply_frames if f.received_at > onset]
    before_cut = [f for f in reply_frames if f.received_at <= cancelled["_received_at"] + 0.15]
    # Reply audio the caller received after their voice began: at most 300 ms (15 frames of 20 ms). The reply
    # pauses at the first voiced frames, so none arrives after the server confirms the speech.
    assert len(after_onset) <= 15, f"{20 * len(after_onset)} ms of reply after the caller's voice began"
    assert len(after_speech) <= 2, f"{20 * len(after_speech)} ms of reply after speech.started"
    assert cancelled["reason"] == "barge_in"
    heard = cancelled["heard_text"]
    assert heard and LONG_REPLY.startswith(heard) and len(heard) < len(LONG_REPLY)
    # The track reported the frames that left it: what the caller received, give or take its jitter buffer.
    received_ms = 20 * len(before_cut)
    assert abs(played_ms - received_ms) <= 160, (played_ms, received_ms)
    # The heard text holds every word received, and no phrase whose audio had not started when the reply was cut.
    assert heard.startswith(heard_for(tts.phrases, 40, received_ms - 160))
    sentences = [s + "." for s in LONG_REPLY.rstrip(".").split(". ")]
    started = [p for i, p in enumerate(sentences) if sum(len(q) * 40 for q in sentences[:i]) < received_ms + 160]
    assert len(started) < len(sentences) and len(heard) <= len(" ".join(started)) and "nobody" not in heard
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert [m["content"] for m in assistant] == [heard], "memory holds exactly the heard text"
    assert assistant[0]["metadata"].get("interrupted") is True


def tone16k(ms: int) -> bytes:
    t = np.arange(int(16 * ms)) / 16000
    return (0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()


async def test_a_mm_hmm_holds_the_track_and_the_reply_plays_to_the_end():
    """A short sound over the reply pauses it (the track sends silence, nothing is thrown away); its words are a
    backchannel, so the reply resumes where it paused and every phrase is heard."""
    reply = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa. Lambda mu nu xi omicron pi rho sigma."
    agent = Agent(name="Assistant", instructions="x", model=ScriptedChatModel([Reply(text=reply, chunk_delay_s=0.01)]))
    tts = ToneTTS(ms_per_char=30)
    async with voice_server(agent=agent, tts=tts, stt=ScriptedSTT(["mm-hmm"])) as vs, \
            WebRtcCaller.connect(vs.http_url, resource="caller-4") as caller:
        await caller.send_text("tell me the alphabet")
        audio_started = await caller.wait_for("response.audio.started", 10)
        await asyncio.sleep(1.0)
        caller.say(tone16k(300))  # a listening noise over the reply
        paused = await caller.wait_for("response.paused", 10)
        resumed = await caller.wait_for("response.resumed", 10)
        done = await caller.wait_for("response.done", 20)
        await caller.settle(since=audio_started["_received_at"] - 0.1)
        frames = caller.audible_frames(audio_started["_received_at"] - 0.1)
    assert not done["interrupted"] and done["text"] == reply
    held = [f for f in frames if paused["_received_at"] + 0.2 < f.received_at < resumed["_received_at"]]
    assert resumed["_received_at"] - paused["_received_at"] > 0.3 and not held, "the track sent silence meanwhile"
    spoken_ms = sum(len(p) * 30 for p in tts.phrases)
    assert abs(20 * len(frames) - spoken_ms) <= 200, (20 * len(frames), spoken_ms)
