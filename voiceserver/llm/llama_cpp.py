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

Accounting: every Finish carries ``Usage(prompt_tokens, completion_tokens, cached_tokens)``: the prompt's size, the
tokens generated, and the prompt tokens served from the context's KV cache (counted once per call, for the pass that
reads the prompt first). Priority: background requests follow :mod:`.llama_pool`'s rules. Sampling:
:class:`~.sampling.Sampling`.
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

from ..engines import EngineGate, LiveActivity, ProviderError, iterate_in_thread
from ..logs import get_logger
from ..metrics import Metrics
from .base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatRequest,
    Finish,
    ModelCapabilities,
    PromptRead,
    TextDelta,
    ToolCall,
    ToolCallChunk,
    Usage,
)
from .chat_format import NONE_TOOL, ChatTemplate, StopMatcher
from .grammar import DecisionParser, GrammarCache, decision_schema
from .llama_pool import (
    PROMPT_CHUNK,
    USEFUL_PREFIX,
    BackgroundPolicy,
    Cancelled,
    ContextPool,
    common_prefix,
    reused_prefix,
)
from .sampling import NgramBlocker, Sampling

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


def release_sampler(ctx: Any) -> None:
    """Free the native sampler chain of the generation that just ended, now rather than at the next full collection.

    llama-cpp-python's ``LlamaSampler`` keeps its own free callback in an ``ExitStack`` on itself: a reference cycle,
    so reference counting never frees it. Its chain holds a candidate buffer of one entry per vocabulary token
    (Qwen2.5: 152k x 12 bytes, 1.8 MB), and ``generate`` makes a new chain every call. The server's collector
    thresholds (server/run.py) make full collections rare, so in a soak these buffers piled up at about 1.4 MiB a
    turn (a jemalloc heap profile: ``llama_sampler_sample`` -> ``std::vector::_M_default_append``)."""
    sampler = getattr(ctx, "_sampler", None)
    if sampler is not None:
        ctx._sampler = None
        sampler.close()


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
    background: bool = False


