"""The local chat model: first-token latency with a cold vs a warm prompt cache, tool decisions, tokens per second.

    .venv/bin/python scripts/bench_llm.py [--model smollm2] [--runs 10] [--threads 2] [--max-tokens 48]
                                          [--models-dir models]

(``--model``: a manifest name of kind "llm", e.g. qwen2.5-coder-0.5b; scripts/eval_models.py compares models on
whole conversations.)

- cold: every call starts with a different system prompt (a session number at its very start), so llama.cpp must
  read the whole prompt; this is the baseline, run in the same process.
- warm: the same system prompt and conversation so far, a new question each call: the KV cache of the common
  prefix is reused (what a voice session sees from its second turn on).
- tool decision: the warm prompt with one tool offered and tool_choice "required": time to the complete ToolCallChunk.
- tokens/s: completion tokens over the time from the first to the last chunk of the warm calls.

Prints median and p95 of each, and the warm/cold ratio. Other processes on the machine shift the absolute figures;
the ratio, measured in one process, is the comparison that matters.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from voiceserver.llm import LlamaCppModel
from voiceserver.llm.base import ChatMessage, ChatRequest, Finish, TextDelta, ToolCallChunk, ToolSpec
from voiceserver.model_files import model_file

INSTRUCTIONS = (
    "You are a helpful voice assistant for a small restaurant in Lyon. Answer in one or two short spoken sentences. "
    "Do not use lists, markdown or emoji. Opening hours are noon to two and seven to eleven, closed on Mondays. "
    "Tables can be booked for up to eight people. Be warm and precise, and ask one question at a time when a detail "
    "is missing. If you do not know something, say so briefly."
)
HISTORY = [
    ChatMessage("user", "Hi, are you open tonight?"),
    ChatMessage("assistant", "Yes, we are open from seven to eleven tonight."),
]
QUESTIONS = ["Can I bring my dog?", "Do you have vegetarian dishes?", "Is there parking nearby?",
             "What is your most popular dish?", "Do you take cards?", "Can I book for six people?",
             "Is the terrace open?", "Do you have a kids menu?", "How far is it from the station?",
             "Do you serve wine?", "Can I come at ten?", "Do you have gluten free bread?"]
BOOK = ToolSpec("book_table", "Book a table.", {"type": "object", "properties": {
    "people": {"type": "integer"}, "time": {"type": "string"}}, "required": ["people", "time"]})


def stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


async def timed(model: LlamaCppModel, request: ChatRequest) -> tuple[float, float, int]:
    """(seconds to the first chunk, seconds from first to last chunk, completion tokens)."""
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async for chunk in model.stream(request):
        now = time.perf_counter()
        if isinstance(chunk, TextDelta | ToolCallChunk) and not first:
            first = now - started
        if isinstance(chunk, Finish):
            tokens = chunk.usage.completion_tokens
        last = now - started
    return first, last - first, tokens


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="manifest name of a local chat model")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args()

    model = LlamaCppModel(model_file(args.models_dir, args.model, ".gguf"), model_id=f"local/{args.model}",
                          threads=args.threads, max_tokens=args.max_tokens, temperature=0.3, timeout_s=600)
    started = time.perf_counter()
    await model.load()
    print(f"load: {time.perf_counter() - started:.2f} s  (threads={args.threads}, runs={args.runs})")
    await timed(model, ChatRequest([ChatMessage("user", "Hello")], max_tokens=4))  # first-call overheads

    cold, warm, decision, rates = [], [], [], []
    prompt_tokens = 0
    for i in range(args.runs):
        question = ChatMessage("user", QUESTIONS[i % len(QUESTIONS)])
        # cold: a new system prompt from its first token on
        cold_system = ChatMessage("system", f"Session {i * 7919 % 100000}. {INSTRUCTIONS}")
        first, _, _ = await timed(model, ChatRequest([cold_system, *HISTORY, question]))
        cold.append(first)
        # warm: prime the cache with this conversation, then ask a new question on top of it
        system = ChatMessage("system", INSTRUCTIONS)
        await timed(model, ChatRequest([system, *HISTORY], max_tokens=1))
        first, rest, tokens = await timed(model, ChatRequest([system, *HISTORY, question]))
        warm.append(first)
        if tokens > 1 and rest > 0:
            rates.append((tokens - 1) / rest)
        # tool decision on a warm prefix (the tool section is part of the system prompt: prime it with a first call)
        await timed(model, ChatRequest([system, *HISTORY, HISTORY[0]], tools=[BOOK], tool_choice="required"))
        first, _, _ = await timed(model, ChatRequest([system, *HISTORY, question], tools=[BOOK],
                                                     tool_choice="required"))
        decision.append(first)
        if not prompt_tokens:
            prompt_tokens = model.count_tokens(model._template.render([system, *HISTORY, question]))

    print(f"prompt: {prompt_tokens} tokens")
    for name, values in (("first token, cold cache (baseline)", cold), ("first token, warm cache", warm),
                         ("tool call complete, warm cache", decision)):
        median, p95 = stats(values)
        extra = f"  ({median / stats(cold)[0]:.2f}x cold median)" if values is not cold else ""
        print(f"{name:<38} median {median * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   n={len(values)}{extra}")
    if rates:
        median, p95 = stats(rates)
        print(f"{'generation speed (warm)':<38} median {median:7.1f} tok/s  p95 {p95:7.1f} tok/s  "
              f"(p95 of the rate: the faster tail)")
    await model.close()


if __name__ == "__main__":
    asyncio.run(main())
