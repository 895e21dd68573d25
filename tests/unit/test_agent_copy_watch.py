"""The copy watch of the repetition guard: a reply that starts anew and then copies a long run of an earlier reply
ends before the copy; common short runs are held a word or two and let go whole; the first sentence is never held."""

from __future__ import annotations

import re

import pytest
from test_agent_support import FakeMemory, streamed_run

from voiceserver.agent import Agent
from voiceserver.agent.copy_watch import COPIED_RUN_WORDS, CopiedRunWatch
from voiceserver.agent.repetition import RepetitionGuard, normalise_words
from voiceserver.testing.fake_llm import ScriptedChatModel

MEM = {"resource": "user-1", "thread": "t1"}
EARLIER = "I love blue! It's the perfect color for a day of work or a romantic scene."
COPYING = "My favorite color is blue. It's the perfect color for a day of work or a romantic scene."


def llama_pieces(text: str) -> list[str]:
    """Tokens as llama.cpp streams them: the space before the word."""
    return re.findall(r"\s*\S+", text)


def trailing_pieces(text: str) -> list[str]:
    """Tokens as the scripted model streams them: the space after the word."""
    return re.findall(r"\S+\s*", text)


def run(watch: CopiedRunWatch | RepetitionGuard, pieces: list[str]) -> str:
    return "".join(watch.feed(p) for p in pieces) + watch.finish()


@pytest.mark.parametrize("split", [llama_pieces, trailing_pieces])
def test_a_second_sentence_copied_from_an_earlier_reply_is_cut_and_the_first_sentence_said(split):
    guard = RepetitionGuard([EARLIER])
    out = run(guard, split(COPYING))
    assert out.strip() == "My favorite color is blue."
    assert guard.cut and not guard.repeated
    assert guard.copied[:3] == ["its", "the", "perfect"] and len(guard.copied) == COPIED_RUN_WORDS


@pytest.mark.parametrize("split", [llama_pieces, trailing_pieces])
def test_a_reply_that_shares_only_short_runs_is_let_through_unchanged(split):
    reply = "Blue is calm. It's the colour of the sea, and the perfect colour for a day at the beach."
    guard = RepetitionGuard([EARLIER])
    assert run(guard, split(reply)) == reply and not guard.cut


def test_held_words_are_let_go_as_soon_as_the_run_breaks():
    watch = CopiedRunWatch([normalise_words(EARLIER)])
    assert watch.feed("Sure. ") == "Sure. "  # the first sentence passes, untouched
    assert watch.feed("It's ") == "" and watch.feed("the ") == ""  # a run of an earlier reply: held
    assert watch.feed("sea ") == "It's the sea "  # broken: let go whole
    assert watch.finish() == ""


def test_the_first_sentence_is_never_held_even_when_it_copies():
    watch = CopiedRunWatch([normalise_words(EARLIER)])
    first = "It's the perfect color for a day of work or a romantic scene"
    assert watch.feed(first) == first and not watch.cut


def test_a_copy_that_starts_mid_sentence_keeps_the_new_words_before_it():
    guard = RepetitionGuard([EARLIER])
    out = run(guard, llama_pieces("Blue it is. And honestly it's the perfect color for a day of work, I think."))
    assert out == "Blue it is. And honestly " and guard.cut


def test_a_run_at_the_very_end_of_a_reply_is_judged_at_finish():
    earlier = [normalise_words("one two three four five six seven eight nine")]
    watch = CopiedRunWatch(earlier, run_words=3)
    assert run(watch, ["Hi. ", "one ", "two ", "three"]) == "Hi. " and watch.cut
    watch = CopiedRunWatch(earlier, run_words=4)
    assert run(watch, ["Hi. ", "one ", "two ", "three"]) == "Hi. one two three" and not watch.cut


def test_release_lets_go_of_a_held_run():
    watch = CopiedRunWatch([normalise_words(EARLIER)])
    watch.feed("Okay. It's the ")
    assert watch.release() == "It's the " and watch.feed("perfect color") == "perfect color"
    with pytest.raises(ValueError):
        CopiedRunWatch([], run_words=1)


async def test_in_an_agent_run_the_copy_is_not_streamed_nor_stored():
    memory = FakeMemory()
    model = ScriptedChatModel([EARLIER, COPYING])
    agent = Agent(name="A", model=model, memory=memory)
    await agent.generate("My favourite colour is blue.", memory=MEM)
    streamed, result, _ = await streamed_run(agent, "What is my favourite colour?", memory=MEM)
    assert streamed.strip() == result.text.strip() == "My favorite color is blue."
    assert memory.thread("t1")[-1]["content"].strip() == "My favorite color is blue."
    assert model.calls == 2  # cut, not generated again
    assert result.finish_reason == "stop" and result.usage.completion_tokens > 0


async def test_a_later_sentence_that_restates_the_question_is_not_cut():
    question = "Tell me a short story about a robot who learns to paint the sky."
    reply = "Sure. Here is a short story about a robot who learns to paint the sky: Bolt mixed blue and gold."
    model = ScriptedChatModel([reply])
    agent = Agent(name="A", model=model)
    result = await agent.generate(question)
    assert result.text == reply and model.calls == 1
