"""The prompt of one turn: what memory adds, laid out for the prompt cache and fitted into a token budget.

Pure functions and values (no I/O), shared by agent runs and network runs. The layout, in this order:

1. the system prompt (and the tool descriptions the provider adds to it): stable;
2. working memory (memory's system message): changes rarely, and in the prompt more rarely still (below);
3. the history: grows at the end;
4. what changes every turn, last: the recalled messages (one system message), then the new input.

So a local model's prompt cache (llama.cpp reuses the longest common token prefix with its previous call) keeps
1-3 from one turn to the next; recall placed before the history would rewrite the prefix every turn.

The history window moves in blocks, never by one message a turn: its first message is kept from turn to turn (a
:class:`HistoryWindows` entry per thread) until the window is over the budget or memory's own window has moved
past it; then it is cut back to half (of the budget left for history, or of memory's window). The prefix stays
identical for several turns in a row, and the model re-reads the history only at a cut.

Recall sticks where it was said. A turn's recalled messages are one system message between the history and the
input; the window keeps it (a :class:`RecallNote`, anchored after the history message it followed), so the next
turn has it at the same place, followed by the exchange that came after it. Later turns recall only what the window
does not show yet. Were the note dropped again, every turn would rewrite the prompt from the last exchange on (the
model would re-read the last question and reply, and the recall, on every turn). Notes go with the window at a cut.

Working memory is shown as it was when the window last started: what the after-turn extraction learns during a call
is already in that call's history, so updating the block at once would only make the model re-read the history. It
is refreshed at the next cut (the prefix is rewritten then anyway) and at the start of every call (a new thread).

When the budget is tight, recall is trimmed first, then the oldest history. The system prompt, working memory and
the input are always sent whole. ``budget=0`` means no budget and no block window (memory's window as it is).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..llm.base import ChatMessage, ToolSpec
from .records import history_to_chat, message_field

DEFAULT_PROMPT_BUDGET_TOKENS = 1024  # fits a 2048-token local context with room for the reply and the tool list
MESSAGE_OVERHEAD_TOKENS = 4  # the chat template's role markers around each message (ChatML: about 4)
MAX_RECALLED_CHARS = 4000  # recall text at most, whatever the budget
MAX_RECALLED_MESSAGE_CHARS = 500
MAX_WINDOWS = 2_000  # threads whose window is remembered (least recently used forgotten): twice the sessions a
# machine serves; more only kept ended calls (a soak grew by 0.5 KiB a call)
# Short: a returning caller's turn reads a new note most turns, header included (10 tokens, was 18).
RECALL_HEADER = "Earlier messages (use them only if relevant):"

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """A model-free estimate: about four characters a token for English text."""
    return math.ceil(len(text) / 4) if text else 0


def token_counter(model: Any) -> TokenCounter:
    """``model.count_tokens`` when the model has one (exact for llama.cpp), else :func:`estimate_tokens`.

    A counter that fails (a model that cannot tokenize yet) falls back to the estimate for that text.
    """
    count = getattr(model, "count_tokens", None)
    if not callable(count) or getattr(count, "is_estimate", False):  # the base ChatModel's estimate
        return estimate_tokens

    def counted(text: str) -> int:
        try:
            value = count(text)
        except Exception:  # noqa: BLE001 - an estimate is good enough for a budget
            return estimate_tokens(text)
        return value if isinstance(value, int) and not isinstance(value, bool) else estimate_tokens(text)

    return counted


def message_tokens(message: ChatMessage, count: TokenCounter) -> int:
    """One message as the model reads it: its text, its tool calls' JSON, and the template's markers."""
    total = MESSAGE_OVERHEAD_TOKENS + count(message.content or "")
    for call in message.tool_calls or []:
        total += count(call.name) + count(json.dumps(call.arguments, ensure_ascii=False))
    return total


def tools_tokens(tools: list[ToolSpec], count: TokenCounter) -> int:
    """The tool descriptions a provider adds to the system prompt (names, descriptions, argument schemas)."""
    return sum(count(f"{t.name}: {t.description} {json.dumps(t.parameters, ensure_ascii=False)}") for t in tools)


@dataclass(frozen=True, slots=True)
class ContextReport:
    """What went into a turn's prompt: the payload of the agent stream's ``context`` chunk."""

    prompt_tokens: int
    budget: int
    history_messages: int
    recalled_messages: int
    dropped_history: int
    working_memory: bool

    def payload(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "budget": self.budget,
                "history_messages": self.history_messages, "recalled_messages": self.recalled_messages,
                "dropped_history": self.dropped_history, "working_memory": self.working_memory}


@dataclass(frozen=True, slots=True)
class RecallNote:
    """Recall shown in a window: after the history message ``after`` (None: before the window's first message),
    its system message ``text``, the ids of the messages it shows and the assistant replies among them, each with
    the recalled user message just before it (None when there is none)."""

    after: str | None
    text: str
    ids: tuple[str, ...]
    replies: tuple[tuple[str | None, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    """A thread's prompt window, kept between turns: the id of its first history message (None: the thread had no
    history yet), the working memory shown with it and the recall notes shown in it so far."""

    start: str | None
    working_memory: str | None = None
    notes: tuple[RecallNote, ...] = ()


@dataclass(slots=True)
class PromptPlan:
    """The laid-out prompt: ``prefix`` (system, working memory, history), ``recall`` (zero or one system message)
    and ``tail`` (the input); ``window`` is the thread's window for the next turn."""

    prefix: list[ChatMessage]
    recall: list[ChatMessage]
    tail: list[ChatMessage]
    report: ContextReport
    window: Window
    # assistant replies shown in recall, each with the recalled question before it (for the repetition guard)
    recalled_replies: list[tuple[str | None, str]] = field(default_factory=list)

    @property
    def window_start(self) -> str | None:
        """The id of the first history message kept (None: no history)."""
        return self.window.start

    @property
    def messages(self) -> list[ChatMessage]:
        return [*self.prefix, *self.recall, *self.tail]


