"""`voiceserver talk` as a kiosk, in a real process against a real server: a pipe of raw pcm16 through stdin and
stdout until SIGINT, a file conversation into a WAV, push-to-talk through the library, and the missing extra."""

import asyncio
import math
import signal
import subprocess
import sys

import numpy as np

from voiceserver.audio import read_wav, rms_dbfs, wav_bytes, write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.kiosk import Conversation, PacedSink, WavFileSource
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.harness import voice_server


def tone(ms: int) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (0.4 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2").tobytes()


async def talk(*args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "voiceserver", "talk", "--no-status", *args,
                                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_pipe_mode_streams_stdin_and_plays_replies_to_stdout():
    tts = ToneTTS(ms_per_char=20)
    async with voice_server(tts=tts, stt=ScriptedSTT(["hello there"])) as vs:
        proc = await talk("--url", vs.ws_url, "--pipe", stdin=subprocess.PIPE)
        chunks: list[bytes] = []

        async def read_stdout():
            while data := await proc.stdout.read(65536):
                chunks.append(data)

        reader = asyncio.create_task(read_stdout())
        audio = tone(700) + b"\x00\x00" * 16 * 3000
        for offset in range(0, len(audio), 640):  # a board's microphone: real time
            proc.stdin.write(audio[offset:offset + 640])
            await proc.stdin.drain()
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(asyncio.gather(reader, proc.stderr.read()), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, err.decode()
    out = b"".join(chunks)
    assert "you: hello there" in err.decode() and "assistant: Hello! How can I help you today?" in err.decode()
    samples = np.frombuffer(out[:len(out) - len(out) % 2], dtype="<i2")
    loud = np.abs(samples) > 3000
    assert loud.sum() / 16 > 300, "the reply (a tone) came out of stdout in 16 kHz pcm16"
    assert len(out) / 32 > 3000, "silence between replies too: a steady stream"


async def test_file_conversation_into_a_wav(tmp_path):
    question = tmp_path / "q.wav"
    write_wav(question, AudioChunk(tone(700) + b"\x00\x00" * 16 * 1500, 16000))
    async with voice_server(tts=ToneTTS(ms_per_char=20), stt=ScriptedSTT(["hello there"])) as vs:
        proc = await talk("--url", vs.ws_url, "--file", str(question), "--conversation",
                          "--out", str(tmp_path / "a.wav"))
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    reply = read_wav(tmp_path / "a.wav")
    assert reply.duration_ms > 600 and rms_dbfs(reply.audio) > -30
    assert "assistant: Hello! How can I help you today?" in err.decode()


async def test_missing_sounddevice_is_one_line_naming_the_extra():
    proc = await talk("--mic", "--url", "ws://127.0.0.1:9/v1/voice")
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1, text
    assert "voiceserver[kiosk]" in text and "Traceback" not in text, text


async def test_push_to_talk_commits_on_release():
    async with voice_server(tts=ToneTTS(ms_per_char=20), stt=ScriptedSTT(["hello there"])) as vs:
        # 2.5 s of silence after the speech: the VAD (5 s in push-to-talk) would never end it; only the commit can.
        source = WavFileSource(wav_bytes(AudioChunk(tone(600) + b"\x00\x00" * 16 * 2500, 16000)))
        conversation = Conversation(vs.ws_url, source=source, sink=PacedSink(), push_to_talk=True)
        conversation.press()
        running = asyncio.create_task(conversation.run())
        await asyncio.sleep(0.9)
        conversation.release()
        await asyncio.wait_for(running, 30)
    assert conversation.vad == {"silence_ms": 5000}
    said = [e.text for e in conversation.events if e.kind == "you"]
    assert said == ["hello there"] and any(e.kind == "assistant" for e in conversation.events), \
        "the release ended the utterance"
