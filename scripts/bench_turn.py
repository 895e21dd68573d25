#!/usr/bin/env python
"""Spoken turns through the real server with the embedded models, real-time paced; prints each stage's median/p95.

A real `voiceserver serve` process is started (local faster-whisper, SmolLM2, Piper, LanceDB memory in a temp
directory). Questions are spoken by Piper in this process beforehand, then streamed in 20 ms frames in real time,
each on a new session. Per turn it records the server's metrics event (stt_ms, llm_first_token_ms,
tts_first_audio_ms, voice_to_voice_ms: from the last voiced frame's arrival to the first reply audio queued) and the
client's own voice-to-voice: from sending the frame that holds the end of the spoken question to receiving the first
reply audio byte (this includes the VAD's endpoint wait, silence_ms = 500, plus webrtcvad's hangover).

The same turns are run twice in this process: with speculative transcription (start at a 200 ms pause, keep it if
the caller stays silent) and without it (the baseline), and the ratio of the medians is printed. ``--transport``
names one or more wire formats (scripts/bench_transports/: native, and the other gateways'); each runs the same
questions against the same server, so their figures sit next to each other in one run.

    .venv/bin/python scripts/bench_turn.py --turns 10
    .venv/bin/python scripts/bench_turn.py --turns 10 --transport native,webrtc --no-baseline
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

QUESTIONS = [
    "What is the capital of France?",
    "Can you tell me a fun fact about the moon?",
    "How do I make a cup of tea?",
    "What time does the sun usually set in summer?",
    "Recommend a good book for a long train ride.",
    "What is two plus two?",
    "Say something nice about dogs.",
    "How far away is the sun?",
]


def spoken_questions(models: Path) -> list[tuple[str, bytes, float]]:
    """(text, 16 kHz pcm16 with 0.3 s of lead silence, stream ms at which speech ends)."""
    from voiceserver.testing.speech import speak

    out = []
    for text in QUESTIONS:
        audio = speak(models, text, lead_silence_ms=300)
        samples = np.frombuffer(audio, dtype="<i2").astype(np.int32)
        voiced = np.nonzero(np.abs(samples) > 500)[0]
        end_ms = (voiced[-1] + 1) / 16 if len(voiced) else len(samples) / 16
        out.append((text, audio, float(end_ms)))
    return out


async def wait_ready(url: str, proc: subprocess.Popen) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        for _ in range(1200):
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                if (await http.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("server not ready after 120 s")


STAGES = ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms", "client_voice_to_voice_ms")


async def run_config(name: str, env_extra: dict[str, str], questions, turns: int,
                     transports: list[str]) -> dict[str, dict[str, list[float]]]:
    """One server with ``env_extra``; ``turns`` questions through each transport. {transport: {stage: [ms]}}."""
    from bench_transports import load

    from voiceserver.testing.processes import free_port

    port = free_port()
    data = tempfile.mkdtemp(prefix="voiceserver-bench-")
    env = {**os.environ, "LANCEDB_URI": str(Path(data) / "memory"), **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "voiceserver", "serve", "--port", str(port), "--log-level", "warn"],
                            cwd=REPO, env=env)
    results = {t: {k: [] for k in STAGES} for t in transports}
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc)
        for transport in transports:
            module = load(transport)
            for i in range(turns + 1):  # the first turn warms caches and is not counted
                text, audio, end_ms = questions[i % len(questions)]
                turn = await module.ask(port, audio, end_ms, resource=f"bench-{transport}-{i}")
                if turn.errors or turn.client_voice_to_voice_ms is None:
                    print(f"  [{name}/{transport}] turn {i}: errors {turn.errors}", file=sys.stderr)
                    continue
                if i == 0:
                    continue
                for key in STAGES:
                    value = (turn.client_voice_to_voice_ms if key == "client_voice_to_voice_ms"
                             else turn.metrics.get(key))
                    if value is not None:
                        results[transport][key].append(float(value))
                extra = {k: turn.metrics.get(k) for k in ("stt_ms", "stt_speculative", "stt_speculation_ms",
                                                           "stt_compute_ms", "llm_first_token_ms",
                                                           "tts_first_audio_ms")}
                print(f"  [{name}/{transport}] {text!r} -> {turn.transcript!r}: "
                      f"v2v {turn.client_voice_to_voice_ms:.0f} ms {extra}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(20)
    return results


def summary(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.median(values)), float(np.percentile(values, 95))


async def main_async(args: argparse.Namespace) -> None:
    models = Path(os.environ.get("VOICESERVER_MODELS_DIR") or REPO / "models")
    questions = spoken_questions(models)
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    started = time.perf_counter()
    fast = await run_config("speculative", {"VOICESERVER_TURN__SPECULATIVE_STT": "true"}, questions, args.turns,
                            transports)
    base = (await run_config("baseline", {"VOICESERVER_TURN__SPECULATIVE_STT": "false"}, questions, args.turns,
                             transports) if args.baseline else None)
    print(f"\n{args.turns} turns per configuration and transport, real-time paced, "
          f"{time.perf_counter() - started:.0f} s in all")
    reference = fast[transports[0]]["client_voice_to_voice_ms"]
    for transport in transports:
        print(f"\n[{transport}]")
        print(f"{'stage':<26} {'p50 ms':>8} {'p95 ms':>8}   {'baseline p50':>12} {'p95':>8}   {'p50 ratio':>9}")
        for key in STAGES:
            p50, p95 = summary(fast[transport][key])
            b50, b95 = summary(base[transport][key]) if base else (float("nan"), float("nan"))
            ratio = p50 / b50 if b50 else float("nan")
            print(f"{key:<26} {p50:>8.0f} {p95:>8.0f}   {b50:>12.0f} {b95:>8.0f}   {ratio:>9.2f}")
        if transport != transports[0]:
            p50, _ = summary(fast[transport]["client_voice_to_voice_ms"])
            r50, _ = summary(reference)
            print(f"client voice-to-voice against {transports[0]}: {p50 / r50:.2f}x (p50)")
    print("\nclient_voice_to_voice_ms: from sending the frame with the end of the question to the first reply audio "
          "byte received; includes the 500 ms endpoint silence.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the run without speculative transcription")
    parser.add_argument("--transport", default="native",
                        help="comma-separated transports from scripts/bench_transports (native, webrtc, twilio, ...)")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