class HistoryWindows:
    """Each thread's :class:`Window`, kept between turns; bounded, least recently used threads forgotten first.
    Losing an entry costs one prefix rewrite, nothing else."""

    def __init__(self, max_entries: int = MAX_WINDOWS):
        self._windows: OrderedDict[Hashable, Window] = OrderedDict()
        self._max = max_entries

    def get(self, key: Hashable) -> Window | None:
        window = self._windows.get(key)
        if window is not None:
            self._windows.move_to_end(key)
        return window

    def peek(self, key: Hashable) -> Window | None:
        """The window, without marking it used (a plain read, safe from a worker thread)."""
        return self._windows.get(key)

    def set(self, key: Hashable, window: Window) -> None:
        self._windows[key] = window
        self._windows.move_to_end(key)
        while len(self._windows) > self._max:
            self._windows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._windows)


def render_recall(recalled: list[Any]) -> str | None:
    """Recalled memory messages (text ones) as one system message text, oldest first; None when there are none."""
    lines = []
    total = 0
    for m in recalled:
        if (message_field(m, "type", "text") or "text") != "text":
            continue
        text = " ".join((message_field(m, "content", "") or "").split())
        if not text:
            continue
        if len(text) > MAX_RECALLED_MESSAGE_CHARS:
            text = text[: MAX_RECALLED_MESSAGE_CHARS - 3] + "..."
        line = f"- {message_field(m, 'role')}: {text}"
        total += len(line)
        if total > MAX_RECALLED_CHARS:
            break
        lines.append(line)
    return RECALL_HEADER + "\n" + "\n".join(lines) if lines else None


