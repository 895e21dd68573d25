"""PhraseChunker: examples for each rule, and properties over arbitrary text and delta splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceserver.tts.phrases import PhraseChunker, normalize_for_speech


def chunk(text: str, step: int | None = None, **kwargs) -> list[str]:
    """Feed ``text`` whole, or in ``step``-character deltas, then flush."""
    chunker = PhraseChunker(**kwargs)
    out: list[str] = []
    if step is None:
        out += chunker.feed(text)
    else:
        for start in range(0, len(text), step):
            out += chunker.feed(text[start:start + step])
    return out + chunker.flush()


def test_cuts_at_sentence_ends():
    assert chunk("Sure, I can help with that. The weather is mild today! Anything else?") == [
        "Sure, I can help with that.", "The weather is mild today!", "Anything else?",
    ]


def test_first_phrase_is_cut_early_at_a_comma_after_enough_words():
    text = "Well, the weather in London, as of this morning, is mild. Later, it rains, a lot."
    assert chunk(text) == [
        "Well, the weather in London,", "as of this morning, is mild.", "Later, it rains, a lot.",
    ]


@pytest.mark.parametrize("mark", [";", ":", " —", " -", "—", "–"])
def test_first_phrase_early_cut_on_other_marks(mark):
    phrases = chunk(f"The forecast for today{mark} sunny skies and warm air.")
    assert phrases[0] == f"The forecast for today{mark}"
    assert len(phrases) == 2


def test_first_phrase_without_punctuation_is_cut_at_a_space():
    words = " ".join(f"word{i}" for i in range(30))
    phrases = chunk(words + ".", first_max_chars=40)
    assert len(phrases[0]) <= 40
    assert phrases[0].endswith(("word5", "word6"))
    assert " ".join(phrases) == words + "."


def test_only_the_first_phrase_is_cut_early():
    phrases = chunk("It is sunny. Tomorrow, however, it rains, then it snows.")
    assert phrases == ["It is sunny.", "Tomorrow, however, it rains, then it snows."]


@pytest.mark.parametrize("text,number", [
    ("The value of pi is 3.14 roughly, which is fine.", "3.14"),
    ("We sold 1,000 units, more than last year.", "1,000"),
    ("A coffee costs $2.50 at the station today.", "$2.50"),
    ("The meeting is at 10:30 tomorrow morning, sharp.", "10:30"),
    ("He lived there from 1961–1963 in the same house.", "1961–1963"),
    ("Version 2.0.1 of the app is out.", "2.0.1"),
])
@pytest.mark.parametrize("step", [None, 1, 3])
def test_numbers_are_never_split(text, number, step):
    phrases = chunk(text, step=step, first_min_words=1)
    assert sum(number in phrase for phrase in phrases) == 1, phrases
    assert " ".join(phrases) == text


@pytest.mark.parametrize("text,expected", [
    ("Dr. Smith will see you now. Mr. Jones is out.", ["Dr. Smith will see you now.", "Mr. Jones is out."]),
    ("Bring fruit, e.g. apples or pears. Then go.", ["Bring fruit, e.g. apples or pears.", "Then go."]),
    ("We live in the U.S. and like it here. Yes.", ["We live in the U.S. and like it here.", "Yes."]),
    ("Apples, pears, etc. are fruit. Okay.", ["Apples, pears, etc. are fruit.", "Okay."]),
    ("I like apples and pears etc. Then I eat them.", ["I like apples and pears etc.", "Then I eat them."]),
    ("John F. Kennedy spoke at 10 a.m. today.", ["John F. Kennedy spoke at 10 a.m. today."]),
])
def test_abbreviations_are_not_split(text, expected):
    assert chunk(text) == expected


def test_long_sentence_is_cut_at_a_comma_before_max_chars():
    text = ("This sentence keeps going for a long time without ending, because the model likes long answers "
            "and never stops to breathe at all until it reaches the very end of its thought.")
    phrases = chunk(text, max_chars=80, first_max_chars=80, first_min_words=50)
    assert all(len(p) <= 80 for p in phrases)
    assert phrases[0].endswith("ending,")
    assert " ".join(phrases) == text


def test_long_sentence_without_commas_is_cut_at_a_space():
    text = " ".join(["blah"] * 100) + "."
    phrases = chunk(text, max_chars=50, first_max_chars=50, first_min_words=100)
    assert all(len(p) <= 50 for p in phrases)
    assert all(not p.startswith(" ") and "bla " not in p for p in phrases)
    assert " ".join(phrases) == text


def test_markdown_is_not_read_aloud():
    text = "## Steps\n**First**, mix the `flour`.\n- Bake it\n* Cool it\n1. Serve it\n2) Eat it"
    phrases = chunk(text)
    assert phrases == ["Steps", "First, mix the flour.", "Bake it", "Cool it", "Serve it", "Eat it"]
    assert not any(c in "".join(phrases) for c in "*#`")


def test_emoji_are_not_read_aloud_but_symbols_are_kept():
    assert chunk("Sunny and 25°C today ☀️😀 enjoy 👍🏽!") == ["Sunny and 25°C today enjoy !"]


def test_snake_case_and_hash_mid_text():
    assert chunk("Call get_weather for issue #3 now.") == ["Call get weather for issue 3 now."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "...", "!!! ??", "**", "- \n- \n", "( ) - —"])
def test_whitespace_or_punctuation_only_gives_nothing(text):
    assert chunk(text) == []


def test_punctuation_only_pieces_stick_to_speakable_text():
    phrases = chunk("Hello!!! ... How are you? )")
    assert phrases == ["Hello!!!", "... How are you?"]


def test_a_long_run_of_symbols_is_dropped_not_buffered_forever():
    chunker = PhraseChunker(max_chars=20)
    assert chunker.feed("Hi. " + "-=" * 200) == ["Hi."]
    assert len(chunker.pending) <= 20
    assert chunker.flush() == []


def test_quotes_close_inside_the_phrase():
    assert chunk('He said "Go home." Then he left.') == ['He said "Go home."', "Then he left."]


def test_phrases_come_out_while_streaming():
    chunker = PhraseChunker()
    assert chunker.feed("Hello there") == []
    assert chunker.feed(". How") == ["Hello there."]
    assert chunker.pending == "How"
    assert chunker.feed(" are you?") == []  # "?" at the very end: wait for the next character
    assert chunker.feed(" Fine") == ["How are you?"]
    assert chunker.flush() == ["Fine"]


def test_flush_resets_for_the_next_reply():
    chunker = PhraseChunker()
    chunker.feed("One two three, four five. Six")
    assert chunker.flush() == ["Six"]
    # The first-phrase early cut applies again after a flush.
    assert chunker.feed("Again one two, three. ") == ["Again one two,", "three."]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        PhraseChunker(first_min_words=0)
    with pytest.raises(ValueError):
        PhraseChunker(max_chars=5)


# --- properties ----------------------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(
    list("abcdeXYZ019 ") + [" ", " ", " ", ".", ",", "!", "?", ":", ";", "-", "—", "\n", "*", "#", "`", "_", "$",
                             "\"", "(", ")", "…", "\t"]
)
_WORDS = st.sampled_from(
    ["Dr.", "e.g.", "U.S.", "etc.", "3.14", "1,000", "$2.50", "10:30", "Hello.", "ok", "the", "Mr.", "a.m.", "- ",
     "\n1. ", "## ", "**bold**", "word,", "end!", "why?", "F.", "1990–2000", " ", "\n"]
)
_TEXT = st.lists(st.one_of(_ALPHABET, _WORDS), max_size=120).map("".join)


def _splits(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(text[last:p])
        last = p
    pieces.append(text[last:])
    return pieces


def _check_concatenation(phrases: list[str], text: str) -> None:
    """The phrases, in order, are the normalised text (cut at spaces, or inside an over-long word)."""
    normal = normalize_for_speech(text)
    pos = 0
    for phrase in phrases:
        found = normal.find(phrase, pos)
        assert found >= 0, (phrases, normal)
        # Only a window of max_chars symbols with no letter or digit at all may be skipped.
        assert not any(ch.isalnum() for ch in normal[pos:found]), (phrases, normal)
        pos = found + len(phrase)
        if normal[pos:pos + 1] == " ":
            pos += 1
    # Only a trailing run with no letters or digits may be dropped.
    assert not any(ch.isalnum() for ch in normal[pos:]), (phrases, normal)


@settings(max_examples=400, deadline=None)
@given(_TEXT, st.lists(st.integers(min_value=0, max_value=1000), max_size=30),
       st.integers(min_value=1, max_value=5), st.integers(min_value=10, max_value=80),
       st.integers(min_value=10, max_value=120))
def test_property_chunks_rebuild_the_text_whatever_the_deltas(text, cuts, min_words, first_max, max_chars):
    kwargs = dict(first_min_words=min_words, first_max_chars=first_max, max_chars=max_chars)
    whole = chunk(text, **kwargs)
    chunker = PhraseChunker(**kwargs)
    streamed: list[str] = []
    for piece in _splits(text, cuts):
        streamed += chunker.feed(piece)
    streamed += chunker.flush()
    # The same phrases however the text was split into deltas.
    assert streamed == whole
    for phrase in whole:
        assert phrase == phrase.strip() and phrase
        assert any(ch.isalnum() for ch in phrase)  # never whitespace- or punctuation-only
        assert not any(ch in phrase for ch in "*#`\n\t")
        # A forced cut may end one character past the limit (a comma kept with its phrase).
        assert len(phrase) <= max_chars + 1
    _check_concatenation(whole, text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_property_any_unicode_text(text):
    phrases = chunk(text, step=7)
    assert phrases == chunk(text)
    assert all(any(ch.isalnum() for ch in p) for p in phrases)
    _check_concatenation(phrases, text)


def test_regression_trailing_space_that_becomes_a_newline():
    """Found by hypothesis: a space later collapsed into a newline must not move the first-phrase cut."""
    text = "\n1. aaaa- **bold** \n1. aa"
    kwargs = dict(first_min_words=1, first_max_chars=10, max_chars=11)
    by_char = PhraseChunker(**kwargs)
    streamed = [p for ch in text for p in by_char.feed(ch)] + by_char.flush()
    assert streamed == chunk(text, **kwargs) == ["aaaa- bold", "aa"]


def test_regression_a_terminator_run_past_the_limit_is_cut():
    """Found by hypothesis: "aae.g.e.g..." with max_chars 10 came out as one 12-character phrase."""
    for step in (1, 3, 100):
        phrases = chunk("aae.g.e.g...", step=step, max_chars=10)
        # The trailing ".." has no letters: the one thing the chunker may drop.
        assert phrases == ["aae.g.e.g."]
