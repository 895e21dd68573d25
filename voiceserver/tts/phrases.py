"""Turn a stream of LLM text deltas into speakable phrases for text-to-speech (pure, no I/O).

:class:`PhraseChunker` receives text as the model produces it (``feed(delta)``) and returns phrases as soon as they
can be decided:

- a phrase ends at the end of a sentence (``. ! ? …`` followed by whitespace, closing quotes included) or a newline;
- the FIRST phrase of a reply is cut earlier, after a comma, semicolon, colon or dash once it has ``first_min_words``
  words (or at a space once it reaches ``first_max_chars``), so the first audio starts early;
- numbers (``3.14``, ``1,000``, ``$2.50``, ``10:30``, ``1990–2000``) and abbreviations (``Dr.``, ``Mr.``, ``e.g.``,
  ``U.S.``, ``etc.`` before a lower-case word) are never split;
- a sentence longer than ``max_chars`` is cut at its last comma or space before the limit;
- markdown symbols (``*``, ``#``, backticks, ``_``, bullet and numbered-list markers) and emoji are removed so they
  are not read aloud, and whitespace is collapsed to single spaces;
- a whitespace-only or punctuation-only phrase is never emitted.

Every decision depends only on the text seen so far, never on how it was split into deltas, so the same reply always
gives the same phrases. Joining the phrases with single spaces gives :func:`normalize_for_speech` of the whole input
(a trailing run with no letters or digits, such as a lone ``)``, is the only thing that may be dropped).
"""

from __future__ import annotations

import re

# Sentence terminators, and what may trail them inside the same phrase (closing quotes and brackets).
_TERMINATORS = ".!?…"
_CLOSERS = "\"'”’)]»"
_OPENERS = "\"'“‘([«¿¡"
# Early cut points for the first phrase.
_SOFT_BREAKS = ",;:"
_DASHES = "—–"
# Inline markdown characters that must not be spoken. "_" becomes a space (snake_case reads as two words).
_DROP_CHARS = frozenset("*`#")
# Emoji (a voice would read out their names): pictographs, symbols and dingbats, and the joiners and variation
# selectors that build emoji sequences. Text symbols such as the degree sign are kept.
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0E\uFE0F\u200D\u20E3]")
# Titles and Latin abbreviations that never end a sentence.
_NEVER_END = frozenset([
    "mr.", "mrs.", "ms.", "mx.", "dr.", "prof.", "st.", "mt.", "ft.", "rev.", "gen.", "sen.", "rep.", "gov.",
    "capt.", "col.", "lt.", "sgt.", "hon.", "pres.", "vs.", "e.g.", "i.e.", "cf.", "viz.", "approx.", "fig.",
    "dept.", "incl.", "ca.",
])
# Abbreviations that end a sentence only when the next word starts with a capital letter.
_MAYBE_END = frozenset(["etc.", "inc.", "ltd.", "co.", "corp.", "jr.", "sr.", "a.m.", "p.m.", "al.", "bros."])
_INITIALISM = re.compile(r"^(?:[A-Za-z]\.){2,}$")  # U.S., U.K., a.m.
_LIST_MARKER = re.compile(r"^(?:#{1,6}|[-*+•]|\d{1,3}[.)])[ \t]$")
_LIST_MARKER_PREFIX = re.compile(r"^(?:#{0,6}|[-*+•]|\d{1,3}[.)]?)$")


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _word_count(text: str) -> int:
    return sum(1 for word in text.split() if _speakable(word))


class _MarkdownStripper:
    """Streaming removal of markdown symbols; line-start markers (``- ``, ``## ``, ``1. ``) need a little lookahead."""

    def __init__(self) -> None:
        self._line_start = True
        self._head = ""  # characters held at the start of a line until we know whether they are a list marker

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if self._line_start and ch != "\n":
                self._head += ch
                head = self._head.lstrip(" \t")
                if not head:
                    continue
                if _LIST_MARKER.match(head):
                    self._head = ""
                    self._line_start = False
                    out.append(" ")
                    continue
                if _LIST_MARKER_PREFIX.match(head):
                    continue
                held, self._head = self._head, ""
                self._line_start = False
                out.extend(self._inline(c) for c in held)
                continue
            if ch == "\n":
                held, self._head = self._head, ""
                out.extend(self._inline(c) for c in held)
                self._line_start = True
                out.append("\n")
                continue
            out.append(self._inline(ch))
        return "".join(out)

    def flush(self) -> str:
        held, self._head = self._head, ""
        self._line_start = True
        return "".join(self._inline(c) for c in held)

    @staticmethod
    def _inline(ch: str) -> str:
        if ch in _DROP_CHARS or _EMOJI.match(ch):
            return ""
        if ch == "_" or ch == "\r" or ch == "\t":
            return " "
        return ch


