#!/usr/bin/env python
"""A returning caller's real conversation through a real `voiceserver serve`: voice-to-voice and sense, turn by turn.

One caller (the same `resource`) calls several times, a new `thread` each call, one WebSocket per call. The mic is
open the whole call: 20 ms frames in real time, silence between questions (voiceserver.testing.caller). Each
question, spoken by Piper before the timed part, is said into that stream; the caller waits for the reply, lets it
play out, leaves a short gap, and asks the next one. The script tells the agent a name and a colour, asks them back
in the same call and in later calls, and asks a knowledge question, a yes/no and for a story.

Per turn it prints the client's voice-to-voice (from sending the frame that holds the end of the voiced Piper audio
to the first reply audio byte received: the VAD's endpoint wait included), every stage of the server's `metrics`
event ("-" when absent), and whether the reply addressed the question, recalled the fact, or repeated an earlier
reply. Then: median, p95 and least-squares slope of voice-to-voice over the turns, each call's median, the last
call's against the first's, and a table of the targets of issue 9. The whole conversation runs twice, with the
default settings and with BASELINE_ENV (the settings as they were), and the ratio new / baseline is printed.

    .venv/bin/python scripts/bench_conversation.py                        # 3 calls x 8 turns, then the baseline
    .venv/bin/python scripts/bench_conversation.py --calls 1 --turns 3 --no-baseline     # a quick look
    .venv/bin/python scripts/bench_conversation.py --seed-turns 1000      # 1,000 earlier turns in memory first
    .venv/bin/python scripts/bench_conversation.py --json > figures.json  # the report goes to stderr

Everything runs on 127.0.0.1; a question without a complete reply in 60 s is a failure, not a hang. Each server's
log goes to a file in the temp directory (its path is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The baseline: the settings "as they were" before issue 9, pinned so that new defaults do not move it. Only names
# that exist on main may go here (the server refuses to start on an unknown setting). Background LLM calls yielding
# to live work, and a new prompt window per call, have no setting: the baseline has them too.
BASELINE_ENV: dict[str, str] = {
    "VOICESERVER_AGENT__MODEL": "local/smollm2",
    "VOICESERVER_AGENT__INSTRUCTIONS": "You are a helpful voice assistant. Answer in one or two short spoken "
                                      "sentences. Do not use lists, markdown or emoji.",
    "VOICESERVER_LLM__MAX_TOKENS": "160",
    # the whole history and resource-wide recall (top 3, 2 neighbours each, every hit) went into the prompt
    "VOICESERVER_AGENT__PROMPT_BUDGET_TOKENS": "0",
    "VOICESERVER_AGENT__MEMORY__LAST_MESSAGES": "10",
    "VOICESERVER_AGENT__MEMORY__RECALL_TOP_K": "3", "VOICESERVER_AGENT__MEMORY__RECALL_MESSAGE_RANGE": "2",
    "VOICESERVER_AGENT__MEMORY__RECALL_THRESHOLD": "-1",  # cosine >= -1: no threshold
    # llama.cpp's sampling as it was (temperature 0.3, top_p 0.9, repeat_penalty 1.1, llama.cpp's own rest)
    "VOICESERVER_LLM__TEMPERATURE": "0.3", "VOICESERVER_LLM__TOP_P": "0.9", "VOICESERVER_LLM__TOP_K": "40",
    "VOICESERVER_LLM__MIN_P": "0.05", "VOICESERVER_LLM__REPEAT_PENALTY": "1.1", "VOICESERVER_LLM__REPEAT_LAST_N": "64",
    "VOICESERVER_LLM__FREQUENCY_PENALTY": "0", "VOICESERVER_LLM__PRESENCE_PENALTY": "0",
    "VOICESERVER_LLM__NO_REPEAT_NGRAM": "0",
    # replies were not cut at a sentence count, and were capped by llm.max_tokens only
    "VOICESERVER_TURN__REPLY_MAX_SENTENCES": "0", "VOICESERVER_TURN__LONG_REPLY_MAX_SENTENCES": "0",
    "VOICESERVER_TURN__REPLY_MAX_TOKENS": "0", "VOICESERVER_TURN__LONG_REPLY_MAX_TOKENS": "0",
}

CALLER = "bench-caller-ada"  # the resource every call uses
REPLY_TIMEOUT_S = 60.0  # no complete reply by then: the turn is a failure
GAP_S = 1.0  # after a reply has played out, before the next question
CALL_GAP_S = 2.0  # between hanging up and calling again
LEAD_SILENCE_S = 0.5  # open mic before the first question of a call
READY_TIMEOUT_S = 240.0
SEED_TURNS_PER_THREAD = 20
REPEAT_MIN_WORDS = 3  # a shorter reply ("Yes.") said twice is not parroting
REPEAT_PREFIX_WORDS, REPEAT_PREFIX_SHARE = 8, 0.6  # the same first words (8 or more, 60 % of the shorter reply)
REPEAT_OVERLAP_WORDS = 15  # and so is a run of 15 words in common anywhere (longer than a stock phrase)
TARGET_P50_MS, TARGET_P95_MS, TARGET_CALL_DRIFT = 1200.0, 1600.0, 0.15
STAGES = ("endpoint_ms", "stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms")
COUNTS = ("prompt_tokens", "cached_tokens", "recalled_messages")  # per-turn columns; the rest of `metrics` follows
SUMMARY_COUNTS = (*COUNTS, "history_messages", "completion_tokens", "memory_ms", "prepare_ms")
REPEAT_KINDS = ("exact", "prefix", "overlap")


@dataclass(frozen=True)
class Line:
    """One question of the script and how to judge its reply."""

    text: str
    expect: tuple[str, ...]  # the reply addressed the question when it says any of these (words, any case)
    kind: str = "chat"  # fact | recall | knowledge | yesno | story | chat
    fact: str | None = None  # the fact a recall line asks for: "name" or "colour"


FIRST_CALL = (
    Line("Hello, my name is Ada.", ("ada", "nice to meet", "hello", "hi"), "fact", "name"),
    Line("What is the capital of France?", ("paris",), "knowledge"),
    Line("My favourite colour is blue.", ("blue",), "fact", "colour"),
    Line("Is the sun a star?", ("yes", "is a star"), "yesno"),
    Line("What is my name?", ("ada",), "recall", "name"),
    Line("Tell me a short story about a dragon.", ("dragon",), "story"),
    Line("What is my favourite colour?", ("blue",), "recall", "colour"),
    Line("Thank you, that is all for now.", ("welcome", "pleasure", "bye", "glad", "anytime", "thank"), "chat"),
)
RETURNING_CALL = (  # every later call: the same caller asks the facts again
    Line("Hello, it is me again.", ("hello", "hi", "welcome", "again", "ada"), "chat"),
    Line("What is my name?", ("ada",), "recall", "name"),
    Line("What is the capital of France?", ("paris",), "knowledge"),
    Line("What is my favourite colour?", ("blue",), "recall", "colour"),
    Line("Can a penguin fly?", ("no", "cannot", "can't", "flightless"), "yesno"),
    Line("Tell me a short story about a robot.", ("robot",), "story"),
    Line("How many legs does a spider have?", ("eight", "8"), "knowledge"),
    Line("Thanks, goodbye.", ("bye", "welcome", "pleasure", "care", "soon", "thank"), "chat"),
)


def call_script(call: int, turns: int) -> tuple[Line, ...]:
    """The first ``turns`` lines of call number ``call`` (0-based)."""
    return (FIRST_CALL if call == 0 else RETURNING_CALL)[:turns]


# --- judging replies (pure) --------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Lower case, words only, single spaces: "Yes! It's  a STAR." -> "yes it s a star"."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def mentions(reply: str, phrases: tuple[str, ...]) -> bool:
    """Whether ``reply`` contains any of ``phrases`` as whole words ("hi" is not in "this")."""
    padded = f" {normalise(reply)} "
    return any(f" {normalise(p)} " in padded for p in phrases if normalise(p))


def find_repeat(reply: str, question: str, earlier: list[tuple[str, str]]) -> tuple[str, int] | None:
    """("exact" | "prefix" | "overlap", index into ``earlier``) when ``reply`` repeats a reply to another question.

    ``earlier`` holds (question, reply) pairs. The same answer to the same question again (a later call asking the
    name) is not a repeat; the same reply to a different question is. "exact": equal once normalised (at least
    REPEAT_MIN_WORDS words); "prefix": the same first words, at least REPEAT_PREFIX_WORDS and REPEAT_PREFIX_SHARE of
    the shorter reply (a new ending); "overlap": a run of REPEAT_OVERLAP_WORDS words in common anywhere (a new
    opening). A stock opening ("Once upon a time, in a land far away") is neither.
    """
    words = normalise(reply).split()
    if not words:
        return None
    asked = normalise(question)
    for i, (other_question, other_reply) in enumerate(earlier):
        if normalise(other_question) == asked:
            continue
        other = normalise(other_reply).split()
        if words == other and len(words) >= REPEAT_MIN_WORDS:
            return "exact", i
        shared = next((n for n, (a, b) in enumerate(zip(words, other, strict=False)) if a != b),
                      min(len(words), len(other)))
        if shared >= REPEAT_PREFIX_WORDS and shared >= REPEAT_PREFIX_SHARE * min(len(words), len(other)):
            return "prefix", i
        if min(len(words), len(other)) >= REPEAT_OVERLAP_WORDS:
            run = SequenceMatcher(None, words, other, autojunk=False).find_longest_match(0, len(words), 0, len(other))
            if run.size >= REPEAT_OVERLAP_WORDS:
                return "overlap", i
    return None


# --- statistics (pure) -------------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile with linear interpolation between ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float | None:
    return percentile(values, 50)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (units of y per unit of x); None without two distinct xs."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def ratio(new: float | None, base: float | None) -> float | None:
    return new / base if new is not None and base else None


# --- one turn, judged ---------------------------------------------------------------------------------------------

def judge(line: Line, heard: Any, earlier: list[tuple[str, str]], *, run: int, call: int, turn: int,
          index: int) -> dict[str, Any]:
    """The JSON-ready record of one turn; appends its (question, reply) to ``earlier`` when it got one."""
    reply = heard.reply_text
    failure = heard.failure or (None if reply.strip() else "empty reply")
    addressed = failure is None and mentions(reply, line.expect)
    repeat = find_repeat(reply, line.text, earlier) if failure is None else None
    record = {
        "run": run, "call": call, "turn": turn, "index": index, "question": line.text, "kind": line.kind,
        "fact": line.fact, "transcript": heard.transcript, "reply": reply,
        "voice_to_voice_ms": heard.voice_to_voice_ms, "metrics": heard.metrics,
        "reply_audio_s": heard.audio_ms / 1000, "failure": failure, "interrupted_replies": heard.interrupted_replies,
        "addressed": addressed, "recalled": addressed if line.kind == "recall" else None,
        "repeat": None if repeat is None else {"kind": repeat[0], "of": earlier[repeat[1]][0]},
    }
    if failure is None:
        earlier.append((line.text, reply))
    return record


def summarise(records: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    """Every figure of one configuration over all its runs."""
    timed = [r for r in records if r["voice_to_voice_ms"] is not None]
    v2v = [r["voice_to_voice_ms"] for r in timed]
    call_medians = [median([r["voice_to_voice_ms"] for r in timed if r["call"] == c]) for c in range(calls)]

    def count(pick: Any, ok: str) -> list[int]:
        chosen = [r for r in records if pick(r)]
        return [sum(1 for r in chosen if r[ok]), len(chosen)]

    stages = {}
    for key in STAGES + SUMMARY_COUNTS:
        values = [float(r["metrics"][key]) for r in records if isinstance(r["metrics"].get(key), int | float)]
        stages[key] = {"p50": median(values), "p95": percentile(values, 95), "n": len(values)}
    return {
        "turns": len(records), "timed_turns": len(timed),
        "p50_ms": median(v2v), "p95_ms": percentile(v2v, 95),
        "slope_ms_per_turn": slope([float(r["index"]) for r in timed], v2v),
        "call_medians_ms": call_medians,
        "last_first_ratio": ratio(call_medians[-1], call_medians[0]) if calls > 1 else None,
        "repeats_exact": sum(1 for r in records if r["repeat"] and r["repeat"]["kind"] == "exact"),
        "repeats_prefix": sum(1 for r in records if r["repeat"] and r["repeat"]["kind"] == "prefix"),
        "repeats_overlap": sum(1 for r in records if r["repeat"] and r["repeat"]["kind"] == "overlap"),
        "name_recalled_same_call": count(lambda r: r["fact"] == "name" and r["kind"] == "recall" and r["call"] == 0,
                                         "recalled"),
        "colour_recalled_same_call": count(lambda r: r["fact"] == "colour" and r["kind"] == "recall"
                                           and r["call"] == 0, "recalled"),
        "name_recalled_later_call": count(lambda r: r["fact"] == "name" and r["kind"] == "recall" and r["call"] > 0,
                                          "recalled"),
        "colour_recalled_later_call": count(lambda r: r["fact"] == "colour" and r["kind"] == "recall"
                                            and r["call"] > 0, "recalled"),
        "knowledge_answered": count(lambda r: r["kind"] == "knowledge", "addressed"),
        "addressed": count(lambda r: True, "addressed"),
        "failures": sum(1 for r in records if r["failure"]),
        "stages": stages,
    }


def target_rows(new: dict[str, Any], base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The targets of issue 9: name, measured, target, baseline, ratio, met (None: not measured)."""
    base = base or {}

    def fraction(key: str) -> tuple[str, bool | None]:
        n, total = new[key]
        return f"{n}/{total}", (n == total) if total else None

    def drift(value: float | None) -> bool | None:
        return None if value is None else abs(value - 1) <= TARGET_CALL_DRIFT

    rows = []
    for name, key, target, check in (
            ("voice-to-voice p50 ms", "p50_ms", f"<= {TARGET_P50_MS:.0f}", lambda v: v <= TARGET_P50_MS),
            ("voice-to-voice p95 ms", "p95_ms", f"<= {TARGET_P95_MS:.0f}", lambda v: v <= TARGET_P95_MS),
            ("slope ms per turn", "slope_ms_per_turn", "flat", None),
            ("last call / first call median", "last_first_ratio", f"within {TARGET_CALL_DRIFT:.0%}", drift)):
        value = new.get(key)
        rows.append({"target": name, "measured": value, "goal": target, "baseline": base.get(key),
                     "ratio": ratio(value, base.get(key)) if key in ("p50_ms", "p95_ms") else None,
                     "met": None if value is None or check is None else check(value)})
    repeats = sum(new[f"repeats_{kind}"] for kind in REPEAT_KINDS)
    base_repeats = sum(base[f"repeats_{kind}"] for kind in REPEAT_KINDS) if base else None
    rows.append({"target": "replies repeating an earlier one", "measured": repeats, "goal": "0",
                 "baseline": base_repeats, "ratio": None, "met": repeats == 0})
    for name, key in (("name recalled in a later call", "name_recalled_later_call"),
                      ("colour recalled in a later call", "colour_recalled_later_call"),
                      ("knowledge question answered", "knowledge_answered")):
        shown, met = fraction(key)
        rows.append({"target": name, "measured": shown, "goal": "all", "ratio": None, "met": met,
                     "baseline": "{}/{}".format(*base[key]) if base else None})
    rows.append({"target": "turns without a reply", "measured": new["failures"], "goal": "0",
                 "baseline": base.get("failures"), "ratio": None, "met": new["failures"] == 0})
    return rows


