#!/usr/bin/env python
"""Speech-to-text accuracy and speed on held-out utterances: word error rate and latency per configuration.

60 sentences (none of them used by the other benchmarks or the tests), 1 to 15 s long, are spoken by two
synthesizers: the embedded Piper voice and espeak-ng (Debian's `espeak-ng`, which scripts/test installs). Each
configuration transcribes every utterance with the local faster-whisper engine; the script prints the word error rate
(substitutions + deletions + insertions over reference words, after normalising case, punctuation and British/American
spelling) and the latency median / p95, each next to the baseline configuration (Whisper's full 30 s encoder window)
and the ratio. The issue's rule: the fitted window may not raise the word error rate by more than 1 point absolute.

    .venv/bin/python scripts/bench_stt.py                          # baseline (full) against the default (fit)
    .venv/bin/python scripts/bench_stt.py --configs full,fit,fit:padding=2 --voices piper
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SENTENCES = [
    "Hi.", "Thanks a lot.", "Not right now.", "Sounds good to me.", "Can you hear me?", "Turn off the lights.",
    "Where is the nearest pharmacy?", "Please call my sister tomorrow morning.", "I would like to change my booking.",
    "How many ounces are in a pound?", "Remind me to water the plants at six.", "The train leaves from platform nine.",
    "Is it going to rain in Seattle this weekend?", "My password stopped working after the update.",
    "Could you spell the word necessary for me?", "We need two large pizzas and a bottle of water.",
    "What time does the museum open on Sundays?", "I lost my wallet somewhere between the office and the bus stop.",
    "Set a timer for twenty minutes and let me know when it is done.",
    "The meeting has been moved to Thursday afternoon at half past three.",
    "Read me the headlines from this morning, but skip the sports section.",
    "My daughter has a piano lesson every Wednesday after school.",
    "How long does it take to boil an egg so the yolk stays soft?",
    "I am calling about the invoice I received last week, the amount looks wrong.",
    "Please book a table for four people at the Italian restaurant near the station.",
    "Yesterday I walked along the river and counted seven herons standing in the shallow water.",
    "Can you explain the difference between weather and climate in simple words?",
    "The package was supposed to arrive on Monday, but the tracking page still says it is in the warehouse.",
    "Add eggs, flour, butter and a small bag of brown sugar to my shopping list.",
    "When I was a child we spent every summer at my grandmother's house by the sea.",
    "Translate good morning into Spanish and then into German.",
    "My heating makes a strange knocking noise at night, should I call someone?",
    "How far is it from Chicago to Denver if I drive without stopping?",
    "I want to cancel my subscription, but keep the account open for my photos.",
    "Do you know any good exercises for a sore lower back?",
    "The library closes early on public holidays, so please return the books before noon.",
    "What is the square root of one hundred and forty four?",
    "Tell me something interesting about octopuses.",
    "Our flight was delayed by three hours and we missed the connection in Frankfurt.",
    "Please repeat the last part, I did not catch the phone number.",
    "He bought a second hand bicycle with a basket and bright red handlebars.",
    "Is there a vegetarian option on the menu tonight?",
    "The doctor said I should drink more water and sleep at least eight hours.",
    "Switch the living room thermostat to twenty one degrees.",
    "Why do cats purr when they are happy?",
    "I need a taxi to the airport at five thirty tomorrow morning.",
    "She has been learning to paint with watercolours for almost a year now.",
    "What is the difference between a crocodile and an alligator?",
    "Please send the report to Maria and copy the whole finance team.",
    "It was so foggy this morning that I could barely see the end of the street.",
    "How do I reset the router without losing my settings?",
    "The concert starts at eight, so let's meet at the entrance at half past seven.",
    "Give me three ideas for a quick dinner with rice and vegetables.",
    "My neighbour's dog barks every time the postman walks past the gate.",
    "Which planet is closest to the sun?",
    "Okay.", "No thank you.", "Yes, that is correct.",
    "I have been waiting on hold for forty minutes and nobody has answered, which is really frustrating.",
    "Before you go, could you check whether the back door is locked and the windows are closed?",
    "Last spring we drove along the coast for a week, stopping in small fishing towns, eating grilled sardines and "
    "watching the boats come back in the evening with their nets full.",
    "I would like to know whether my insurance covers the repair of a cracked windscreen, because the garage quoted "
    "me almost four hundred dollars and I do not want to pay that twice.",
    "Could you help me plan a birthday party for twelve children, with games in the garden, a simple cake, and "
    "something to do indoors in case it rains in the afternoon?",
    "The instructions say to mix the powder with warm water, wait five minutes, stir again, and then pour it slowly "
    "into the mould without making any bubbles.",
    "When you get to the roundabout, take the second exit, keep going past the petrol station and the school, and "
    "our house is the blue one on the left after the bakery.",
]

_SPELLING = {"favourite": "favorite", "colour": "color", "colours": "colors", "watercolours": "watercolors",
             "neighbour": "neighbor", "neighbours": "neighbors", "neighbour's": "neighbor's", "centre": "center",
             "okay": "ok", "grey": "gray", "travelled": "traveled", "programme": "program"}
_NUMBERS = {"twenty one": "21", "one hundred and forty four": "144", "twenty": "20", "forty": "40", "seven": "7",
            "eight": "8", "nine": "9", "three": "3", "four": "4", "five": "5", "six": "6", "two": "2", "one": "1"}


def normalise(text: str) -> list[str]:
    """Lowercase words without punctuation, British spelling and spelled-out numbers mapped to one form."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = " " + " ".join(text.split()) + " "
    for spelled, digits in _NUMBERS.items():
        text = text.replace(f" {spelled} ", f" {digits} ")
    return [_SPELLING.get(w, w) for w in text.split()]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference word count)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def piper_audio(models: Path, text: str) -> bytes:
    from voiceserver.testing.speech import speak

    return speak(models, text, lead_silence_ms=200) + b"\x00\x00" * 3200