def normalize_for_speech(text: str) -> str:
    """The text the chunker speaks for ``text``: markdown symbols removed, whitespace collapsed to single spaces."""
    stripper = _MarkdownStripper()
    cleaned = stripper.feed(text) + stripper.flush()
    return " ".join(cleaned.split())


class PhraseChunker:
    """Cuts streamed text into phrases for TTS. One instance per reply; :meth:`flush` ends the reply and resets.

    ``first_min_words``: words the first phrase needs before it may end at a comma, semicolon, colon or dash.
    ``first_max_chars``: the first phrase is cut at a space once it is this long without any punctuation.
    ``max_chars``: any phrase is cut (at a comma, else a space) once it reaches this length.
    """

    def __init__(self, first_min_words: int = 3, first_max_chars: int = 60, max_chars: int = 200):
        if first_min_words < 1:
            raise ValueError("first_min_words must be at least 1")
        if max_chars < 10 or first_max_chars < 10:
            raise ValueError("first_max_chars and max_chars must be at least 10")
        self.first_min_words = first_min_words
        self.first_max_chars = first_max_chars
        self.max_chars = max_chars
        self._stripper = _MarkdownStripper()
        self._buf = ""  # normalised pending text: single spaces, "\n" marks a line break
        self._first = True

    @property
    def pending(self) -> str:
        """Text received but not yet emitted as a phrase."""
        return " ".join(self._buf.split())

    def feed(self, delta: str) -> list[str]:
        """Add a text delta; return the phrases that are now complete (often none)."""
        self._append(self._stripper.feed(delta))
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the reply: return the remaining phrases and reset for the next reply."""
        self._append(self._stripper.flush())
        phrases = self._drain(final=True)
        rest = " ".join(self._buf.split())
        if _speakable(rest):
            phrases.append(rest)
        self._buf = ""
        self._first = True
        self._stripper = _MarkdownStripper()
        return phrases

    # --- internals ------------------------------------------------------------------------------------------------

    def _append(self, text: str) -> None:
        """Append with whitespace collapsed: a run of whitespace becomes "\\n" if it holds a newline, else " "."""
        buf = list(self._buf)
        for ch in text:
            if ch == "\n":
                if not buf:
                    continue
                if buf[-1] == " ":
                    buf[-1] = "\n"
                elif buf[-1] != "\n":
                    buf.append("\n")
            elif ch.isspace():
                if buf and buf[-1] not in " \n":
                    buf.append(" ")
            else:
                buf.append(ch)
        self._buf = "".join(buf)

    def _drain(self, final: bool) -> list[str]:
        phrases: list[str] = []
        while True:
            cut = self._find_cut(final)
            if cut is None:
                return phrases
            phrase = " ".join(self._buf[:cut].split())
            self._buf = self._buf[cut:].lstrip(" \n")
            # _find_cut only returns cuts whose phrase is speakable.
            phrases.append(phrase)
            self._first = False

    def _find_cut(self, final: bool) -> int | None:
        """Index to cut the buffer at, or None when no cut can be decided yet."""
        buf = self._buf
        n = len(buf)
        limit = self.max_chars
        i = 0
        while i < n:
            if i >= limit:
                cut = self._long_cut(limit)
                if cut is None:  # an unspeakable window was dropped: start again on what is left
                    return self._find_cut(final)
                return cut
            if self._first and i >= self.first_max_chars:
                cut = self._first_space_cut(i)
                if cut is not None:
                    return cut
            ch = buf[i]
            if ch == "\n":
                if _speakable(buf[:i]):
                    return i
                i += 1
                continue
            if ch in _TERMINATORS:
                end = i
                while end < n and (buf[end] in _TERMINATORS or buf[end] in _CLOSERS):
                    end += 1
                if end > limit + 1:
                    # A run of terminators reaching past the limit ("e.g.e.g..."): cut it as a long phrase. More text
                    # can only make the run longer, so this does not depend on how the text was split.
                    cut = self._long_cut(limit)
                    return self._find_cut(final) if cut is None else cut
                if end >= n:
                    return None  # cannot tell yet whether "3." is "3.14"
                if buf[end] not in " \n" or not _speakable(buf[:end]):
                    i = end
                    continue
                decision = self._sentence_ends(i, end, final)
                if decision is None:
                    return None
                if decision:
                    return end
                i = end
                continue
            if self._first and (ch in _SOFT_BREAKS or ch in _DASHES or ch == "-"):
                decision = self._soft_break(i, final)
                if decision is None:
                    return None
                if decision:
                    return i + 1
            i += 1
        return None

    def _sentence_ends(self, i: int, end: int, final: bool) -> bool | None:
        """Whether the terminator run buf[i:end] (followed by whitespace) ends a sentence; None: need more text."""
        buf = self._buf
        if buf[i] != "." or buf[i:end].startswith(".."):
            return True
        start = max(buf.rfind(" ", 0, i), buf.rfind("\n", 0, i)) + 1
        word = buf[start:i + 1].lstrip(_OPENERS)
        lower = word.lower()
        if lower in _NEVER_END or (len(word) == 2 and word[0].isalpha()):
            return False  # a title, "e.g.", or an initial such as the "F." in "John F. Kennedy"
        if lower in _MAYBE_END or _INITIALISM.match(word):
            k = end
            while k < len(buf) and buf[k] in " \n":
                k += 1
            if k >= len(buf):
                return True if final else None
            if buf[end] == "\n":
                return True
            nxt = buf[k:].lstrip(_OPENERS)[:1]
            if not nxt:
                return True if final else None
            return nxt.isupper()
        return True

    def _soft_break(self, i: int, final: bool) -> bool | None:
        """Whether the first phrase may end after the comma/colon/semicolon/dash at i; None: need more text."""
        buf = self._buf
        if not _speakable(buf[:i]) or _word_count(buf[:i]) < self.first_min_words:
            return False
        if i + 1 >= len(buf):
            return False if final else None
        prev, nxt = buf[i - 1] if i else " ", buf[i + 1]
        ch = buf[i]
        if ch in _SOFT_BREAKS:
            return nxt in " \n"  # "1,000" and "10:30" have a digit after the mark
        if ch == "-":
            return prev == " " and nxt in " \n"  # a spaced hyphen used as a dash, not "well-known" or "-5"
        return not (prev.isdigit() and nxt.isdigit())  # "1990–2000" is a range

    def _first_space_cut(self, i: int) -> int | None:
        """Cut an unpunctuated first phrase at its last space before i, if it has enough words."""
        buf = self._buf
        # A trailing " " may turn into "\n" when a newline follows; treat both alike so the cut never depends on
        # how the text was split into deltas.
        space = max(buf.rfind(" ", 0, i + 1), buf.rfind("\n", 0, i + 1))
        if space <= 0 or _word_count(buf[:space]) < self.first_min_words or not _speakable(buf[:space]):
            return None
        return space

    def _long_cut(self, limit: int) -> int | None:  # None: the window was dropped
        """Cut a phrase that reached max_chars: at the last comma-like break, else the last space, else hard."""
        buf = self._buf
        window = buf[:limit]
        best = -1
        for mark in (", ", "; ", ": ", "— ", "– ", " - "):
            pos = window.rfind(mark)
            if pos >= 0:
                best = max(best, pos + len(mark.rstrip()))
        if best >= limit // 3 and _speakable(buf[:best]):
            return best
        space = max(window.rfind(" "), window.rfind("\n"))
        if space > 0 and _speakable(buf[:space]):
            return space
        if _speakable(window):
            return limit
        # Nothing speakable in a whole window of symbols: drop it rather than grow without bound.
        self._buf = buf[limit:]
        return None


__all__ = ["PhraseChunker", "normalize_for_speech"]
