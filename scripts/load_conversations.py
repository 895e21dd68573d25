#!/usr/bin/env python
"""Simultaneous conversations with the real models: voice-to-voice p95 against the number of callers.

One real `voiceserver serve` (the default settings: local faster-whisper, the default local model, Piper, LanceDB
memory in a temp directory) answers N callers at once, for each level N. Every caller is an open mic streaming 20 ms
frames in real time (voiceserver.testing.caller.OpenMicCaller) and asks the same short questions, spoken by Piper
beforehand, each caller starting at a different offset so their questions overlap as real callers' would. Printed:
the client voice-to-voice (end of speech to first reply audio) p50 / p95 per level, the ratio to the first level
(the baseline of the same run), the turns that got no reply, and the largest N whose p95 stays <= 2 s.

    .venv/bin/python scripts/load_conversations.py --levels 1,2,3,4 --turns 4
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

QUESTIONS = ["What is the capital of Italy?", "How many legs does a spider have?", "What colour is the sky?",
             "Name a fruit that is yellow.", "What do bees make?", "Is ice cold or hot?"]
TARGET_P95_MS = 2000.0


async def caller(base_url: str, index: int, utterances: list, offset_s: float) -> list[float | None]:
    from voiceserver.testing.caller import OpenMicCaller, native_link

    results: list[float | None] = []
    url = base_url.replace("http", "ws", 1) + "/v1/voice"
    async with native_link(url, resource=f"load-caller-{index}", thread=f"load-{index}") as link, \
            OpenMicCaller(link, reply_timeout_s=60.0, gap_s=0.8) as mic:
        await mic.pause(1.0 + offset_s)
        for utterance in utterances:
            heard = await mic.say(utterance)
            results.append(None if heard.failure else heard.voice_to_voice_ms)
            if heard.failure and heard.failure.startswith("connection closed"):
                break
            await mic.listen(heard)
        await link.end()
    return results


async def level(base_url: str, n: int, utterances: list) -> list[float | None]:
    spread = 3.0  # seconds over which the callers' first questions are spread
    outcome = await asyncio.gather(*(caller(base_url, i, utterances[i % 2:] + utterances[:i % 2],
                                            spread * i / max(n, 1)) for i in range(n)))
    return [v for per_caller in outcome for v in per_caller]


async def main_async(args: argparse.Namespace) -> None:
    from bench_conversation import start_server, stop_server

    from voiceserver.testing.caller import Utterance
    from voiceserver.testing.speech import speak

    models = REPO / "models"
    utterances = [Utterance.from_pcm(q, speak(models, q, lead_silence_ms=200)) for q in QUESTIONS[: args.turns]]
    levels = [int(x) for x in args.levels.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="voiceserver-load-") as tmp:
        log = Path(tmp) / "server.log"
        proc, port = await start_server(dict(kv.split("=", 1) for kv in args.env), str(Path(tmp) / "memory"),
                                        log, 0)
        try:
            base = f"http://127.0.0.1:{port}"
            await level(base, 1, utterances[:1])  # warm the caches; not counted
            for n in levels:
                values = await level(base, n, utterances)
                ok = [v for v in values if v is not None]
                p50 = float(np.median(ok)) if ok else float("nan")
                p95 = float(np.percentile(ok, 95)) if ok else float("nan")
                rows.append((n, len(values), len(values) - len(ok), p50, p95))
                print(f"  {n} callers: p50 {p50:.0f} ms, p95 {p95:.0f} ms, {len(values) - len(ok)} failed",
                      file=sys.stderr)
        finally:
            await stop_server(proc)
    base_p95 = rows[0][4] if rows else float("nan")
    print(f"\n{'callers':>7} {'turns':>6} {'failed':>7} {'p50 ms':>8} {'p95 ms':>8} {'p95 x base':>10}")
    for n, turns, failed, p50, p95 in rows:
        print(f"{n:>7} {turns:>6} {failed:>7} {p50:>8.0f} {p95:>8.0f} {p95 / base_p95:>10.2f}")
    fits = [n for n, _, failed, _, p95 in rows if p95 <= TARGET_P95_MS and not failed]
    print(f"\nlargest number of simultaneous conversations with p95 <= {TARGET_P95_MS:.0f} ms: "
          f"{max(fits) if fits else 'none'} (real models, default settings, 2 cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,3,4")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server, repeatable")
    from voiceserver.testing.processes import stop_children_on_sigterm

    stop_children_on_sigterm()
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
