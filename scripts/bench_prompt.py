"""Benchmark the prompt of a voice turn over a long conversation with memory (typed input, no audio).

One caller talks to the default agent (the settings' defaults: local model, LanceDB memory with semantic recall and
working memory) over several calls (same resource, a new thread each call). For every turn it prints the prompt
tokens and the cached tokens the model reports (the finish chunk's usage; prompt minus cached is what the model had
to read), the agent's own estimate of the prompt (its context chunk), the history and recalled messages in the
prompt, the first token and whole-turn time, and whether the reply repeated an earlier reply to the caller (in any
call). Then medians and p95, per mode.

Modes, in one process on the same model: ``new`` (the settings' defaults) and ``baseline`` (``--baseline-env``: the
settings as they were before the prompt budget: no budget, recall top 3 with 2 neighbours). The ratio of the medians
is printed. Each mode starts on an empty memory directory.

    .venv/bin/python scripts/bench_prompt.py                      # 20 turns over 3 calls, both modes
    .venv/bin/python scripts/bench_prompt.py --turns 6 --no-baseline   # quick look
    .venv/bin/python scripts/bench_prompt.py --name-runs 10        # a returning caller asks their name, 10 times

Everything is local (127.0.0.1 is not even needed: the agent runs in process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voiceserver.settings import Settings  # noqa: E402

# The conversation: one list per call. The fact to remember, questions about it in the same and later calls, a plain
# knowledge question, a yes/no and a story, as in the scenario.
CALLS = [
    ["Hello, my name is Ada.", "My favourite colour is blue.", "What is the capital of France?",
     "What is my name?", "Is the sun a star?", "Tell me a short story about a dragon.",
     "What did I say my favourite colour was?", "Thanks, that is all for now."],
    ["Hi, it's me again.", "What is my name?", "What is my favourite colour?",
     "How many legs does a spider have?", "Can you recommend a good book?", "Goodbye."],
    ["Hello again.", "Do you remember my name?", "What is two plus two?", "What colour do I like?",
     "Is water wet?", "Bye for now."],
]

# The settings before the prompt budget existed (the values the code used then), for the in-process baseline.
BASELINE_AGENT = {"prompt_budget_tokens": 0,
                  "memory": {"recall_top_k": 3, "recall_message_range": 2, "recall_threshold": None}}

REPEAT_PREFIX_WORDS = 6


def words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w']", "", t.lower()) for t in text.split()) if w]


def repeats(reply: str, earlier: list[str]) -> bool:
    """Word for word the same as an earlier reply, or the same first REPEAT_PREFIX_WORDS words."""
    mine = words(reply)
    for other in earlier:
        theirs = words(other)
        if mine and (mine == theirs or (len(mine) >= REPEAT_PREFIX_WORDS
                                        and mine[:REPEAT_PREFIX_WORDS] == theirs[:REPEAT_PREFIX_WORDS])):
            return True
    return False


def pct(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


class GuardCounter(logging.Handler):
    """Counts the repetition guard's log records: caught repeats, and repeats let through after the retry."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.codes: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        code = (getattr(record, "fields", None) or {}).get("code")
        if code in ("reply_repeat_caught", "reply_repeated"):
            self.codes[code] = self.codes.get(code, 0) + 1


async def run_mode(name: str, agent_overrides: dict[str, Any], args: argparse.Namespace, models_dir: Path,
                   data_dir: Path) -> list[dict[str, Any]]:
    from voiceserver import build_server

    agent_settings = {"model": args.model, **agent_overrides}
    settings = Settings(models_dir=models_dir, lancedb_uri=str(data_dir / name), agent=agent_settings)
    server = build_server(settings)
    agent = server.agents[settings.agent.name]
    await agent.memory.open()
    await (await agent.get_model()).load()
    guard = GuardCounter()
    agent_log = logging.getLogger("voiceserver.agent")
    agent_log.addHandler(guard)
    rows: list[dict[str, Any]] = []
    turn_no = 0
    earlier: list[str] = []  # every earlier reply to this caller, in any call
    try:
        for call_no, questions in enumerate(CALLS[: args.calls], 1):
            thread = f"bench-call-{call_no}"
            for question in questions:
                if turn_no >= args.turns:
                    break
                turn_no += 1
                row = await one_turn(agent, question, thread)
                row.update(mode=name, call=call_no, turn=turn_no, repeated=repeats(row["reply"], earlier))
                if row["prompt_tokens"] is not None and row["cached_tokens"] is not None:
                    row["uncached_tokens"] = row["prompt_tokens"] - row["cached_tokens"]
                earlier.append(row["reply"])
                rows.append(row)
                print_row(row)
                await asyncio.sleep(args.gap_s)  # the reply is being spoken; background work runs meanwhile
            await agent.flush()  # the caller hangs up; the next call comes later
    finally:
        agent_log.removeHandler(guard)
        await agent.flush()
        await agent.memory.close()
        await server.model_registry.close()
    if rows:
        rows[-1]["guard"] = dict(guard.codes)
    return rows


