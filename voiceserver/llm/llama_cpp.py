"""The local chat model: a GGUF file (SmolLM2 by default) run in process by llama-cpp-python.

Concurrency: a ``llama_cpp.Llama`` holds one context and is not thread-safe, so the model keeps a pool of ``pool``
contexts behind an :class:`EngineGate` (``concurrency=pool``) and a free-list; each call takes one context for its
whole generation, on a worker thread (``iterate_in_thread``). When the consumer stops (barge-in, cancellation, a
timeout) the worker sees it at the next token and returns the context to the pool.

Prompt cache: the prompt is rendered with the GGUF's chat template, system prompt first and unchanged between turns,
and llama.cpp reuses the KV cache of the longest common token prefix with the context's previous call. With
``pool > 1`` a call takes the free context whose cached tokens share the longest prefix with its prompt.

Tools and structured output (JSON-schema grammars, so the JSON is always valid for the schema):

- ``response_schema`` and no tools: the whole reply is constrained to the schema and streamed as TextDelta.
- tools offered and ``tool_choice`` not "none": a first, constrained pass produces a decision object (see
  :mod:`.grammar`). A tool decision becomes one ToolCallChunk and Finish("tool_calls"). A "none" decision stops the
  pass as soon as the name is read, and a second pass over the *same prompt* (an exact prompt-cache hit, so it costs
  one token of prompt evaluation) streams the answer: free text, or JSON of ``response_schema`` when one is set. A
  second pass was chosen over streaming an ``"answer"`` string field because the 135M model writes much better prose
  outside JSON (inside it, it copied placeholder text from the instructions).
- When the last message is a tool result and ``tool_choice`` is "auto", the decision pass is skipped
  (``answer_after_tool_result=True``): the small model otherwise calls the same tool again instead of answering.
  Multi-step tool chains on the local model need ``answer_after_tool_result=False``.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engines import EngineGate, ProviderError, iterate_in_thread
from ..logs import get_logger
from ..metrics import Metrics
from .base import (
    ChatChunk,
    ChatModel,
    ChatRequest,
    Finish,
    ModelCapabilities,
    TextDelta,
    ToolCall,
    ToolCallChunk,
    Usage,
)
from .chat_format import NONE_TOOL, ChatTemplate, StopMatcher
from .grammar import DecisionParser, GrammarCache, decision_schema

log = get_logger("LLM")

_INSTALL_HINT = "llama-cpp-python is not installed; install the local extra: pip install 'voiceserver[local]'"


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # the optional `local` extra
        raise ProviderError("not_installed", _INSTALL_HINT, provider="local") from exc
    return llama_cpp


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """True when the CPU advertises Intel AMX (``amx_int8`` in /proc/cpuinfo's flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    return any(line.startswith("flags") and " amx_int8" in line for line in cpuinfo.splitlines())


_PARAMS_PATCH = threading.Lock()


def _new_llama(llama_cpp: Any, path: str, *, extra_buffer_types: bool, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(path, **kwargs)``, optionally without ggml's extra CPU buffer types.

    Why: llama.cpp built with GGML_NATIVE on a CPU with AMX routes batched matrix products through its AMX buffer
    type, and with llama-cpp-python 0.3.36 that path segfaults in ``ggml_backend_amx_mul_mat`` on the first
    multi-token prompt (seen on a Xeon with amx_int8). ``use_extra_bufts = False`` turns that buffer type (and weight
    repacking) off. ``Llama`` exposes no argument for it, so its default model parameters are wrapped for the
    duration of the constructor, under a lock.
    """
    if extra_buffer_types:
        return llama_cpp.Llama(path, **kwargs)
    import llama_cpp.llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    with _PARAMS_PATCH:
        llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
        try:
            return llama_cpp.Llama(path, **kwargs)
        finally:
            llama_module.llama_cpp.llama_model_default_params = original


@dataclass(slots=True)
class _Plan:
    """What one call does: an optional decision pass, then an optional answer pass."""

    decision: Any  # LlamaGrammar for the decision object, or None
    answer: bool
    answer_grammar: Any  # LlamaGrammar for response_schema, or None
    budget: int  # max new tokens per pass
    temperature: float
    stop: list[str]
    offer_tools: bool = True  # False: answering after tool results, tools are not described at all


@dataclass(slots=True)
class _Pass:
    """How one generation pass ended."""

    ended: bool = False  # True: the model ended it (end-of-generation token), False: cut by the token budget


class _Cancelled(Exception):
    """The consumer went away; the worker unwinds and returns its context."""


class LlamaCppModel(ChatModel):
    """A GGUF chat model run with llama.cpp in worker threads, ``pool`` contexts at most at once."""

    provider = "local"
    capabilities = ModelCapabilities(tools=True, structured_output=True, streaming=True)

    def __init__(
        self,
        model_path: Path | str,
        *,
        model_id: str = "local/smollm2",
        threads: int = 2,
        context: int = 2048,
        pool: int = 1,
        max_tokens: int = 160,
        structured_max_tokens: int = 512,
        temperature: float = 0.3,
        top_p: float = 0.9,
        repeat_penalty: float = 1.1,
        answer_after_tool_result: bool = True,
        seed: int | None = None,
        timeout_s: float = 60.0,
        first_chunk_timeout_s: float | None = None,
        retries: int = 0,
        extra_buffer_types: bool | None = None,
        metrics: Metrics | None = None,
    ):
        """``max_tokens`` bounds a spoken reply; ``structured_max_tokens`` bounds a tool decision or a schema object
        when the request sets no ``max_tokens``. ``pool`` contexts of ``context`` tokens each, ``threads`` each.
        ``extra_buffer_types``: ggml's extra CPU buffer types (AMX, weight repacking); None = on unless the CPU has
        AMX (see :func:`_new_llama`)."""
        super().__init__(model_id, timeout_s=timeout_s, first_chunk_timeout_s=first_chunk_timeout_s, retries=retries,
                         metrics=metrics)
        if pool < 1 or threads < 1 or context < 64 or max_tokens < 1:
            raise ValueError("pool and threads must be >= 1, context >= 64, max_tokens >= 1")
        self.model_path = Path(model_path)
        self.threads = threads
        self.context = context
        self.pool = pool
        self.max_tokens = max_tokens
        self.structured_max_tokens = structured_max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.repeat_penalty = repeat_penalty
        self.answer_after_tool_result = answer_after_tool_result
        self.seed = seed
        self.extra_buffer_types = (not cpu_has_amx()) if extra_buffer_types is None else extra_buffer_types
        self.gate = EngineGate("llm", pool, self.metrics)
        self._grammars = GrammarCache()
        self._load_lock = threading.Lock()  # a threading lock: load() may be called from several loops/threads
        self._pool_lock = threading.Lock()
        self._contexts: list[Any] = []
        self._free: list[Any] = []
        self._last_used: dict[int, float] = {}
        self._template: ChatTemplate | None = None
        self._closed = False

    # --- loading ----------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return bool(self._contexts)

    async def load(self) -> None:
        """Load the GGUF into ``pool`` contexts, in a thread. Idempotent; concurrent callers share one load."""
        if not self._contexts:
            await asyncio.to_thread(self._load_sync)

    def _load_sync(self) -> None:
        with self._load_lock:
            if self._contexts:
                return
            if self._closed:
                raise ProviderError("llm_closed", f"{self.model_id} is closed", provider=self.provider)
            llama_cpp = _import_llama_cpp()
            if not self.model_path.is_file():
                raise ProviderError("model_missing", f"model file {self.model_path} not found; run "
                                    "`voiceserver models fetch`", provider=self.provider)
            started = time.perf_counter()
            contexts = []
            for _ in range(self.pool):
                kwargs: dict[str, Any] = {"n_ctx": self.context, "n_threads": self.threads,
                                          "n_threads_batch": self.threads, "verbose": False}
                if self.seed is not None:
                    kwargs["seed"] = self.seed
                try:
                    contexts.append(_new_llama(llama_cpp, str(self.model_path),
                                               extra_buffer_types=self.extra_buffer_types, **kwargs))
                except Exception as exc:  # llama.cpp raises ValueError for a bad file
                    raise ProviderError("model_invalid", f"cannot load {self.model_path}: {exc}",
                                        provider=self.provider) from exc
            self._template = ChatTemplate.from_llama(contexts[0])
            with self._pool_lock:
                self._free = list(contexts)
            self._contexts = contexts
            self.metrics.engines_loaded.labels("llm").set(1)
            log.info(f"loaded {self.model_id} ({self.pool} context(s) of {self.context} tokens) "
                     f"in {time.perf_counter() - started:.2f}s", fields={"model": str(self.model_path)})

    async def close(self) -> None:
        """Free the contexts once no call is using them (waits for running calls). Idempotent."""
        self._closed = True
        if not self._contexts:
            return
        for _ in range(self.pool):  # take every slot: no call runs after this
            await self.gate.__aenter__()
        try:
            contexts, self._contexts = self._contexts, []
            with self._pool_lock:
                self._free = []
            for ctx in contexts:
                try:
                    ctx.close()
                except Exception:  # noqa: BLE001 - best effort
                    pass
            self.metrics.engines_loaded.labels("llm").set(0)
        finally:
            for _ in range(self.pool):
                await self.gate.__aexit__(None, None, None)

    @property
    def free_contexts(self) -> int:
        """Contexts not in use right now (tests use it to check a cancelled call returned its context)."""
        with self._pool_lock:
            return len(self._free)

    # --- the call ------------------------------------------------------------------------------------------------

    def _plan(self, request: ChatRequest) -> _Plan:
        tools_active = bool(request.tools) and request.tool_choice != "none"
        if tools_active and self.answer_after_tool_result and request.tool_choice == "auto" and request.messages \
                and request.messages[-1].role == "tool":
            tools_active = False
        decision = self._grammars.get(decision_schema(request.tools, request.tool_choice)) if tools_active else None
        schema_grammar = self._grammars.get(request.response_schema) if request.response_schema is not None else None
        structured = tools_active or request.response_schema is not None
        budget = request.max_tokens or (max(self.max_tokens, self.structured_max_tokens) if structured
                                        else self.max_tokens)
        return _Plan(decision=decision, answer=not tools_active or request.tool_choice == "auto",
                     answer_grammar=schema_grammar, budget=budget,
                     temperature=self.temperature if request.temperature is None else request.temperature,
                     stop=list(request.stop or []), offer_tools=tools_active)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        if not request.messages:
            raise ProviderError("invalid_request", "a chat request needs at least one message", provider=self.provider)
        await self.load()
        plan = self._plan(request)
        cancel = threading.Event()

        def produce(emit: Callable[[Any], bool]) -> None:
            try:
                self._run_sync(request, plan, emit, cancel)
            except _Cancelled:
                pass

        items = iterate_in_thread(self.gate, produce, maxsize=16)
        try:
            async for kind, value in items:
                if kind == "text":
                    yield TextDelta(value)
                elif kind == "tool_call":
                    name, args = value
                    yield ToolCallChunk(ToolCall(id=ToolCall.new_id(), name=name, arguments=args))
                else:
                    yield value  # the Finish
        finally:
            cancel.set()  # seen by the worker at its next token, even in a pass that emits nothing
            await items.aclose()

    # --- worker thread ---------------------------------------------------------------------------------------

    def _take_context(self, tokens: list[int]) -> Any:
        """The free context whose cached tokens share the longest prefix with ``tokens`` (the gate guarantees one)."""
        with self._pool_lock:
            if not self._free:
                raise ProviderError("llm_unavailable", "no free llama.cpp context", provider=self.provider)
            best = max(range(len(self._free)), key=lambda i: _common_prefix(self._free[i], tokens))
            if _common_prefix(self._free[best], tokens) < USEFUL_PREFIX:
                # Nothing cached helps this prompt (a side task such as working-memory extraction): take the least
                # recently used context rather than the one whose cache a conversation is about to reuse.
                best = min(range(len(self._free)), key=lambda i: self._last_used.get(id(self._free[i]), 0.0))
            ctx = self._free.pop(best)
            self._last_used[id(ctx)] = time.monotonic()
            return ctx

    def _give_back(self, ctx: Any) -> None:
        with self._pool_lock:
            if ctx in self._contexts:
                self._free.append(ctx)

    def _prompt_tokens(self, request: ChatRequest, budget: int, offer_tools: bool = True) -> tuple[list[int], int]:
        """Render and tokenize the prompt, dropping the oldest turns if it does not fit; returns (tokens, budget).

        Without tools on offer (answering after tool results), the tools are not described and each result is
        folded into the user's message: SmolLM2 otherwise answers by imitating the tool-call JSON.
        """
        assert self._template is not None
        tokenizer = self._contexts[0]
        messages = list(request.messages)
        fold = not offer_tools and any(m.role == "tool" for m in messages)
        while True:
            text = self._template.render(messages, tools=request.tools if offer_tools else None,
                                         tool_choice=request.tool_choice, response_schema=request.response_schema,
                                         fold_tool_results=fold)
            tokens = tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            room = self.context - len(tokens)
            if room >= min(budget, 32):
                return tokens, min(budget, room)
            # Drop the oldest message after the system prompt; keep the last one (the question being answered).
            first = 1 if messages and messages[0].role == "system" else 0
            if len(messages) - first <= 1:
                raise ProviderError("llm_context_overflow", f"the prompt ({len(tokens)} tokens) does not fit the "
                                    f"{self.context}-token context", provider=self.provider)
            del messages[first]

    def _run_sync(self, request: ChatRequest, plan: _Plan, emit: Callable[[Any], bool],
                  cancel: threading.Event) -> None:
        tokens, budget = self._prompt_tokens(request, plan.budget, plan.offer_tools)
        usage = Usage()
        ctx = self._take_context(tokens)
        try:
            if plan.decision is not None:
                parser = DecisionParser()
                usage.prompt_tokens += len(tokens)
                for piece in self._generate(ctx, tokens, plan.decision, plan, budget, cancel, usage, _Pass()):
                    if parser.feed(piece) == NONE_TOOL:
                        break  # the rest of the object says nothing; answer in a second pass
                if parser.tool != NONE_TOOL:
                    name, args = parser.result()
                    emit(("tool_call", (name, args)))
                    emit(("finish", Finish("tool_calls", usage)))
                    return
                if not plan.answer:
                    raise ProviderError("llm_invalid_output", "the model declined every tool", provider=self.provider)
            usage.prompt_tokens += len(tokens)
            stopper = StopMatcher(plan.stop)
            answer = _Pass()
            for piece in self._generate(ctx, tokens, plan.answer_grammar, plan, budget, cancel, usage, answer):
                out = stopper.feed(piece)
                if out and not emit(("text", out)):
                    raise _Cancelled
                if stopper.stopped:
                    break
            tail = stopper.flush()
            if tail and not emit(("text", tail)):
                raise _Cancelled
            emit(("finish", Finish("stop" if answer.ended or stopper.stopped else "length", usage)))
        finally:
            self._give_back(ctx)

    def _generate(self, ctx: Any, tokens: list[int], grammar: Any, plan: _Plan, budget: int,
                  cancel: threading.Event, usage: Usage, state: _Pass) -> Iterator[str]:
        """Yield decoded text pieces of one generation pass; ``state.ended`` tells how it ended."""
        llama_cpp = _import_llama_cpp()
        vocab = ctx._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated = 0
        gen = ctx.generate(tokens, temp=plan.temperature, top_p=self.top_p, repeat_penalty=self.repeat_penalty,
                           grammar=grammar)
        try:
            for token in gen:
                if cancel.is_set():
                    raise _Cancelled
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    state.ended = True
                    break
                generated += 1
                usage.completion_tokens += 1
                piece = decoder.decode(ctx.detokenize([token]))
                if piece:
                    yield piece
                if generated >= budget:
                    break
        finally:
            gen.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


USEFUL_PREFIX = 24  # tokens: a shorter shared prefix is just the chat template's opening


def _common_prefix(ctx: Any, tokens: list[int]) -> int:
    cached = ctx._input_ids[: ctx.n_tokens]
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n
