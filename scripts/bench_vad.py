"""Per-call cost of the VAD segmenter and the audio converters: median and p95 in microseconds.

    .venv/bin/python scripts/bench_vad.py [--seconds 60]

Baselines run in the same process: a bare webrtcvad call (what the segmenter adds on top of it), and a numpy
polyphase windowed-sinc resampler (what libswresample through PyAV was chosen over). The signal is synthetic
speech-like audio (harmonic bursts with a syllable-rate envelope, separated by silence), so the segmenter goes
through onset, pause, resume and endpoint states.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import webrtcvad

from voiceserver.audio import Resampler, StreamConverter, float32_to_pcm16
from voiceserver.audio.format import AudioFormat
from voiceserver.vad import ScriptedDetector, Segmenter, SegmenterConfig


def speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    """Alternating 1.5 s voiced bursts (120 Hz harmonics, 4 Hz envelope, noise) and 1 s of near silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) * ((t % 2.5) < 1.5)
    signal = 0.2 * voice * envelope + rng.normal(0, 0.001, t.size)
    return float32_to_pcm16(signal.astype(np.float32))


def measure(fn: Callable[[bytes], object], frames: list[bytes]) -> list[float]:
    timings = []
    clock = time.perf_counter_ns
    for frame in frames:
        t0 = clock()
        fn(frame)
        timings.append((clock() - t0) / 1000)
    return timings


def report(name: str, timings: list[float], baseline: list[float] | None = None) -> None:
    timings = sorted(timings)
    median = statistics.median(timings)
    p95 = timings[int(len(timings) * 0.95)]
    extra = ""
    if baseline:
        extra = f"  ({median / statistics.median(baseline):.2f}x baseline median)"
    print(f"{name:<58} median {median:7.1f} us   p95 {p95:7.1f} us   n={len(timings)}{extra}")


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


class NumpyPolyphase:
    """Baseline: a streaming polyphase Kaiser-windowed sinc resampler in numpy (the alternative we measured)."""

    def __init__(self, in_rate: int, out_rate: int, zero_crossings: int = 24, beta: float = 8.0):
        g = math.gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        cutoff = 0.92 * 0.5 / max(self.up, self.down)
        half_up = zero_crossings * max(self.up, self.down)
        self.half = half_up // self.up + 1
        taps = 2 * self.half
        offsets = (np.arange(self.up)[:, None] + (self.half - 1 - np.arange(taps)[None, :]) * self.up).astype(float)
        inside = np.clip(1 - (offsets / half_up) ** 2, 0, 1)
        table = 2 * cutoff * np.sinc(2 * cutoff * offsets) * np.i0(beta * np.sqrt(inside)) / np.i0(beta)
        self.table = (table / table.sum(axis=1, keepdims=True)).astype(np.float32)
        self.buf = np.zeros(self.half - 1, dtype=np.float32)
        self.buf_start = -(self.half - 1)
        self.next_out = 0

    def process(self, pcm16: bytes) -> bytes:
        x = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768
        self.buf = np.concatenate((self.buf, x))
        end = self.buf_start + self.buf.size
        n_end = ((end - self.half) * self.up - 1) // self.down + 1
        t = np.arange(self.next_out, n_end, dtype=np.int64) * self.down
        i0 = t // self.up
        windows = np.lib.stride_tricks.sliding_window_view(self.buf, 2 * self.half)
        y = np.einsum("ij,ij->i", windows[i0 - (self.half - 1) - self.buf_start], self.table[t - i0 * self.up])
        self.next_out = n_end
        drop = (n_end * self.down) // self.up - (self.half - 1) - self.buf_start
        if drop > 0:
            self.buf, self.buf_start = self.buf[drop:], self.buf_start + drop
        return float32_to_pcm16(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per measurement")
    args = parser.parse_args()
    seconds = args.seconds

    audio16 = speechlike(seconds)
    frames16 = split(audio16, 640)
    print(f"segmenter, 20 ms frames at 16 kHz, {len(frames16)} frames of speech-like audio")
    vad = webrtcvad.Vad(2)
    base = measure(lambda f: vad.is_speech(f, 16000), frames16)
    report("webrtcvad.Vad.is_speech alone (baseline)", base)
    segmenter = Segmenter(SegmenterConfig())
    events = 0

    def feed(frame: bytes) -> None:
        nonlocal events
        events += len(segmenter.feed(frame))

    report("Segmenter.feed with WebRtcDetector", measure(feed, frames16), base)
    print(f"  ({events} events)")
    script = "".join("#" * 75 + "." * 50 for _ in range(len(frames16) // 125 + 1))
    scripted = Segmenter(SegmenterConfig(), ScriptedDetector(script))
    report("Segmenter.feed with ScriptedDetector (state machine only)", measure(scripted.feed, frames16), base)
    odd = Segmenter(SegmenterConfig())
    odd_chunks = split(audio16, 641)
    report("Segmenter.feed, 641-byte chunks (framing + odd byte)", measure(odd.feed, odd_chunks), base)

    print("\nresampling and conversion")
    cases = [
        ("22050 -> 16000 Hz, 100 ms chunks", 22050, 16000, 100),
        ("48000 -> 16000 Hz, 20 ms frames", 48000, 16000, 20),
        ("24000 -> 16000 Hz, 20 ms frames", 24000, 16000, 20),
        ("8000 -> 16000 Hz, 20 ms frames", 8000, 16000, 20),
        ("22050 -> 48000 Hz, 100 ms chunks", 22050, 48000, 100),
        ("22050 -> 8000 Hz, 100 ms chunks", 22050, 8000, 100),
    ]
    for name, in_rate, out_rate, ms in cases:
        data = speechlike(seconds, in_rate)
        chunks = split(data, in_rate * ms // 1000 * 2)
        baseline = measure(NumpyPolyphase(in_rate, out_rate).process, chunks)
        report(f"numpy polyphase {name} (baseline)", baseline)
        report(f"Resampler (swr) {name}", measure(Resampler(in_rate, out_rate).process, chunks), baseline)
    mulaw = bytes(np.random.default_rng(1).integers(0, 256, int(8000 * seconds), dtype=np.uint8))
    converter = StreamConverter(AudioFormat("mulaw", 8000), AudioFormat("pcm16", 16000))
    report("StreamConverter mulaw 8k -> pcm16 16k, 20 ms frames", measure(converter.convert, split(mulaw, 160)))
    back = StreamConverter(AudioFormat("pcm16", 22050), AudioFormat("mulaw", 8000))
    report("StreamConverter pcm16 22050 -> mulaw 8k, 100 ms chunks",
           measure(back.convert, split(speechlike(seconds, 22050), 4410)))


if __name__ == "__main__":
    main()