def layout_prompt(*, system: list[ChatMessage], working_memory: str | None, history: list[Any],
                  recalled: list[Any] | Callable[[set[str]], list[Any]], tail: list[ChatMessage], budget: int,
                  count: TokenCounter, window: Window | None = None, extra_tokens: int = 0) -> PromptPlan:
    """Lay out one turn's prompt (see the module notes).

    ``history`` and ``recalled`` are memory messages (objects or dicts with ``id``, ``role``, ``content``,
    ``type``), chronological, as :meth:`Memory.prepare` returns them; ``recalled`` may instead be memory's
    ``select_recalled`` (recall excluding the given ids), so messages the window leaves out can be recalled;
    ``working_memory`` is memory's system message now; ``window`` is ``HistoryWindows.get(...)`` for the thread;
    ``extra_tokens`` counts what the provider adds (the tool descriptions).
    """
    start, kept_window = _window_start(history, window, budget)
    shown_wm = window.working_memory if kept_window and window is not None else working_memory
    fixed = _fixed_tokens(system, shown_wm, tail, count) + extra_tokens
    kept = history[start:]
    chat, notes = _with_notes(kept, window.notes if kept_window and window is not None else ())
    used = sum(message_tokens(m, count) for m in chat)
    if budget > 0 and fixed + used > budget:
        shown_wm = working_memory  # the prefix is rewritten anyway: show what is known now
        fixed = _fixed_tokens(system, shown_wm, tail, count) + extra_tokens
        kept = _newest_within(kept, (budget - fixed) // 2, count)
        chat, notes = history_to_chat(kept), ()
        used = sum(message_tokens(m, count) for m in chat)
    kept_ids = {message_field(m, "id") for m in kept}
    shown_ids = kept_ids | {i for note in notes for i in note.ids}
    # This question's best hits, less those a note already shows (not the next-best instead: they are less
    # relevant, and each would grow the prompt).
    pool = recalled(kept_ids) if callable(recalled) else recalled
    candidates = [m for m in pool if message_field(m, "id") not in shown_ids]
    recall = _fit_recall(candidates, budget - fixed - used if budget > 0 else None, count)
    recall_tokens = sum(message_tokens(m, count) for m in recall[0])
    replies = _recalled_replies(recall[2], pool)
    if recall[0]:
        anchor = message_field(kept[-1], "id") if kept else None
        ids = tuple(str(message_field(m, "id")) for m in recall[2])
        notes = (*notes, RecallNote(anchor, recall[0][0].content or "", ids, replies))
    wm = [ChatMessage("system", shown_wm)] if shown_wm else []
    report = ContextReport(prompt_tokens=fixed + used + recall_tokens, budget=budget, history_messages=len(kept),
                           recalled_messages=sum(len(note.ids) for note in notes) if budget > 0 else recall[1],
                           dropped_history=len(history) - len(kept), working_memory=bool(wm))
    first = message_field(kept[0], "id") if kept else None
    return PromptPlan(prefix=[*system, *wm, *chat], recall=recall[0], tail=list(tail), report=report,
                      window=Window(first, shown_wm, notes if budget > 0 else ()),
                      recalled_replies=[r for note in notes for r in note.replies] if budget > 0 else list(replies))


def _recalled_replies(shown: list[Any], pool: list[Any]) -> tuple[tuple[str | None, str], ...]:
    """The assistant messages among recalled ones, each with the user message recalled just before it.

    The question may have been shown by an earlier turn's note and so is left out of this one: it is then looked
    up in ``pool`` (every hit of this question, with its neighbours, chronological), so that an answer to this
    same question is known as one (agent.repetition) and not taken for parroting."""
    at = {message_field(m, "id"): i for i, m in enumerate(pool)}

    def question_before(m: Any, before: Any) -> str | None:
        if before is None or message_field(before, "role") != "user" \
                or message_field(before, "thread_id") != message_field(m, "thread_id"):
            return None
        return str(message_field(before, "content", "") or "")

    pairs = []
    for i, m in enumerate(shown):
        if message_field(m, "role") != "assistant":
            continue
        asked = question_before(m, shown[i - 1] if i else None)
        if asked is None:
            k = at.get(message_field(m, "id"))
            asked = question_before(m, pool[k - 1] if k else None)
        pairs.append((asked, " ".join(str(message_field(m, "content", "") or "").split())))
    return tuple(pairs)


def _with_notes(kept: list[Any], notes: tuple[RecallNote, ...]) -> tuple[list[ChatMessage], tuple[RecallNote, ...]]:
    """The window's history as chat messages with its recall notes back where they were shown, and the notes
    still in place (a note whose anchor is gone from the history is dropped: the prefix changes there anyway)."""
    ids = [message_field(m, "id") for m in kept]
    placed: list[tuple[int, RecallNote]] = []
    for note in notes:
        if note.after is None:
            placed.append((0, note))
        elif note.after in ids:
            placed.append((ids.index(note.after) + 1, note))
    placed.sort(key=lambda item: item[0])  # stable: notes at one place keep their order
    chat: list[ChatMessage] = []
    done = 0
    for at, note in placed:
        chat.extend(history_to_chat(kept[done:at]))
        chat.append(ChatMessage("system", note.text))
        done = at
    chat.extend(history_to_chat(kept[done:]))
    return chat, tuple(note for _, note in placed)


def _fixed_tokens(system: list[ChatMessage], working_memory: str | None, tail: list[ChatMessage],
                  count: TokenCounter) -> int:
    wm = [ChatMessage("system", working_memory)] if working_memory else []
    return sum(message_tokens(m, count) for m in (*system, *wm, *tail))


def _window_start(history: list[Any], window: Window | None, budget: int) -> tuple[int, bool]:
    """(index of the first history message, whether the remembered window goes on): the remembered start while
    memory still returns it (the thread's start when it had no history yet); else everything the first time, or the
    newest half of memory's window once memory's window moved past the remembered start."""
    if budget <= 0:
        return 0, False
    if window is None:
        return 0, False
    if window.start is None:
        return 0, True
    ids = [message_field(m, "id") for m in history]
    if window.start in ids:
        return ids.index(window.start), True
    return _at_user_message(history, len(history) // 2), False  # memory's window slid past it: cut back to half


def _at_user_message(history: list[Any], start: int) -> int:
    """Move a cut forward to a user message, so the history never opens with half an exchange."""
    while start < len(history) and message_field(history[start], "role") != "user":
        start += 1
    return start


def _newest_within(history: list[Any], room: int, count: TokenCounter) -> list[Any]:
    """The newest messages that fit ``room`` tokens, starting at a user message."""
    total = 0
    start = len(history)
    while start > 0:
        total += _stored_tokens(history[start - 1], count)
        if total > room:
            break
        start -= 1
    return history[_at_user_message(history, start):]


def _stored_tokens(message: Any, count: TokenCounter) -> int:
    """A memory message's tokens in the prompt (its text, or a tool call's arguments)."""
    meta = message_field(message, "metadata", None) or {}
    args = meta.get("args") if isinstance(meta, dict) else None
    extra = count(json.dumps(args, ensure_ascii=False)) if isinstance(args, dict) else 0
    return MESSAGE_OVERHEAD_TOKENS + count(message_field(message, "content", "") or "") + extra


def _fit_recall(recalled: list[Any], room: int | None, count: TokenCounter
                ) -> tuple[list[ChatMessage], int, list[Any]]:
    """The recall system message for as many recalled messages as fit ``room`` (None: no limit), dropping the
    oldest first; how many lines it holds; and the messages shown."""
    usable = [m for m in recalled if (message_field(m, "type", "text") or "text") == "text"
              and (message_field(m, "content", "") or "").strip()]
    while usable:
        text = render_recall(usable)
        if text is None:
            break
        message = ChatMessage("system", text)
        if room is None or message_tokens(message, count) <= room:
            shown = len(text.split("\n")) - 1
            return [message], shown, usable[:shown]
        usable = usable[1:]
    return [], 0, []