def espeak_audio(text: str, tmp: Path) -> bytes:
    from voiceserver.audio import read_wav, to_pcm16_16k

    out = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "155", "-w", str(out), text], check=True,
                   capture_output=True)
    chunk = to_pcm16_16k(read_wav(out.read_bytes()))
    return b"\x00\x00" * 3200 + chunk + b"\x00\x00" * 3200


def parse_config(spec: str) -> tuple[str, dict[str, float | str]]:
    """"fit:padding=2,min=5" -> ("fit:padding=2,min=5", {"window": "fit", "window_padding_s": 2, ...})."""
    name, _, rest = spec.partition(":")
    options: dict[str, float | str] = {"window": name}
    keys = {"padding": "window_padding_s", "min": "min_window_s", "pad": "pad_with"}
    for part in filter(None, rest.split(";")):
        key, _, value = part.partition("=")
        options[keys.get(key, key)] = value if key == "pad" else float(value)
    return spec, options


async def run_config(models: Path, options: dict, utterances: list[tuple[str, str, bytes]]) -> dict:
    from voiceserver.audio.format import AudioChunk
    from voiceserver.stt.faster_whisper import FasterWhisperSTT

    stt = FasterWhisperSTT(models / "whisper-base", **options)
    await stt.warmup()
    errors = {voice: [0, 0] for voice in {u[0] for u in utterances}}
    latency: list[float] = []
    worst: list[tuple[int, str, str]] = []
    for voice, text, audio in utterances:
        started = time.perf_counter()
        result = await stt.transcribe(AudioChunk(audio, 16000))
        latency.append((time.perf_counter() - started) * 1000)
        wrong, total = word_errors(text, result.text)
        errors[voice][0] += wrong
        errors[voice][1] += total
        if wrong:
            worst.append((wrong, text, result.text))
    await stt.close()
    worst.sort(reverse=True)
    return {"errors": errors, "latency": latency, "worst": worst[:4]}


def wer(errors: dict) -> float:
    wrong = sum(e[0] for e in errors.values())
    total = sum(e[1] for e in errors.values())
    return 100.0 * wrong / max(total, 1)


async def main_async(args: argparse.Namespace) -> None:
    models = Path(args.models)
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if "espeak" in voices and shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng (scripts/test installs it)")
    utterances: list[tuple[str, str, bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in SENTENCES[: args.sentences]:
            if "piper" in voices:
                utterances.append(("piper", text, piper_audio(models, text)))
            if "espeak" in voices:
                utterances.append(("espeak", text, espeak_audio(text, Path(tmp))))
    lengths = [len(a) / 32000 for _, _, a in utterances]
    print(f"{len(utterances)} utterances ({', '.join(voices)}), {min(lengths):.1f}-{max(lengths):.1f} s long")
    configs = [parse_config(c) for c in args.configs.split(",")]
    results = {}
    for name, options in configs:
        results[name] = await run_config(models, options, utterances)
        r = results[name]
        print(f"  {name}: WER {wer(r['errors']):.1f} %, latency p50 {np.median(r['latency']):.0f} ms", file=sys.stderr)
    base_name = configs[0][0]
    base = results[base_name]
    print(f"\n{'config':<28} {'WER %':>6} " + " ".join(f"{v + ' WER':>11}" for v in voices)
          + f" {'p50 ms':>7} {'p95 ms':>7} {'WER diff':>9} {'p50 ratio':>9}")
    for name, r in results.items():
        per_voice = " ".join(f"{wer({v: r['errors'][v]}):>11.1f}" for v in voices)
        p50, p95 = np.median(r["latency"]), np.percentile(r["latency"], 95)
        print(f"{name:<28} {wer(r['errors']):>6.1f} {per_voice} {p50:>7.0f} {p95:>7.0f} "
              f"{wer(r['errors']) - wer(base['errors']):>+9.1f} {p50 / np.median(base['latency']):>9.2f}")
    print(f"\nbaseline: {base_name}. Target: the WER of the default may rise by at most 1.0 point.")
    for name, r in results.items():
        for wrong, text, heard in r["worst"]:
            print(f"  [{name}] {wrong} wrong: {text!r} -> {heard!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="full,fit",
                        help="comma-separated: full | fit[:padding=S;min=S;pad=audio|features] (the first is the "
                             "baseline)")
    parser.add_argument("--voices", default="piper,espeak")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES))
    parser.add_argument("--models", default=str(REPO / "models"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
