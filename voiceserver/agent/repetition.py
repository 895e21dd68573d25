"""The repetition guard: a reply that repeats an earlier reply of the conversation word for word is caught while it
streams, before the caller hears it.

Small models parrot: asked something new, they answer with their previous answer. The guard compares the words
streamed so far (normalised: lowercase, punctuation stripped) with the start of each earlier assistant reply in the
prompt. Text is held back only while it still matches the start of one of them; a normal reply diverges within a
word or two, so holding costs nothing. When the match reaches ``prefix_words`` words, or a whole earlier reply of at
least ``min_words`` words, the attempt is a repeat: the run discards it and generates once more with a nudge (see
:data:`NUDGE`) and freer sampling, up to twice. Each retry is guarded too, against the nudge itself as well, which
a small model may read back as its answer. When every attempt repeats, a short fallback that repeats nothing is
said instead and the turn logs ``reply_repeated`` (agent/run_model.py).

An echo of the caller's own message counts too ("My favourite colour is blue." answered with "My favorite color is
blue."): small models do it to statements, and then give the echo again as the answer to a later question.

Only replies to other questions count. Asked the same thing again (the name, in a later call), the same answer is
right, and regenerating it would cost the caller a second prompt read: :func:`replies_to_other_questions` leaves
out the replies that answered the question being asked now.

After the start, :class:`~voiceserver.agent.copy_watch.CopiedRunWatch` takes over: a reply that starts anew and
then copies a long run of an earlier reply ends before the copy (``cut``).

Pure and incremental: ``feed(text)`` returns the text that is safe to emit now, ``finish()`` the rest at the end.
"""

from __future__ import annotations

from .copy_watch import CopiedRunWatch, normalise_word

REPEAT_PREFIX_WORDS = 6  # this many matching words at the start of a reply make it a repeat
REPEAT_MIN_WORDS = 3  # a whole earlier reply repeated counts only when it has at least this many words
NUDGE = "Do not repeat your earlier answer or the user's words; answer the new message in your own words."


def normalise_words(text: str) -> list[str]:
    """Lowercase words with punctuation stripped ("Hello, Ada!" -> ["hello", "ada"])."""
    return [w for w in map(normalise_word, text.split()) if w]


def same_question(a: str | None, b: str | None) -> bool:
    """Whether two questions are the same once normalised ("What's my name?" and "what is my name" are, and so
    are two that differ only in their articles, which speech-to-text often mishears)."""
    if not a or not b:
        return False
    return _question_words(a) == _question_words(b)


_ARTICLES = frozenset({"a", "an", "the"})  # speech-to-text swaps them ("Tell me the short story about a robot.")


def _question_words(text: str) -> list[str]:
    words = normalise_words(text.replace("'s ", " is ").replace("’s ", " is "))
    return [w for w in words if w not in _ARTICLES]


def replies_to_other_questions(pairs: list[tuple[str | None, str]], question: str | None) -> list[str]:
    """The replies of ``(question, reply)`` pairs, except those that answered ``question`` itself."""
    return [reply for asked, reply in pairs if not same_question(asked, question)]


def is_repeat(text: str, earlier: list[str], *, prefix_words: int = REPEAT_PREFIX_WORDS,
              min_words: int = REPEAT_MIN_WORDS) -> bool:
    """Whether a whole reply repeats one of ``earlier`` (the same rule the streaming guard applies)."""
    guard = RepetitionGuard(earlier, prefix_words=prefix_words, min_words=min_words)
    guard.feed(text)
    guard.finish()
    return guard.repeated


class RepetitionGuard:
    """Holds back streamed text while it matches the start of an earlier reply; see the module notes."""

    def __init__(self, earlier: list[str], *, copy_from: list[str] | None = None,
                 prefix_words: int = REPEAT_PREFIX_WORDS, min_words: int = REPEAT_MIN_WORDS):
        """``earlier``: the texts a reply may not start with; ``copy_from``: those the rest of it may not copy a
        long run of (default: ``earlier``)."""
        if prefix_words < 1 or min_words < 1:
            raise ValueError("prefix_words and min_words must be at least 1")
        self.prefix_words = prefix_words
        self.min_words = min_words
        self._earlier = [w for w in (normalise_words(t) for t in earlier) if w]
        self._held = ""
        self._watching = bool(self._earlier)
        self.repeated = False
        self.matched: list[str] | None = None  # the earlier reply's words, when repeated
        self.caught: list[str] = []  # and the words of this reply that repeated them
        copied = self._earlier if copy_from is None else [w for w in map(normalise_words, copy_from) if w]
        self._copy = CopiedRunWatch(copied)  # after the start: a long run copied from an earlier reply

    @property
    def cut(self) -> bool:
        """The reply went on to copy a long run of an earlier one: it ends before the copy (agent.copy_watch)."""
        return self._copy.cut

    @property
    def copied(self) -> list[str]:
        return self._copy.copied

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; return what may be emitted now ("" while held or after a repeat)."""
        if self.repeated:
            return ""
        if not self._watching:
            return self._copy.feed(text)
        self._held += text
        return self._check(final=False)

    def release(self) -> str:
        """Stop guarding this reply (it is not a parroted answer, e.g. it calls tools); return what was held."""
        self._watching = False
        out, self._held = ("" if self.repeated else self._held), ""
        return out + self._copy.release()

    def finish(self) -> str:
        """The stream ended: decide on what is still held; return it unless it is a repeat."""
        if self.repeated:
            return ""
        if not self._watching:
            return self._copy.finish()
        return self._check(final=True) + self._copy.finish()

    def _check(self, *, final: bool) -> str:
        tokens = self._held.split()
        complete = tokens if final or self._held[-1:].isspace() else tokens[:-1]
        partial = "" if final or self._held[-1:].isspace() or not tokens else tokens[-1]
        done = [w for w in map(normalise_word, complete) if w]
        tail = normalise_word(partial)
        alive = False
        for words in self._earlier:
            if words[: len(done)] != done:
                continue
            if len(done) >= self.prefix_words or (len(done) >= len(words) >= self.min_words):
                self.repeated = True
                self.matched = words
                self.caught = done
                self._held = ""
                return ""
            if len(done) < len(words) and (not tail or words[len(done)].startswith(tail)):
                alive = True  # the next word may still match
        if alive and not final:
            return ""
        self._watching = False  # diverged from the start of every earlier reply: the copy watch takes over
        out, self._held = self._held, ""
        return self._copy.feed(out)