async def name_runs(args: argparse.Namespace, data_dir: Path) -> None:
    """The e2e scenario (tests/e2e/test_agent_returning_caller.py) N times: "My name is Ada." in one call, "What is
    my name?" in the next; counts the answers that contain the name."""
    from voiceserver import build_server

    hits = 0
    for run in range(args.name_runs):
        settings = Settings(models_dir=args.models_dir, lancedb_uri=str(data_dir / f"names-{run}"),
                            agent={"model": args.model})
        server = build_server(settings)
        agent = server.agents[settings.agent.name]
        await agent.memory.open()
        try:
            await agent.generate("My name is Ada.", memory={"resource": "caller", "thread": "call-1"})
            await agent.flush()
            answer = await agent.generate("What is my name?", memory={"resource": "caller", "thread": "call-2"})
            await agent.flush()
        finally:
            await agent.memory.close()
            await server.model_registry.close()
        hit = "ada" in answer.text.lower()
        hits += hit
        print(f"run {run + 1}: {'yes' if hit else 'no '} {' '.join(answer.text.split())[:90]!r}", flush=True)
    print(f"{args.model}: the answer named the caller in {hits} of {args.name_runs} runs")


async def one_turn(agent: Any, question: str, thread: str) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    context: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    stream = agent.stream(question, memory={"resource": "bench-caller", "thread": thread})
    async for chunk in stream:
        if chunk.type == "text-delta" and first is None:
            first = time.perf_counter() - started
        elif chunk.type == "context":
            context = dict(chunk.payload)
        elif chunk.type == "finish":
            usage = dict(chunk.payload.get("usage") or {})
    result = await stream.result()
    total = time.perf_counter() - started
    return {"question": question, "reply": result.text, "first_token_ms": (first or total) * 1000,
            "turn_ms": total * 1000, "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": usage.get("cached_tokens"), "estimate": context.get("prompt_tokens"),
            "history": context.get("history_messages"), "recalled": context.get("recalled_messages"),
            "dropped": context.get("dropped_history")}


def _cell(value: Any, width: int) -> str:
    return ("-" if value is None else str(round(value) if isinstance(value, float) else value)).rjust(width)


def print_row(row: dict[str, Any]) -> None:
    reply = " ".join(row["reply"].split())
    print(f"{row['mode']:>8} {row['call']:>4} {row['turn']:>4} {_cell(row['prompt_tokens'], 6)} "
          f"{_cell(row['cached_tokens'], 6)} {_cell(row['estimate'], 6)} {_cell(row['history'], 4)} "
          f"{_cell(row['recalled'], 4)} {_cell(row['first_token_ms'], 7)} {_cell(row['turn_ms'], 7)} "
          f"{'REPEAT' if row['repeated'] else '':>6}  {row['question'][:34]!r} -> {reply[:70]!r}", flush=True)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"turns": len(rows), "repeated": sum(r["repeated"] for r in rows)}
    guard = rows[-1].get("guard", {}) if rows else {}
    out["guard_caught"] = guard.get("reply_repeat_caught", 0)
    out["guard_let_through"] = guard.get("reply_repeated", 0)
    for key in ("prompt_tokens", "cached_tokens", "uncached_tokens", "first_token_ms", "turn_ms"):
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        if values:
            out[key] = dict(zip(("p50", "p95"), pct(values), strict=True))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="turns in all (a prefix of the script)")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--model", default="local/smollm2")
    parser.add_argument("--gap-s", type=float, default=1.0, help="pause after each turn (the reply being spoken)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-only", action="store_true", help="only the baseline mode (e.g. on old code)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON too")
    parser.add_argument("--name-runs", type=int, default=0, help="only the returning-caller name check, N times")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args()
    modes: list[tuple[str, dict[str, Any]]] = []
    if not args.baseline_only:
        modes.append(("new", {}))
    if not args.no_baseline:
        modes.append(("baseline", BASELINE_AGENT))
    data_dir = Path(tempfile.mkdtemp(prefix="bench-prompt-"))
    if args.name_runs:
        try:
            await name_runs(args, data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    print(f"{'mode':>8} {'call':>4} {'turn':>4} {'prompt':>6} {'cached':>6} {'estim':>6} {'hist':>4} {'rec':>4} "
          f"{'first':>7} {'turn':>7} {'':>6}  question -> reply")
    results: dict[str, Any] = {}
    try:
        for name, overrides in modes:
            rows = await run_mode(name, overrides, args, args.models_dir, data_dir)
            results[name] = summary(rows)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    for name, s in results.items():
        parts = [f"{name}: {s['turns']} turns, {s['repeated']} repeated an earlier reply (the guard caught "
                 f"{s['guard_caught']}, let {s['guard_let_through']} through after its retry)"]
        for key in ("prompt_tokens", "cached_tokens", "uncached_tokens", "first_token_ms", "turn_ms"):
            if key in s:
                parts.append(f"{key} p50 {s[key]['p50']:.0f} p95 {s[key]['p95']:.0f}")
        print("; ".join(parts))
    if "new" in results and "baseline" in results:
        for key in ("prompt_tokens", "uncached_tokens", "first_token_ms", "turn_ms"):
            if key in results["new"] and key in results["baseline"] and results["baseline"][key]["p50"]:
                ratio = results["new"][key]["p50"] / results["baseline"][key]["p50"]
                print(f"ratio new/baseline {key} p50: {ratio:.2f}")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