# --- printing --------------------------------------------------------------------------------------------------

def cell(value: Any, width: int, digits: int = 0) -> str:
    if value is None or value == "":
        return f"{'-':>{width}}"
    if isinstance(value, bool):
        return f"{'yes' if value else 'no':>{width}}"
    if isinstance(value, int | float):
        return f"{value:>{width}.{digits}f}"
    return f"{value!s:>{width}}"


TURN_HEADER = (f"{'call':>4} {'turn':>4} {'v2v ms':>7} | {'endpt':>6} {'stt':>6} {'llm 1st':>7} {'tts 1st':>7} "
               f"{'srv v2v':>7} | {'prompt':>6} {'cached':>6} {'recall':>6} | {'reply s':>7} | {'addr':>4} "
               f"{'fact':>4} {'rep':>6} | question")


def format_turn(r: dict[str, Any]) -> str:
    m = r["metrics"]
    repeat = r["repeat"]["kind"] if r["repeat"] else ("no" if not r["failure"] else None)
    line = (f"{r['call'] + 1:>4} {r['turn'] + 1:>4} {cell(r['voice_to_voice_ms'], 7)} | "
            f"{cell(m.get('endpoint_ms'), 6)} {cell(m.get('stt_ms'), 6)} {cell(m.get('llm_first_token_ms'), 7)} "
            f"{cell(m.get('tts_first_audio_ms'), 7)} {cell(m.get('voice_to_voice_ms'), 7)} | "
            f"{cell(m.get('prompt_tokens'), 6)} {cell(m.get('cached_tokens'), 6)} {cell(m.get('recalled_messages'), 6)}"
            f" | {cell(r['reply_audio_s'] or None, 7, 1)} | {cell(r['addressed'], 4)} {cell(r['recalled'], 4)} "
            f"{cell(repeat, 6)} | {r['question']}")
    shown = {"endpoint_ms", "stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms", *COUNTS}
    extra = " ".join(f"{k}={v}" for k, v in m.items() if k not in shown)
    detail = f"{'':>10}heard {r['transcript']!r} -> {r['reply'][:160]!r}"
    if r["repeat"]:
        detail += f"  [repeats the reply to {r['repeat']['of']!r}]"
    if r["failure"]:
        detail += f"  FAILED: {r['failure']}"
    if r["interrupted_replies"]:
        detail += f"  ({r['interrupted_replies']} reply cut: the question was heard as two utterances)"
    return line + "\n" + detail + (f"\n{'':>10}{extra}" if extra else "")


