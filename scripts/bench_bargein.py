#!/usr/bin/env python
"""Barge-in and backchannels, measured with scripted audio on a real server and a real WebSocket client.

A real uvicorn server on 127.0.0.1 (scripted model with a long reply, tone text-to-speech, scripted speech-to-text
that hears "mm-hmm" in a short utterance and "wait, stop please" in a long one) answers a question; while the reply
plays, the client streams, in real time:

- an interruption: Piper saying "Wait, stop please." The figure is the time from sending the frame that holds the
  first voiced sample to receiving the last reply audio frame of the interrupted turn (the server's "last frame sent");
  target <= 250 ms;
- a backchannel: a short "mm-hmm" (a 150-300 ms voiced burst, or Piper saying "Mm-hmm."). Counted: replies that went
  on to the end (target: all of them), and the pause the caller heard.

Each is run with the default settings (a sound pauses the reply, the reply resumes after a backchannel) and with
``turn.false_interruption`` off (the baseline: the reply is cut at speech confirmation), in the same process; medians,
p95 and the ratio are printed.

    .venv/bin/python scripts/bench_bargein.py --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STORY = ("Once upon a time a small dragon lived in the mountains. Every morning it flew over the valley. "
         "It watched the farmers and the rivers and the clouds. One day it found a lost sheep near the lake. "
         "The dragon carried the sheep home, and the farmer gave it bread and honey. From then on they were friends.")
FRAME_MS = 20


def tone(ms: int, freq: float = 180.0) -> bytes:
    t = np.arange(int(16 * ms)) / 16000
    voice = np.sin(2 * math.pi * freq * t) + 0.5 * np.sin(2 * math.pi * 2 * freq * t)
    return (0.3 * voice / 1.5 * 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (16 * ms)


def voiced_start_ms(pcm: bytes) -> float:
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    voiced = np.nonzero(samples > 500)[0]
    return float(voiced[0]) / 16 if len(voiced) else 0.0


async def stream(ws, pcm: bytes, sent: list[float]) -> None:
    """Send ``pcm`` in 20 ms frames paced in real time; ``sent[i]`` is the wall clock of frame i."""
    step = 16 * FRAME_MS * 2
    start = time.perf_counter()
    for i in range(0, len(pcm), step):
        target = start + (i // step) * FRAME_MS / 1000
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(pcm[i:i + step])
        sent.append(time.perf_counter())


async def trial(url: str, question: bytes, over_reply: bytes, *, wait_after_audio_s: float = 1.0) -> dict:
    """Ask, wait until reply audio flows, stream ``over_reply``, and record what happened to the reply."""
    import json

    import websockets

    async with websockets.connect(url, max_size=1 << 22) as ws:
        await ws.send(json.dumps({"type": "session.start"}))
        events: list[tuple[float, str, dict | None]] = []
        audio_at: list[float] = []
        state = {"turn": None}

        async def read() -> None:
            async for message in ws:
                now = time.perf_counter()
                if isinstance(message, bytes):
                    audio_at.append(now)
                    continue
                event = json.loads(message)
                events.append((now, event["type"], event))
                if event["type"] == "response.started" and state["turn"] is None:
                    state["turn"] = event["turn_id"]

        reader = asyncio.create_task(read())
        sent: list[float] = []
        await stream(ws, question + silence(800), sent)
        for _ in range(400):
            if audio_at:
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(wait_after_audio_s)
        sent_over: list[float] = []
        onset_frame = int(voiced_start_ms(over_reply) // FRAME_MS)
        await stream(ws, over_reply + silence(2500), sent_over)
        onset_at = sent_over[min(onset_frame, len(sent_over) - 1)]
        for _ in range(200):  # the reply plays on, or the next turn is answered
            kinds = [k for _, k, e in events if e and e.get("turn_id") == state["turn"]]
            if "response.done" in kinds:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        reader.cancel()
    first_turn = state["turn"]
    done = next((e for _, k, e in events if k == "response.done" and e.get("turn_id") == first_turn), None)
    cancelled = any(k == "response.cancelled" and e.get("turn_id") == first_turn for _, k, e in events)
    paused = next((t for t, k, e in events if k == "response.paused"), None)
    resumed = next((t for t, k, e in events if k == "response.resumed"), None)
    stop_at = paused if paused is not None else next((t for t, k, e in events if k == "response.cancelled"), None)
    last_before_stop = max((t for t in audio_at if stop_at is None or t <= stop_at + 0.005), default=None)
    return {"cancelled": cancelled, "completed": bool(done) and not done.get("interrupted"),
            # No reply frame after the onset at all counts as 0: the audio had stopped before the caller spoke.
            "stop_ms": max((last_before_stop - onset_at) * 1000, 0.0) if last_before_stop and stop_at else None,
            "pause_ms": (resumed - paused) * 1000 if paused and resumed else None}


async def run(false_interruption: bool, trials: int, models: Path) -> dict:
    from voiceserver.agent import Agent
    from voiceserver.settings import Settings, TurnConfig
    from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
    from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
    from voiceserver.testing.harness import voice_server
    from voiceserver.testing.speech import speak

    question = speak(models, "Tell me a story about a dragon.", lead_silence_ms=300)
    interruption = speak(models, "Wait, stop please.", lead_silence_ms=100)
    mm_hmm = speak(models, "Mm-hmm.", lead_silence_ms=100)

    def hear(audio: bytes) -> str:
        voiced_ms = len(audio) / 32
        return "mm-hmm" if voiced_ms < 1500 else "wait, stop please"

    results: dict[str, list] = {"stop_ms": [], "bursts_completed": 0, "piper_completed": 0, "bursts": 0,
                                "piper": 0, "pause_ms": []}
    settings = Settings(turn=TurnConfig(false_interruption=false_interruption, reply_max_sentences=0))
    for i in range(trials):
        model = ScriptedChatModel([Reply(STORY, chunk_delay_s=0.005)])
        agent = Agent(name="Assistant", instructions="Tell stories.", model=model)
        async with voice_server(agent=agent, stt=ScriptedSTT(hear), tts=ToneTTS(ms_per_char=45),
                                settings=settings) as vs:
            stop = await trial(vs.ws_url, question, interruption)
            if stop["stop_ms"] is not None:
                results["stop_ms"].append(stop["stop_ms"])
            burst_ms = 150 + (150 * i) // max(trials - 1, 1)  # 150 to 300 ms
            for key, sound in (("bursts", silence(100) + tone(burst_ms)), ("piper", mm_hmm)):
                outcome = await trial(vs.ws_url, question, sound)
                results[key] += 1
                results[f"{key}_completed"] += int(outcome["completed"] and not outcome["cancelled"])
                if outcome["pause_ms"] is not None:
                    results["pause_ms"].append(outcome["pause_ms"])
        print(f"  [{'default' if false_interruption else 'baseline'}] trial {i + 1}/{trials}: stop "
              f"{stop['stop_ms'] if stop['stop_ms'] is None else round(stop['stop_ms'])} ms", file=sys.stderr)
    return results


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def main_async(args: argparse.Namespace) -> None:
    models = Path(args.models)
    new = await run(True, args.trials, models)
    base = await run(False, args.trials, models)
    print(f"\n{args.trials} trials each, real time, scripted engines")
    print(f"{'figure':<44} {'default':>10} {'baseline':>10} {'ratio':>7}   target")
    for label, key, target in (("barge-in: onset -> last reply frame, p50 ms", 50, "<= 250"),
                               ("barge-in: onset -> last reply frame, p95 ms", 95, "<= 250")):
        a, b = p(new["stop_ms"], key), p(base["stop_ms"], key)
        print(f"{label:<44} {a:>10.0f} {b:>10.0f} {a / b if b else float('nan'):>7.2f}   {target}")
    for label, key in (("150-300 ms bursts: replies that went on", "bursts"), ("Piper 'Mm-hmm.': replies that went on",
                                                                              "piper")):
        print(f"{label:<44} {new[key + '_completed']:>7}/{new[key]:<2} {base[key + '_completed']:>7}/{base[key]:<2}"
              f"{'':>8}   all")
    pause = f"{p(new['pause_ms'], 50):.0f} / {p(new['pause_ms'], 95):.0f}"
    print(f"{'pause heard on a backchannel, p50 / p95 ms':<44} {pause:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--models", default=str(REPO / "models"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