@dataclass(slots=True)
class _Pass:
    """How one generation pass ended."""

    ended: bool = False  # True: the model ended it (end-of-generation token), False: cut by the token budget


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
        sampling: Sampling | None = None,
        temperature: float | None = None,
        answer_after_tool_result: bool = True,
        seed: int | None = None,
        timeout_s: float = 60.0,
        first_chunk_timeout_s: float | None = None,
        retries: int = 0,
        extra_buffer_types: bool | None = None,
        metrics: Metrics | None = None,
        live_activity: LiveActivity | None = None,
    ):
        """``max_tokens`` bounds a spoken reply; ``structured_max_tokens`` bounds a tool decision or a schema object
        when the request sets no ``max_tokens``. ``pool`` contexts of ``context`` tokens each, ``threads`` each.
        ``sampling``: the sampler settings (``temperature``, if given, overrides its temperature).
        ``extra_buffer_types``: ggml's extra CPU buffer types (AMX, weight repacking); None = on unless the CPU has
        AMX (see :func:`_new_llama`)."""
        super().__init__(model_id, timeout_s=timeout_s, first_chunk_timeout_s=first_chunk_timeout_s, retries=retries,
                         metrics=metrics, live_activity=live_activity)
        if pool < 1 or threads < 1 or context < 64 or max_tokens < 1:
            raise ValueError("pool and threads must be >= 1, context >= 64, max_tokens >= 1")
        self.model_path = Path(model_path)
        self.threads = threads
        self.context = context
        self.pool = pool
        self.max_tokens = max_tokens
        self.structured_max_tokens = structured_max_tokens
        self.sampling = (sampling or Sampling()).with_temperature(temperature)
        self.answer_after_tool_result = answer_after_tool_result
        self.seed = seed
        self.extra_buffer_types = (not cpu_has_amx()) if extra_buffer_types is None else extra_buffer_types
        self.gate = EngineGate("llm", pool, self.metrics)
        self.background = BackgroundPolicy(self.gate, pool, self.live_activity)
        self._grammars = GrammarCache()
        self._load_lock = threading.Lock()  # a threading lock: load() may be called from several loops/threads
        self._pool = ContextPool()
        self._tokenizer: Any = None  # a vocabulary-only Llama for count_tokens before the weights are loaded
        self._template: ChatTemplate | None = None
        self._closed = False

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    # --- loading ----------------------------------------------------------------------------------------------

    @property
    def _contexts(self) -> list[Any]:
        return self._pool.contexts

    @property
    def loaded(self) -> bool:
        return bool(self._pool.contexts)

    async def load(self) -> None:
        """Load the GGUF into ``pool`` contexts, in a thread. Idempotent; concurrent callers share one load."""
        if not self._pool.contexts:
            await asyncio.to_thread(self._load_sync)

    def _check_file(self) -> Any:
        llama_cpp = _import_llama_cpp()
        if not self.model_path.is_file():
            raise ProviderError("model_missing", f"model file {self.model_path} not found; run "
                                "`voiceserver models fetch`", provider=self.provider)
        return llama_cpp

    def _load_sync(self) -> None:
        with self._load_lock:
            if self._pool.contexts:
                return
            if self._closed:
                raise ProviderError("llm_closed", f"{self.model_id} is closed", provider=self.provider)
            llama_cpp = self._check_file()
            started = time.perf_counter()
            contexts = []
            for _ in range(self.pool):
                kwargs: dict[str, Any] = {"n_ctx": self.context, "n_threads": self.threads,
                                          "n_threads_batch": self.threads, "verbose": False,
                                          "last_n_tokens_size": self.sampling.repeat_last_n}
                if self.seed is not None:
                    kwargs["seed"] = self.seed
                try:
                    contexts.append(_new_llama(llama_cpp, str(self.model_path),
                                               extra_buffer_types=self.extra_buffer_types, **kwargs))
                except Exception as exc:  # llama.cpp raises ValueError for a bad file
                    raise ProviderError("model_invalid", f"cannot load {self.model_path}: {exc}",
                                        provider=self.provider) from exc
            self._template = ChatTemplate.from_llama(contexts[0])
            self._pool.fill(contexts)
            self.metrics.engines_loaded.labels("llm").set(1)
            log.info(f"loaded {self.model_id} ({self.pool} context(s) of {self.context} tokens) "
                     f"in {time.perf_counter() - started:.2f}s", fields={"model": str(self.model_path)})

    async def close(self) -> None:
        """Free the contexts once no call is using them (waits for running calls). Idempotent."""
        self._closed = True
        self.background.close()
        if not self._pool.contexts:
            return
        for _ in range(self.pool):  # take every slot: no call runs after this
            await self.gate.__aenter__()
        try:
            for ctx in self._pool.clear():
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
        return self._pool.free

    # --- tokens ----------------------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Exact: the tokens of ``text`` with this model's tokenizer, special tokens parsed as the prompt renderer
        does. Measured here (``scripts/eval_models.py`` prints it): 20-60 µs for a 52-character message,
        0.4-0.5 ms for 2,000 characters: fine on the event loop for a message or two, not for a whole history in
        a loop. Before the model is loaded the first call reads the GGUF's vocabulary (a blocking file read of
        ~0.1-0.3 s): use :meth:`count_tokens_async` then."""
        if not text:
            return 0
        return len(self._vocab().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def count_tokens_async(self, text: str) -> int:
        if self._pool.contexts or self._tokenizer is not None:
            return self.count_tokens(text)
        return await asyncio.to_thread(self.count_tokens, text)

    def _vocab(self) -> Any:
        contexts = self._pool.contexts
        if contexts:
            return contexts[0]
        with self._load_lock:
            if self._tokenizer is None:
                llama_cpp = self._check_file()
                self._tokenizer = _new_llama(llama_cpp, str(self.model_path), extra_buffer_types=False,
                                             vocab_only=True, verbose=False)
            return self._tokenizer

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
                     stop=list(request.stop or []), offer_tools=tools_active,
                     background=request.priority == "background")

    async def _stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        if not request.messages:
            raise ProviderError("invalid_request", "a chat request needs at least one message", provider=self.provider)
        await self.load()
        plan = self._plan(request)
        cancel = threading.Event()

        def produce(emit: Callable[[Any], bool]) -> None:
            try:
                self._run_sync(request, plan, emit, cancel)
            except Cancelled:
                pass

        executor = None
        if plan.background:
            await self.background.admit()  # then the gate slot is taken with no await in between
            executor = self.background.executor()
        items = iterate_in_thread(self.gate, produce, maxsize=16, executor=executor)
        try:
            async for kind, value in items:
                if kind == "text":
                    yield TextDelta(value)
                elif kind == "prompt":
                    yield PromptRead(value)
                elif kind == "tool_call":
                    name, args = value
                    yield ToolCallChunk(ToolCall(id=ToolCall.new_id(), name=name, arguments=args))
                else:
                    yield value  # the Finish
        finally:
            cancel.set()  # seen by the worker at its next token, even in a pass that emits nothing
            await items.aclose()

    # --- prefill: a conversation's next prompt, read while the caller listens ----------------------------------

    warms_prompts = True

    async def prefill(self, request: ChatRequest, still_wanted: Callable[[], bool] | None = None) -> int:
        """Read the tokens that every prompt starting with ``request.messages`` shares (rendered with the request's
        tools) into the context holding most of them, as background work (it waits for live work to pause, yields
        to it, and gives the context up to a live call that needs it: ``llm_preempted``). The next live call of
        the conversation then reads only what is new. ``still_wanted`` is asked in the worker thread, once admitted:
        no, and nothing is read. Returns the tokens read (0: they were cached already, or no longer wanted)."""
        if not request.messages:
            return 0
        await self.load()
        plan = self._plan(request)
        cancel = threading.Event()

        def produce(emit: Callable[[Any], bool]) -> None:
            try:
                emit(self._prefill_sync(request, plan, cancel) if still_wanted is None or still_wanted() else 0)
            except Cancelled:
                pass

        if not await self.background.admit_prefill(still_wanted):
            return 0
        # admitted: the gate slot is taken next, with no await in between
        items = iterate_in_thread(self.gate, produce, maxsize=1, executor=self.background.executor())
        read = 0
        try:
            async for value in items:
                read = value
        finally:
            cancel.set()
            await items.aclose()
        return read

    def _prefill_sync(self, request: ChatRequest, plan: _Plan, cancel: threading.Event) -> int:
        tokens = self._shared_prefix_tokens(request, plan.offer_tools)
        if len(tokens) < USEFUL_PREFIX:
            return 0
        ctx = self._pool.take(tokens, background=True, cancel=cancel, warm=True)
        try:
            return self._prefill_in_chunks(ctx, tokens, cancel, whole=True)
        finally:
            self._pool.give_back(ctx)

    def _shared_prefix_tokens(self, request: ChatRequest, offer_tools: bool) -> list[int]:
        """The tokens of ``request.messages`` as the start of any longer prompt: a chat template renders the
        generation prompt after the last message, so two probe continuations are rendered and their common token
        prefix is kept (template-agnostic, and never longer than what a real continuation shares)."""
        probes = [self._prompt_tokens(ChatRequest(messages=[*request.messages, ChatMessage("user", text)],
                                                  tools=request.tools, tool_choice=request.tool_choice,
                                                  response_schema=request.response_schema),
                                      32, offer_tools)[0] for text in ("Yes.", "What?")]
        n = next((i for i, (a, b) in enumerate(zip(*probes, strict=False)) if a != b), min(map(len, probes)))
        return probes[0][:n]

    # --- worker thread ---------------------------------------------------------------------------------------

    def _prompt_tokens(self, request: ChatRequest, budget: int, offer_tools: bool = True) -> tuple[list[int], int]:
        """Render and tokenize the prompt, dropping the oldest turns if it does not fit; returns (tokens, budget).

        Without tools on offer (answering after tool results), the tools are not described and each result is
        folded into the user's message: SmolLM2 otherwise answers by imitating the tool-call JSON.
        """
        assert self._template is not None
        tokenizer = self._pool.contexts[0]
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
        usage = Usage(prompt_tokens=len(tokens))
        ctx = self._pool.take(tokens, plan.background, cancel)
        try:
            usage.cached_tokens = reused_prefix(ctx, tokens)
            if plan.decision is not None:
                parser = DecisionParser()
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
            stopper = StopMatcher(plan.stop)
            answer = _Pass()
            blocker = None
            if plan.answer_grammar is None and self.sampling.no_repeat_ngram:
                blocker = self._ngram_blocker(request, len(tokens))
            announced = False
            for piece in self._generate(ctx, tokens, plan.answer_grammar, plan, budget, cancel, usage, answer,
                                        blocker):
                out = stopper.feed(piece)
                if out and not announced:
                    announced = True  # the prompt is read: say how much of it the cache served, before any text
                    emit(("prompt", Usage(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens)))
                if out and not emit(("text", out)):
                    raise Cancelled
                if stopper.stopped:
                    break
            tail = stopper.flush()
            if tail and not emit(("text", tail)):
                raise Cancelled
            emit(("finish", Finish("stop" if answer.ended or stopper.stopped else "length", usage)))
        finally:
            self._pool.give_back(ctx)

    def _ngram_blocker(self, request: ChatRequest, prompt_length: int) -> NgramBlocker | None:
        tokenizer = self._pool.contexts[0]
        replies = [tokenizer.tokenize(m.content.encode("utf-8"), add_bos=False, special=False)
                   for m in request.messages if m.role == "assistant" and m.content]
        return NgramBlocker(replies, self.sampling.no_repeat_ngram, prompt_length) if replies else None

    def _prefill_in_chunks(self, ctx: Any, tokens: list[int], cancel: threading.Event, whole: bool = False) -> int:
        """Background calls: read the uncached part of the prompt 32 tokens at a time, pausing for live work in
        between; ``generate`` then finds all but the last token cached (``whole``: a prefill reads every token).
        Returns the tokens read."""
        start = common_prefix(ctx, tokens) if whole else reused_prefix(ctx, tokens)
        end = len(tokens) if whole else len(tokens) - 1  # generate evaluates the last token itself, for its logits
        if end - start <= (0 if whole else PROMPT_CHUNK):
            return 0
        if start == 0:
            ctx.reset()
        elif not ctx._ctx.kv_cache_seq_rm(-1, start, -1):
            ctx.reset()
            start = 0
        ctx.n_tokens = start
        for i in range(start, end, PROMPT_CHUNK):
            self.background.yield_to_live(cancel)
            if cancel.is_set():
                raise Cancelled
            ctx.eval(tokens[i:min(i + PROMPT_CHUNK, end)])
        return end - start

    def _generate(self, ctx: Any, tokens: list[int], grammar: Any, plan: _Plan, budget: int,
                  cancel: threading.Event, usage: Usage, state: _Pass,
                  blocker: NgramBlocker | None = None) -> Iterator[str]:
        """Yield decoded text pieces of one generation pass; ``state.ended`` tells how it ended."""
        llama_cpp = _import_llama_cpp()
        if plan.background:
            self._prefill_in_chunks(ctx, tokens, cancel)
        vocab = ctx._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated = 0
        s = self.sampling
        gen = ctx.generate(tokens, temp=plan.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                           repeat_penalty=s.repeat_penalty, frequency_penalty=s.frequency_penalty,
                           presence_penalty=s.presence_penalty, grammar=grammar,
                           logits_processor=[blocker] if blocker is not None else None)
        try:
            for token in gen:
                if cancel.is_set():
                    raise Cancelled
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
                if plan.background:
                    self.background.yield_to_live(cancel)
        finally:
            gen.close()
            release_sampler(ctx)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