def format_report(new: dict[str, Any], base: dict[str, Any] | None, rows: list[dict[str, Any]]) -> str:
    out = [f"\n{'':<22} {'p50':>8} {'p95':>8}   {'baseline p50':>12} {'p95':>8}   {'p50 ratio':>9}"]
    for key in STAGES + SUMMARY_COUNTS:
        s, b = new["stages"][key], (base or {}).get("stages", {}).get(key, {})
        out.append(f"{key:<22} {cell(s['p50'], 8)} {cell(s['p95'], 8)}   {cell(b.get('p50'), 12)} "
                   f"{cell(b.get('p95'), 8)}   {cell(ratio(s['p50'], b.get('p50')), 9, 2)}")
    out.append(f"{'client voice-to-voice':<22} {cell(new['p50_ms'], 8)} {cell(new['p95_ms'], 8)}   "
               f"{cell((base or {}).get('p50_ms'), 12)} {cell((base or {}).get('p95_ms'), 8)}   "
               f"{cell(ratio(new['p50_ms'], (base or {}).get('p50_ms')), 9, 2)}")
    calls = " ".join(cell(v, 6) for v in new["call_medians_ms"])
    out.append(f"median per call (ms): {calls}" + (
        f"   baseline: {' '.join(cell(v, 6) for v in base['call_medians_ms'])}" if base else ""))
    out.append(f"slope: {cell(new['slope_ms_per_turn'], 1, 1)} ms per turn"
               + (f"   baseline: {cell(base['slope_ms_per_turn'], 1, 1)}" if base else ""))
    out.append(f"name recalled in the same call {'{}/{}'.format(*new['name_recalled_same_call'])}, colour "
               f"{'{}/{}'.format(*new['colour_recalled_same_call'])}; replies that addressed the question "
               f"{'{}/{}'.format(*new['addressed'])}; repeats {new['repeats_exact']} exact, "
               f"{new['repeats_prefix']} long shared prefix, {new['repeats_overlap']} long shared run")
    out.append(f"\n{'target':<34} {'measured':>9} {'target':>11} {'baseline':>9} {'ratio':>6}  met")
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        digits = {"last call / first call median": 2, "slope ms per turn": 1}.get(row["target"], 0)
        out.append(f"{row['target']:<34} {cell(row['measured'], 9, digits)} {row['goal']:>11} "
                   f"{cell(row['baseline'], 9, digits)} {cell(row['ratio'], 6, 2)}  {met}")
    return "\n".join(out)


