"""Local chat models side by side on the same voice scenarios: latency (cold and warm first token, tokens/s) and
answer quality (knowledge, recall from working memory, yes/no, a story, parroting), per sampling configuration.

    .venv/bin/python scripts/eval_models.py [--models smollm2,qwen2.5-coder-0.5b] [--seeds 3] [--configs all]
                                            [--gguf path/to/other.gguf] [--quick]

Every model runs the same scripted 8-turn conversation, its own replies fed back as the history, with the prompt a
voice turn really has: the default agent's instructions, then the working-memory block the memory renders
(:func:`voiceserver.memory.working.system_block`; the name and the colour appear in it once said, as extraction
would put them there), then the history, then the question. Then a second call: a new conversation whose only
knowledge of the caller is the working memory.

- cold first token: the turn-8 prompt (the longest) on a context with nothing cached; the baseline of each model.
- warm first token: turns 2-8 as they come, the cache holding the conversation so far (the stable prefix).
- first phrase (warm turns): time until 32 characters of reply exist, what the session sends to speech first.
- tokens/s: completion tokens after the first over the time from the first to the last chunk.
- quality: keyword checks per scenario, counted over conversations (seeds); "parroting": a reply equal to an earlier
  reply of the same conversation, or containing one of five words or more, after normalising case and punctuation.
- the first model and configuration is the baseline; the others' warm first token is also shown as a ratio to it.

Configurations (``--configs``): ``current`` (the settings' defaults before this evaluation: temperature 0.3,
top_p 0.9, repeat_penalty 1.1), ``penalties`` (repeat 1.3 over 256 tokens, frequency 0.3, presence 0.3),
``ngram`` / ``ngram4`` (current + no_repeat_ngram 6 / 4), ``defaults`` (``voiceserver.llm.sampling.Sampling()``
as shipped), ``greedy`` / ``cool`` (temperature 0 / 0.1, repeat_penalty 1.1).
Other work on the machine moves the absolute times; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from voiceserver.llm import LlamaCppModel
from voiceserver.llm.base import ChatMessage, ChatRequest, Finish, TextDelta
from voiceserver.llm.sampling import Sampling
from voiceserver.memory import working
from voiceserver.memory.options import DEFAULT_TEMPLATE, WorkingMemoryOptions
from voiceserver.model_files import load_manifest, model_file
from voiceserver.settings import AgentConfig

CONFIGS = {
    "current": Sampling(temperature=0.3, top_p=0.9, top_k=40, min_p=0.05, repeat_penalty=1.1),
    "penalties": Sampling(temperature=0.3, top_p=0.9, repeat_penalty=1.3, repeat_last_n=256, frequency_penalty=0.3,
                          presence_penalty=0.3),
    "ngram": Sampling(temperature=0.3, top_p=0.9, repeat_penalty=1.1, no_repeat_ngram=6),
    "ngram4": Sampling(temperature=0.3, top_p=0.9, repeat_penalty=1.1, no_repeat_ngram=4),
    "defaults": Sampling(),
    "greedy": Sampling(temperature=0.0, repeat_penalty=1.1),
    "cool": Sampling(temperature=0.1, top_p=0.9, repeat_penalty=1.1),
}


@dataclass
class Turn:
    question: str
    check: str | None = None  # scenario name counted in the table
    keywords: tuple[str, ...] = ()
    min_words: int = 0
    remember: tuple[str, str] | None = None  # (field, value) extraction would add to working memory after it
    max_tokens: int = 80


CONVERSATION = [
    Turn("Hi there, how are you today?"),
    Turn("My name is Ada.", remember=("Name", "Ada")),
    Turn("What is the capital of France?", "knowledge", ("paris",)),
    Turn("My favourite colour is green.", remember=("Preferences", "favourite colour is green")),
    Turn("Is the sun a star? Answer yes or no.", "yes/no", ("yes",)),
    Turn("What is my name?", "name", ("ada",)),
    Turn("What is my favourite colour?", "colour", ("green",)),
    Turn("Tell me a short story about a dragon.", "story", ("dragon",), min_words=40, max_tokens=160),
]
SECOND_CALL = [Turn("What is my name?", "call 2: name", ("ada",)),
               Turn("What is my favourite colour?", "call 2: colour", ("green",)),
               Turn("Can a penguin fly?", "call 2: penguin", ("no",)),
               Turn("How many legs does a spider have?", "call 2: spider", ("eight",))]
CHECKS = ["knowledge", "yes/no", "name", "colour", "story", "call 2: name", "call 2: colour", "call 2: penguin",
          "call 2: spider"]


def memory_block(facts: dict[str, str]) -> str:
    """The working-memory system block as the memory renders it for a local model (extraction mode)."""
    text = DEFAULT_TEMPLATE
    for key, value in facts.items():
        text = text.replace(f"- {key}:", f"- {key}: {value}")
    return working.system_block(WorkingMemoryOptions(), text, read_only=True)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def parrots(reply: str, earlier: list[str]) -> bool:
    mine = normalise(reply)
    return any(old and (mine == old or (len(old.split()) >= 5 and old in mine)) for old in map(normalise, earlier))


def passed(turn: Turn, reply: str) -> bool:
    words = normalise(reply).split()
    return all(k in words for k in turn.keywords) and len(words) >= turn.min_words


@dataclass
class Tally:
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    phrase: list[float] = field(default_factory=list)  # warm turns: time to the first 32-character phrase
    cached: list[int] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    ok: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    parroting_conversations: int = 0
    parroted_replies: int = 0
    conversations: int = 0
    samples: list[str] = field(default_factory=list)


PHRASE_CHARS = 32  # the session cuts its first phrase for speech here (turn.first_phrase_max_chars)


async def ask(model: LlamaCppModel, messages: list[ChatMessage], max_tokens: int,
              phrases: list[float] | None = None) -> tuple[str, float, float, Finish]:
    """(reply, seconds to the first text, tokens/s after it, the Finish); appends to ``phrases`` the seconds until
    the first phrase (32 characters, or the whole reply if shorter) could go to speech synthesis."""
    started = time.perf_counter()
    first = last = 0.0
    phrase = 0.0
    parts: list[str] = []
    finish = Finish()
    async for chunk in model.stream(ChatRequest(messages, max_tokens=max_tokens)):
        now = time.perf_counter() - started
        if isinstance(chunk, TextDelta):
            parts.append(chunk.text)
            first = first or now
            last = now
            if not phrase and sum(map(len, parts)) >= PHRASE_CHARS:
                phrase = now
        elif isinstance(chunk, Finish):
            finish = chunk
    if phrases is not None:
        phrases.append(phrase or last)
    n = finish.usage.completion_tokens
    rate = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    return "".join(parts), first, rate, finish


async def conversation(model: LlamaCppModel, system: list[ChatMessage], tally: Tally, verbose: bool) -> None:
    facts: dict[str, str] = {}
    history: list[ChatMessage] = []
    replies: list[str] = []
    parroted = 0
    for number, turn in enumerate(CONVERSATION, 1):
        messages = [*system, ChatMessage("system", memory_block(facts)), *history, ChatMessage("user", turn.question)]
        reply, first, rate, finish = await ask(model, messages, turn.max_tokens,
                                               tally.phrase if number > 1 else None)
        if number > 1:
            tally.warm.append(first)
            tally.cached.append(finish.usage.cached_tokens)
        tally.prompt.append(finish.usage.prompt_tokens)
        if rate:
            tally.rates.append(rate)
        if turn.check:
            tally.runs[turn.check] = tally.runs.get(turn.check, 0) + 1
            tally.ok[turn.check] = tally.ok.get(turn.check, 0) + passed(turn, reply)
        if parrots(reply, replies):
            parroted += 1
        if verbose:
            print(f"    {number}. {turn.question!r} -> {reply.strip()[:150]!r} "
                  f"[first {first * 1000:.0f} ms, prompt {finish.usage.prompt_tokens}, "
                  f"cached {finish.usage.cached_tokens}]")
        replies.append(reply)
        history += [ChatMessage("user", turn.question), ChatMessage("assistant", reply.strip())]
        if turn.remember:
            facts[turn.remember[0]] = turn.remember[1]
    tally.conversations += 1
    tally.parroted_replies += parroted
    tally.parroting_conversations += parroted > 0
    if not tally.samples:
        tally.samples = replies
    # cold: the longest prompt (turn 8's) with nothing cached
    for ctx in model._contexts:
        ctx.reset()
    last = CONVERSATION[-1]
    messages = [*system, ChatMessage("system", memory_block(facts)), *history[:-2], ChatMessage("user", last.question)]
    _, first, _, _ = await ask(model, messages, 8)
    tally.cold.append(first)
    # a second call: a new conversation that knows the caller only through working memory
    for turn in SECOND_CALL:
        messages = [*system, ChatMessage("system", memory_block(facts)), ChatMessage("user", turn.question)]
        reply, _, _, _ = await ask(model, messages, turn.max_tokens)
        tally.runs[turn.check] = tally.runs.get(turn.check, 0) + 1
        tally.ok[turn.check] = tally.ok.get(turn.check, 0) + passed(turn, reply)
        if verbose:
            print(f"    call 2: {turn.question!r} -> {reply.strip()[:150]!r}")


def stats(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def count_tokens_cost(model: LlamaCppModel) -> str:
    """Microseconds per count_tokens call on a short message and on a 2,000-character history."""
    short = "What is the weather like in Lyon tomorrow afternoon?"
    long = (short + " ") * 38
    out = []
    for text in (short, long):
        started = time.perf_counter()
        for _ in range(200):
            model.count_tokens(text)
        out.append(f"{len(text)} chars: {(time.perf_counter() - started) / 200 * 1e6:.0f} us")
    return ", ".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    llms = [name for name, spec in load_manifest().items() if spec.kind == "llm"]
    parser.add_argument("--models", default=",".join(llms), help="manifest names, comma-separated")
    parser.add_argument("--gguf", action="append", default=[], help="another GGUF file to evaluate as well")
    parser.add_argument("--configs", default="current,ngram,penalties",
                        help=f"comma-separated, or 'all': {', '.join(CONFIGS)}")
    parser.add_argument("--seeds", type=int, default=3, help="conversations per model and configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--quick", action="store_true", help="one seed, the 'current' configuration only")
    parser.add_argument("--verbose", action="store_true", help="print every reply")
    parser.add_argument("--instructions", help="system prompt instead of the default agent's")
    args = parser.parse_args()
    configs = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    seeds = 1 if args.quick else args.seeds
    if args.quick:
        configs = ["current"]
    files = [(name, model_file(args.models_dir, name, ".gguf")) for name in args.models.split(",") if name]
    files += [(Path(p).stem, Path(p)) for p in args.gguf]
    system = [ChatMessage("system", args.instructions or AgentConfig().instructions)]

    results: list[tuple[str, str, Tally]] = []
    for label, path in files:
        for config in configs:
            tally = Tally()
            load_s = 0.0
            for seed in range(seeds):
                model = LlamaCppModel(path, model_id=f"local/{label}", threads=args.threads, pool=1,
                                      sampling=CONFIGS[config], seed=seed + 1, timeout_s=600)
                started = time.perf_counter()
                await model.load()
                load_s = time.perf_counter() - started
                await ask(model, [ChatMessage("user", "Hello")], 2)  # first-call overheads are not the prompt's
                if seed == 0 and config == configs[0]:
                    print(f"{label}: load {load_s:.2f} s; count_tokens {count_tokens_cost(model)}")
                if args.verbose:
                    print(f"  {label} / {config} / seed {seed + 1}")
                await conversation(model, system, tally, args.verbose)
                await model.close()
            results.append((label, config, tally))
            print(f"  done: {label} / {config}")

    base_warm = stats(results[0][2].warm)[0] if results else 0.0
    print(f"\n{'model / config':<34}{'cold ms p50/p95':>17}{'warm ms p50/p95':>17}{'x base':>7}"
          f"{'phrase ms p50/p95':>19}{'cached p50':>11}{'prompt t8':>10}{'tok/s':>7}")
    for label, config, t in results:
        cold, warm = stats(t.cold), stats(t.warm)
        print(f"{label + ' / ' + config:<34}{cold[0] * 1000:>8.0f}/{cold[1] * 1000:<8.0f}"
              f"{warm[0] * 1000:>8.0f}/{warm[1] * 1000:<8.0f}{warm[0] / base_warm if base_warm else 0:>7.2f}"
              f"{stats(t.phrase)[0] * 1000:>10.0f}/{stats(t.phrase)[1] * 1000:<8.0f}"
              f"{stats([float(c) for c in t.cached])[0]:>11.0f}{max(t.prompt, default=0):>10}"
              f"{stats(t.rates)[0]:>7.1f}")
    print(f"\n{'model / config':<34}" + "".join(f"{c:>15}" for c in CHECKS) + f"{'parroting':>12}")
    for label, config, t in results:
        cells = "".join(f"{t.ok.get(c, 0)}/{t.runs.get(c, 0):<9}".rjust(15) for c in CHECKS)
        print(f"{label + ' / ' + config:<34}{cells}{t.parroting_conversations}/{t.conversations} "
              f"({t.parroted_replies})".rjust(12))
    print("\nparroting: conversations with a reply repeating an earlier one / conversations (replies in all)")
    for label, config, t in results:
        print(f"\nsample conversation, {label} / {config}:")
        for turn, reply in zip(CONVERSATION, t.samples, strict=False):
            print(f"  {turn.question!r} -> {reply.strip()[:160]!r}")


if __name__ == "__main__":
    asyncio.run(main())
