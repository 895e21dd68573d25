"""The second half of the repetition guard: a reply that starts anew and then copies a long run of an earlier one.

Small models do it to facts the caller gave: "I love blue! It's the perfect colour for a day of work or a romantic
scene." is said once, and later "My favourite colour is blue. It's the perfect colour for a day of work or a
romantic scene." The start is new, so the prefix rule of :class:`~voiceserver.agent.repetition.RepetitionGuard`
lets it through, and the caller hears the old sentence again.

Once the reply's first sentence has been released, :class:`CopiedRunWatch` holds back the words that continue a run
of words found in an earlier reply, and lets them go as soon as the run breaks. Common runs ("it is the") break
within a word or two, and the reply is by then well ahead of the speech, so holding costs the caller nothing. When a
run reaches ``run_words`` words, the reply is cut there: the held copy is dropped and the reply ends (``cut``).
What the caller heard before it was new, and one sentence already said it; a second generation would cost a whole
prompt read for a tail the caller does not need.

The first sentence is left to the prefix rule: holding it on every common word would delay the first audio.

Pure and incremental, like the guard: ``feed(text)`` returns what may be emitted now, ``finish()`` the rest.
"""

from __future__ import annotations

import re

COPIED_RUN_WORDS = 8  # a run of this many words copied from an earlier reply ends the reply

_PUNCTUATION = re.compile(r"[^\w]+")


def normalise_word(token: str) -> str:
    """A token as the guard compares it: lowercase, punctuation stripped ("Blue," -> "blue"; "--" -> "")."""
    return _PUNCTUATION.sub("", token.lower())

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")
_COMPLETE_TOKEN = re.compile(r"\s*\S+\s+")  # a word and the space after it: the next token has begun


class CopiedRunWatch:
    """Holds back a run of words copied from ``earlier`` (normalised word lists); see the module notes."""

    def __init__(self, earlier: list[list[str]], *, run_words: int = COPIED_RUN_WORDS):
        if run_words < 2:
            raise ValueError("run_words must be at least 2")
        self.run_words = run_words
        self._earlier = earlier
        self._index: dict[str, list[tuple[int, int]]] | None = None  # word -> (reply, position), built on demand
        self._watching = False  # from the end of the first sentence on
        self._last_char = ""
        self._pending = ""  # text after the last complete token
        self._held: list[tuple[str, str]] = []  # (raw token, its word or "") of the current run
        self._run = 0  # words in the current run
        self._ends: list[tuple[int, int]] = []  # where the current run ends in each earlier reply it matches
        self.cut = False
        self.copied: list[str] = []  # the run's words, when cut

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; return what may be emitted now."""
        if self.cut or not self._earlier:
            return "" if self.cut else text
        if not self._watching:
            start = 0 if self._last_char in ".!?" and text[:1].isspace() else None
            if start is None:
                end = _SENTENCE_END.search(text)
                start = end.end() if end else None
            if start is None:
                self._last_char = text[-1:] or self._last_char
                return text
            self._watching = True
            return text[:start] + self._watch(text[start:])
        return self._watch(text)

    def finish(self) -> str:
        """The reply ended: what is still held goes out, unless its last word completes a copied run."""
        if self.cut or not self._watching:
            return ""
        out = ""
        if self._pending.strip():  # the last word had no space after it yet
            out, self._pending = self._token(self._pending), ""
        if self.cut:
            return out
        out += "".join(raw for raw, _ in self._held) + self._pending
        self._held, self._pending = [], ""
        return out

    def release(self) -> str:
        """Stop watching (the step calls tools); return what was held."""
        out = "" if self.cut else "".join(raw for raw, _ in self._held) + self._pending
        self._earlier, self._held, self._pending = [], [], ""
        return out

    def _watch(self, text: str) -> str:
        self._pending += text
        out: list[str] = []
        consumed = 0
        for match in _COMPLETE_TOKEN.finditer(self._pending):
            if match.start() != consumed:
                break
            consumed = match.end()
            out.append(self._token(match.group()))
            if self.cut:
                self._pending = ""
                return "".join(out)
        self._pending = self._pending[consumed:]
        return "".join(out)

    def _token(self, raw: str) -> str:
        """One complete token: returns what it lets go (earlier held tokens, and itself unless it is held)."""
        word = normalise_word(raw)
        if not word:  # punctuation on its own: it goes with the run it is in
            if self._held:
                self._held.append((raw, ""))
                return ""
            return raw
        ends = [(i, j + 1) for i, j in self._ends if j + 1 < len(self._earlier[i]) and self._earlier[i][j + 1] == word]
        if self._run and ends:
            self._held.append((raw, word))
            self._run += 1
            self._ends = ends
            released = ""
        else:
            released = self._restart(raw, word)
        if self._run >= self.run_words:
            self.cut = True
            self.copied = [w for _, w in self._held if w]
            self._held = []
        return released

    def _restart(self, raw: str, word: str) -> str:
        """The run broke at ``word``: keep the longest end of it (``word`` included) still found in an earlier
        reply, and let go of the tokens before it."""
        words = [w for _, w in self._held if w] + [word]
        for skip in range(len(words)):
            tail = words[skip:]
            ends = self._find(tail)
            if ends:
                break
        else:  # not even the word itself is in an earlier reply
            out = "".join(r for r, _ in self._held) + raw
            self._held, self._run, self._ends = [], 0, []
            return out
        entries = [*self._held, (raw, word)]
        cut_at = [k for k, (_, w) in enumerate(entries) if w][skip]  # the token where the kept tail starts
        out = "".join(r for r, _ in entries[:cut_at])
        self._held, self._run, self._ends = entries[cut_at:], len(tail), ends
        return out

    def _find(self, words: list[str]) -> list[tuple[int, int]]:
        """Where ``words`` occur contiguously in the earlier replies, as (reply, position of the last word)."""
        if self._index is None:
            self._index = {}
            for i, reply in enumerate(self._earlier):
                for j, w in enumerate(reply):
                    self._index.setdefault(w, []).append((i, j))
        n = len(words)
        return [(i, j + n - 1) for i, j in self._index.get(words[0], ())
                if self._earlier[i][j:j + n] == words]
