"""Kiosk parts on values: reconnection backoff, the echo gate, WebRTC echo cancellation on real speech, the status
line, the guarded sounddevice import, and the file and pipe sources and sinks."""

import asyncio
import math
import os
import random
import sys

import numpy as np
import pytest

from voiceserver.audio import read_wav, rms_dbfs, write_wav
from voiceserver.audio.format import AudioChunk
from voiceserver.kiosk import Backoff, EchoCanceller, EchoGate, PipeSource, Status, WavFileSink, WavFileSource
from voiceserver.kiosk.audio_io import FRAME_BYTES, SILENT_FRAME
from voiceserver.kiosk.cli import render_status
from voiceserver.kiosk.sounddevice_io import AudioDeviceUnavailable, import_sounddevice
from voiceserver.testing.speech import speak


def tone(ms: int, amplitude: float = 0.3, hz: float = 440.0) -> bytes:
    t = np.arange(int(16 * ms)) / 16000
    return (amplitude * np.sin(2 * math.pi * hz * t) * 32767).astype("<i2").tobytes()


def frames_of(pcm: bytes) -> list[bytes]:
    return [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


def test_backoff_grows_is_capped_and_jittered():
    backoff = Backoff(initial_s=0.5, max_s=4.0, factor=2.0, jitter=0.5)
    rng = random.Random(7)
    delays = [[backoff.delay(attempt, rng) for _ in range(200)] for attempt in range(6)]
    for attempt, seen in enumerate(delays):
        base = min(4.0, 0.5 * 2 ** attempt)
        assert all(base * 0.5 <= d <= base for d in seen), attempt
        assert max(seen) - min(seen) > base * 0.3, "jittered: kiosks do not all come back at once"
    assert Backoff(jitter=0.0).delay(3) == 4.0


def test_echo_gate_passes_when_quiet_and_holds_echo_back():
    gate = EchoGate(open_dbfs=-35, margin_db=10, open_ms=100, hangover_ms=100)
    voice = frames_of(tone(200, 0.3))
    assert gate.process(voice[0], speaking=False) == [voice[0]], "the assistant is quiet: everything passes"
    echo = frames_of(tone(1000, 0.05, 300))  # the speaker heard by the mic, about -29 dBFS
    sent = [out for frame in echo for out in gate.process(frame, speaking=True)]
    assert sent and all(out == SILENT_FRAME for out in sent), "echo is sent as silence"
    assert -32 < gate.echo_dbfs < -26, "the echo level was learnt"
    assert gate.opened == 0


def test_echo_gate_opens_for_a_loud_barge_in_with_its_start():
    gate = EchoGate(open_dbfs=-35, margin_db=10, open_ms=100, hangover_ms=100)
    for frame in frames_of(tone(400, 0.05, 300)):
        gate.process(frame, speaking=True)
    barge = frames_of(tone(300, 0.5))
    sent = [out for frame in barge for out in gate.process(frame, speaking=True)]
    assert gate.opened == 1 and gate.is_open
    assert barge[0] in sent and sent[-1] == barge[-1], "the held onset and the rest go through"
    quiet = frames_of(tone(200, 0.05, 300))
    out = [o for frame in quiet for o in gate.process(frame, speaking=False)]
    assert out[-1] == quiet[-1] and not gate.is_open, "after the hangover the gate is idle again"


def test_echo_gate_needs_more_than_the_echo():
    gate = EchoGate(open_dbfs=-35, margin_db=10, open_ms=100)
    for frame in frames_of(tone(500, 0.3, 300)):  # a loud speaker: -13 dBFS of echo
        gate.process(frame, speaking=True)
    for frame in frames_of(tone(300, 0.4)):  # only 2.5 dB louder than the echo: not a barge-in
        gate.process(frame, speaking=True)
    assert gate.opened == 0


def test_webrtc_echo_cancellation_removes_the_speaker_from_the_microphone(models_dir):
    far = speak(models_dir, "The quick brown fox jumps over the lazy dog, again and again, all afternoon long.")
    near = speak(models_dir, "Excuse me.", lead_silence_ms=0)
    delay = 16 * 30 * 2  # the echo arrives 30 ms after the speaker played it, at half the level
    far_arr = np.frombuffer(far, dtype="<i2").astype(np.float32)
    mic = np.zeros(len(far_arr) + 16000 * 2, dtype=np.float32)
    mic[delay // 2:delay // 2 + len(far_arr)] += 0.5 * far_arr
    near_arr = np.frombuffer(near, dtype="<i2").astype(np.float32)
    near_at = len(far_arr) + 8000  # the person speaks after the assistant stopped
    mic[near_at:near_at + len(near_arr)] += near_arr[:len(mic) - near_at]
    mic_pcm = np.clip(mic, -32768, 32767).astype("<i2").tobytes()
    far_pcm = far + b"\x00" * (len(mic_pcm) - len(far))
    canceller = EchoCanceller(delay_ms=30, noise_suppression=False)
    cleaned = b""
    for played, heard in zip(frames_of(far_pcm), frames_of(mic_pcm), strict=False):
        canceller.far(played)
        cleaned += canceller.near(heard)
    echo_part = slice(16000 * 2 * 2, len(far) - 3200)  # after two seconds of convergence, during the echo
    before = rms_dbfs(mic_pcm[echo_part])
    after = rms_dbfs(cleaned[echo_part])
    assert before - after > 20, (before, after)
    person = slice(near_at * 2, (near_at + len(near_arr)) * 2)
    assert rms_dbfs(cleaned[person]) > rms_dbfs(mic_pcm[person]) - 6, "the person's own voice is kept"


def test_status_line():
    assert render_status(Status(state="listening", last_voice_to_voice_ms=812.4, turns=3)) == \
        "o  listening | voice-to-voice 812 ms | 3 turns"
    line = render_status(Status(state="reconnecting", retry_in_s=1.2, error="OSError: refused", turns=1))
    assert line.startswith("<> reconnecting in 1.2 s | OSError: refused") and line.endswith("1 turn")


def test_sounddevice_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(AudioDeviceUnavailable, match=r"voiceserver\[kiosk\]"):
        import_sounddevice()


async def test_wav_source_and_sink_in_real_time(tmp_path):
    question = tmp_path / "in.wav"
    write_wav(question, AudioChunk(tone(100), 16000))
    source = WavFileSource(question, trailing_silence_ms=40)
    assert not source.live and source.duration_ms == 140
    loop = asyncio.get_running_loop()
    started = loop.time()
    read = []
    while (frame := await source.read()) is not None:
        read.append(frame)
    assert len(read) == 7 and loop.time() - started >= 0.1, "paced in real time"
    sink = WavFileSink(tmp_path / "out.wav")
    await sink.start()
    sink.play(tone(200))
    await asyncio.sleep(0.1)
    assert 40 <= sink.played_ms <= 120 and sink.queued_ms > 0
    sink.clear()
    await asyncio.sleep(0.1)
    await sink.close()
    written = read_wav(tmp_path / "out.wav")
    assert written.sample_rate == 16000 and sink.reply_ms == sink.played_ms
    assert written.duration_ms >= sink.played_ms + 40, "silence after the clear is written too"


async def test_pipe_source_reads_raw_pcm_at_any_rate():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"\x10\x00" * 8000)  # one second at 8 kHz
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        source = PipeSource(stream, rate=8000)
        frames = []
        while (frame := await source.read()) is not None:
            frames.append(frame)
    assert 49 <= len(frames) <= 51 and all(len(f) == FRAME_BYTES for f in frames), "resampled to 16 kHz frames"


async def test_a_paused_sink_holds_its_queue(tmp_path):
    sink = WavFileSink(tmp_path / "out.wav")
    await sink.start()
    sink.play(tone(400))
    await asyncio.sleep(0.1)
    sink.pause()
    held = sink.played_ms
    await asyncio.sleep(0.15)
    assert sink.played_ms == held and sink.queued_ms > 0, "nothing plays while paused"
    sink.resume()
    await asyncio.sleep(0.1)
    assert sink.played_ms > held
    await sink.close()
