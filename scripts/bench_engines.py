"""Latency of the local speech engines through their providers: median and p95 in milliseconds.

    .venv/bin/python scripts/bench_engines.py [--runs 10] [--models models]

- STT: FasterWhisperSTT (Whisper base, int8, our decode settings) on a 1.5 s and a 5 s utterance of Piper speech.
  Baseline in the same process: the same model with faster-whisper's default decode settings (beam 5, timestamps,
  conditioning on previous text), which is what our settings were chosen over.
- TTS: PiperTTS time to first audio for a 4-word and a 20-word phrase, and the total time for the 20-word phrase.
  Baseline in the same process: calling ``PiperVoice.synthesize`` directly in a thread (what the provider's gate,
  thread hop and queue add).

Run it on an otherwise idle machine: the figures are wall-clock and the machine's other load shows up in them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from voiceserver.audio import pcm16_to_float32, resample_pcm16
from voiceserver.audio.format import AudioChunk
from voiceserver.stt.faster_whisper import FasterWhisperSTT
from voiceserver.tts.piper import PiperTTS

SHORT_PHRASE = "Turn the lights on."  # 4 words
LONG_PHRASE = ("The weather in London today is mild and cloudy, with a light breeze from the west "
               "and some rain later tonight.")  # 20 words
UTTERANCES = {1.5: "Turn on the kitchen lights.",
              5.0: "What is the weather like in London today, and will I need an umbrella tomorrow morning?"}


def summary(name: str, samples: list[float], baseline: list[float] | None = None) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    line = f"{name:<44} median {median * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"
    if baseline:
        line += f"   ratio vs baseline {median / statistics.median(baseline):5.2f}"
    return line


async def speech_16k(tts: PiperTTS, text: str, seconds: float) -> bytes:
    """Piper speech resampled to 16 kHz, padded with silence (or cut) to exactly ``seconds``."""
    audio = b"".join([c.audio async for c in tts.synthesize(text)])
    pcm = resample_pcm16(audio, tts.sample_rate, 16000)
    want = int(seconds * 16000) * 2
    return pcm[:want] + bytes(max(0, want - len(pcm)))


def library_defaults(stt: FasterWhisperSTT, pcm: bytes) -> str:
    """The same loaded model with faster-whisper's default decode settings, segments consumed in this thread."""
    segments, _ = stt._model.transcribe(pcm16_to_float32(pcm), language="en")
    return "".join(s.text for s in segments)


def piper_first_audio_direct(tts: PiperTTS, text: str) -> None:
    from piper.config import SynthesisConfig

    next(iter(tts._voice.synthesize(text, syn_config=SynthesisConfig())))


async def bench_stt(models: Path, tts: PiperTTS, runs: int) -> list[str]:
    stt = FasterWhisperSTT(models / "whisper-base", threads=2, workers=1)
    await stt.warmup()
    lines = []
    for seconds, text in UTTERANCES.items():
        pcm = await speech_16k(tts, text, seconds)
        chunk = AudioChunk(pcm, 16000)
        ours, base = [], []
        transcript = ""
        for _ in range(runs):
            started = time.perf_counter()
            transcript = (await stt.transcribe(chunk)).text
            ours.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.to_thread(library_defaults, stt, pcm)
            base.append(time.perf_counter() - started)
        lines.append(summary(f"stt {seconds:.1f} s utterance (faster-whisper defaults)", base))
        lines.append(summary(f"stt {seconds:.1f} s utterance (FasterWhisperSTT)", ours, base))
        lines.append(f"    transcript: {transcript!r}")
    return lines


async def bench_tts(tts: PiperTTS, runs: int) -> list[str]:
    lines = []
    for label, text in (("4-word", SHORT_PHRASE), ("20-word", LONG_PHRASE)):
        first, total, direct = [], [], []
        for _ in range(runs):
            started = time.perf_counter()
            first_at = None
            async for _chunk in tts.synthesize(text):
                if first_at is None:
                    first_at = time.perf_counter() - started
            total.append(time.perf_counter() - started)
            first.append(first_at or 0.0)

            started = time.perf_counter()
            await asyncio.to_thread(piper_first_audio_direct, tts, text)
            direct.append(time.perf_counter() - started)
        lines.append(summary(f"piper first audio, {label} phrase (direct call)", direct))
        lines.append(summary(f"piper first audio, {label} phrase (PiperTTS)", first, direct))
        lines.append(summary(f"piper whole phrase, {label} (PiperTTS)", total))
    return lines


async def main(args: argparse.Namespace) -> None:
    tts = PiperTTS(args.models / "piper" / "en_US-joe-medium.onnx")
    await tts.warmup()
    lines = await bench_tts(tts, args.runs)
    # Utterances for STT without sampling noise, so every run (and every machine) transcribes the same audio.
    steady = PiperTTS(args.models / "piper" / "en_US-joe-medium.onnx", noise_scale=0.0, noise_w_scale=0.0)
    lines += await bench_stt(args.models, steady, args.runs)
    print(f"{args.runs} runs each")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    asyncio.run(main(parser.parse_args()))