# --- memory seeded with earlier calls ----------------------------------------------------------------------------

async def seed_memory(uri: str, turns: int, models: Path) -> int:
    """Write ``turns`` earlier exchanges of CALLER into LanceDB at ``uri``, embedded with the server's default
    embedder so that semantic recall searches them; returns the number of threads."""
    from voiceserver.memory import LanceDBStore, Memory
    from voiceserver.settings import MemoryConfig
    from voiceserver.testing.caller import seed_history

    memory = Memory(storage=LanceDBStore(uri=uri), embedder=MemoryConfig().embedder, models_dir=models)
    await memory.open()
    try:
        return await seed_history(memory, CALLER, turns, turns_per_thread=SEED_TURNS_PER_THREAD)
    finally:
        await memory.close()


# --- the server ---------------------------------------------------------------------------------------------------

async def start_server(env_extra: dict[str, str], memory_uri: str, log_path: Path, port: int,
                       log_level: str = "info") -> tuple[Any, int]:
    """`voiceserver serve` with the default settings plus ``env_extra``; returns (process, port) once /readyz is 200."""
    import httpx

    from voiceserver.testing.processes import free_port

    logging.getLogger("httpx").setLevel(logging.WARNING)  # the memory seeding may have set up INFO logging
    port = port or free_port()
    env = {**os.environ, "LANCEDB_URI": memory_uri, **env_extra}
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(  # returns at once; waited on with poll() below
            [sys.executable, "-m", "voiceserver", "serve", "--port", str(port), "--log-level", log_level],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.perf_counter() + READY_TIMEOUT_S
    try:
        async with httpx.AsyncClient() as http:
            while time.perf_counter() < deadline:
                if proc.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise SystemExit(f"the server exited with {proc.returncode}; log {log_path}:\n{tail}")
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return proc, port
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise SystemExit(f"the server was not ready after {READY_TIMEOUT_S:g} s; log {log_path}")
    except BaseException:  # not ready, interrupted, cancelled: never leave the server behind
        await asyncio.shield(stop_server(proc))
        raise


async def stop_server(proc: Any) -> None:
    from voiceserver.testing.processes import stop_process

    await stop_process(proc, timeout_s=30)


# --- the conversation ---------------------------------------------------------------------------------------------

def _native(base_url: str, resource: str, thread: str) -> Any:
    from voiceserver.testing.caller import native_link

    return native_link(f"{base_url.replace('http', 'ws', 1)}/v1/voice", resource=resource, thread=thread)


TRANSPORTS = {"native": _native}  # name -> (base url, resource, thread) -> async context manager of a CallLink


async def run_conversation(name: str, env: dict[str, str], run: int, args: argparse.Namespace,
                           utterances: dict[str, Any], workdir: Path, out: TextIO) -> dict[str, Any]:
    """One whole conversation (all calls) on a fresh server and memory; returns its records and where its log is."""
    from voiceserver.testing.caller import OpenMicCaller

    memory_dir = workdir / f"{name}-run{run + 1}-memory"
    log_path = workdir / f"{name}-run{run + 1}-server.log"
    seeded_s = None
    if args.seed_turns:
        started = time.perf_counter()
        threads = await seed_memory(str(memory_dir), args.seed_turns, REPO / "models")
        seeded_s = time.perf_counter() - started
        print(f"[{name} run {run + 1}] seeded {args.seed_turns} earlier turns in {threads} threads "
              f"({seeded_s:.1f} s)", file=out, flush=True)
    proc, port = await start_server(env, str(memory_dir), log_path, args.port, args.server_log_level)
    records: list[dict[str, Any]] = []
    earlier: list[tuple[str, str]] = []
    late_ms = 0.0
    try:  # from here on, whatever happens (a closed stdout too), the server is stopped
        shown = " ".join(f"{k.removeprefix('VOICESERVER_')}={v if len(v) < 30 else v[:27] + '...'}"
                         for k, v in env.items())
        print(f"[{name} run {run + 1}] server log: {log_path}\n  settings: {shown or 'the defaults'}", file=out)
        print(TURN_HEADER, file=out, flush=True)
        for call in range(args.calls):
            async with TRANSPORTS[args.transport](f"http://127.0.0.1:{port}", CALLER,
                                                  f"bench-call-{run + 1}-{call + 1}") as link, \
                    OpenMicCaller(link, reply_timeout_s=REPLY_TIMEOUT_S, gap_s=GAP_S) as caller:
                await caller.pause(LEAD_SILENCE_S)
                for turn, line in enumerate(call_script(call, args.turns)):
                    heard = await caller.say(utterances[line.text])
                    record = judge(line, heard, earlier, run=run, call=call, turn=turn, index=len(records))
                    records.append(record)
                    print(format_turn(record), file=out, flush=True)
                    if heard.failure and heard.failure.startswith(("connection closed", "session closed")):
                        break
                    await caller.listen(heard)
                late_ms = max(late_ms, caller.max_late_ms)
                await link.end()
            await asyncio.sleep(CALL_GAP_S)
    finally:
        await asyncio.shield(stop_server(proc))
        shutil.rmtree(memory_dir, ignore_errors=True)
    if late_ms > 50:
        print(f"[{name} run {run + 1}] warning: the caller's mic ran up to {late_ms:.0f} ms late (a busy client "
              f"distorts the figures)", file=out, flush=True)
    return {"run": run, "log": str(log_path), "seed_s": seeded_s, "mic_max_late_ms": late_ms, "turns": records}


def speak_script(args: argparse.Namespace) -> dict[str, Any]:
    """Every line of the script, spoken by Piper (untimed)."""
    from voiceserver.testing.caller import Utterance
    from voiceserver.testing.speech import speak

    texts = dict.fromkeys(line.text for call in range(args.calls) for line in call_script(call, args.turns))
    return {text: Utterance.from_pcm(text, speak(REPO / "models", text, lead_silence_ms=300)) for text in texts}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM cancels the run like Ctrl-C does, so the server is stopped on the way out.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    out = sys.stderr if args.json else sys.stdout
    extra_env = dict(args.env)
    started = time.perf_counter()
    utterances = speak_script(args)
    print(f"{len(utterances)} questions spoken by Piper in {time.perf_counter() - started:.1f} s", file=out)
    workdir = Path(tempfile.mkdtemp(prefix="voiceserver-bench-conversation-"))
    print(f"logs in {workdir}", file=out, flush=True)
    configs = {"default": extra_env, **({"baseline": dict(BASELINE_ENV)} if args.baseline else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for run in range(args.runs):  # interleaved, so a slow spell of the machine hits both alike
        for name, env in configs.items():
            print(f"\n== {name}, run {run + 1} of {args.runs}: {args.calls} calls x {args.turns} turns"
                  + (f", {args.seed_turns} earlier turns in memory" if args.seed_turns else ""), file=out, flush=True)
            runs[name].append(await run_conversation(name, env, run, args, utterances, workdir, out))
    summaries = {name: summarise([t for r in results for t in r["turns"]], args.calls)
                 for name, results in runs.items()}
    rows = target_rows(summaries["default"], summaries.get("baseline"))
    print(f"\n{args.runs} run(s) x {args.calls} calls x {args.turns} turns per configuration"
          + (f", {args.seed_turns} earlier turns seeded" if args.seed_turns else "")
          + f", {time.perf_counter() - started:.0f} s in all", file=out)
    print(format_report(summaries["default"], summaries.get("baseline"), rows), file=out)
    print("client voice-to-voice: from sending the frame that holds the end of the voiced audio to the first reply "
          "audio byte received (the endpoint wait included); ms.", file=out, flush=True)
    return {"options": {k: v for k, v in vars(args).items()}, "env": configs, "logs": str(workdir),
            "runs": runs, "summary": summaries, "targets": rows}


# --- command line -------------------------------------------------------------------------------------------------

def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value
    return parse


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE with an upper-case NAME")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=_bounded(1, 100), default=1, help="repeat the whole conversation N times")
    parser.add_argument("--calls", type=_bounded(1, 50), default=3, help="calls of the same caller (default 3)")
    parser.add_argument("--turns", type=_bounded(1, len(FIRST_CALL)), default=len(FIRST_CALL),
                        help=f"questions per call: a prefix of the script (default {len(FIRST_CALL)})")
    parser.add_argument("--seed-turns", type=_bounded(0, 100_000), default=0,
                        help="earlier turns of the caller written to memory first (e.g. 1000)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the run with BASELINE_ENV")
    parser.add_argument("--port", type=_bounded(0, 65535), default=0, help="server port (default: a free one)")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="native")
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for the measured configuration only (repeatable)")
    parser.add_argument("--server-log-level", choices=("debug", "info"), default="info",
                        help="the server log's level (debug: transcripts, replies and what the repetition guard "
                             "caught)")
    parser.add_argument("--json", action="store_true",
                        help="print every figure as JSON on stdout (the readable report goes to stderr)")
    return parser.parse_args(argv)


def main() -> None:
    from voiceserver.testing.processes import stop_children_on_sigterm

    args = parse_args()
    stop_children_on_sigterm()
    try:
        report = asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit("interrupted; the server was stopped") from None
    if args.json:
        json.dump(report, sys.stdout, indent=1, default=str)
        print()


if __name__ == "__main__":
    main()
