"""The repetition guard: on values (hold back while matching, release on divergence, catch a repeat), and in an agent
run with a scripted model that repeats its previous reply: the repeat is caught, the second reply is what streams and
what memory stores."""

from __future__ import annotations

import logging

import pytest
from test_agent_support import FakeMemory, streamed_run

from voiceserver.agent import Agent
from voiceserver.agent.repetition import (
    NUDGE,
    RepetitionGuard,
    is_repeat,
    normalise_words,
    replies_to_other_questions,
    same_question,
)
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

MEM = {"resource": "user-1", "thread": "t1"}
WEATHER = "London today is forecasted to be sunny with a light breeze."


def feed_all(guard: RepetitionGuard, pieces: list[str]) -> str:
    out = "".join(guard.feed(p) for p in pieces)
    return out + guard.finish()


def test_normalised_words_ignore_case_and_punctuation():
    assert normalise_words("London, today -- is: SUNNY!") == ["london", "today", "is", "sunny"]


def test_a_diverging_reply_is_held_only_while_it_matches_and_then_released_whole():
    guard = RepetitionGuard([WEATHER])
    assert guard.feed("Lon") == "" and guard.feed("don ") == ""  # still the start of the earlier reply
    assert guard.feed("is the capital") == "London is the capital"  # diverged: released, and not held again
    assert guard.feed(" of England.") == " of England." and guard.finish() == "" and not guard.repeated


def test_a_reply_with_another_first_word_is_never_held():
    guard = RepetitionGuard([WEATHER])
    assert guard.feed("Paris ") == "Paris " and not guard.holding


def test_six_matching_words_are_a_repeat_and_nothing_of_it_is_released():
    guard = RepetitionGuard([WEATHER])
    pieces = ["london ", "today ", "IS ", "forecasted, ", "to ", "be ", "rainy."]
    assert feed_all(guard, pieces) == "" and guard.repeated
    assert guard.matched == normalise_words(WEATHER)


def test_a_whole_short_earlier_reply_repeated_is_caught_but_a_one_word_answer_is_not():
    assert is_repeat("Nice to meet you!", ["Nice to meet you."])
    assert not is_repeat("Yes.", ["Yes."])  # a yes/no answer may well be the same word
    assert not is_repeat("Nice to meet", ["Nice to meet you."])  # a shorter reply that stops early is released
    guard = RepetitionGuard(["Nice to meet you."])
    assert feed_all(guard, ["Nice to ", "meet"]) == "Nice to meet" and not guard.repeated


def test_release_stops_guarding_and_returns_the_held_text():
    guard = RepetitionGuard([WEATHER])
    assert guard.feed("London today ") == ""
    assert guard.release() == "London today " and guard.feed("is") == "is"


def test_no_earlier_replies_means_no_holding():
    guard = RepetitionGuard([])
    assert guard.feed("London today is") == "London today is"
    with pytest.raises(ValueError):
        RepetitionGuard([], prefix_words=0)


async def test_a_model_that_repeats_its_previous_reply_is_caught_and_the_second_reply_streams_and_is_stored():
    memory = FakeMemory()
    model = ScriptedChatModel([WEATHER, WEATHER, "Your favourite colour is blue."])
    agent = Agent(name="A", model=model, memory=memory)
    await agent.generate("What's the weather in London?", memory=MEM)
    streamed, result, chunks = await streamed_run(agent, "What is my favourite colour?", memory=MEM)
    assert streamed == result.text == "Your favourite colour is blue."
    assert [c.type for c in chunks].count("text-start") == 1
    assert memory.thread("t1")[-1]["content"] == "Your favourite colour is blue."
    assert model.calls == 3
    retry = model.requests[2]
    assert retry.messages[-1].content == NUDGE and retry.temperature >= 0.8
    assert model.requests[1].messages[-1].content == "What is my favourite colour?"
    # The discarded attempt was stopped before the model's final usage, so the usage is the second attempt's.
    assert result.usage.completion_tokens == len(result.text.split())


async def test_a_model_that_always_repeats_gets_two_guarded_retries_then_a_fallback_that_repeats_nothing(caplog):
    memory = FakeMemory()
    model = ScriptedChatModel([WEATHER])  # always the same answer
    agent = Agent(name="A", model=model, memory=memory)
    await agent.generate("Weather?", memory=MEM)
    with caplog.at_level(logging.INFO, logger="voiceserver.agent"):
        stream = agent.stream("My name is Ada.", memory=MEM)
        chunks = [c async for c in stream]
        result = await stream.result()
    # The first reply, then three attempts for the second turn: the first and two retries, all caught.
    assert model.calls == 4
    assert [r.temperature for r in model.requests[2:]] == [0.8, 1.0]
    streamed = "".join(c.payload["text"] for c in chunks if c.type == "text-delta")
    assert streamed == result.text == "Okay, got it."  # a statement gets an acknowledgement
    assert memory.thread("t1")[-1]["content"] == "Okay, got it."
    codes = [getattr(r, "fields", {}).get("code") for r in caplog.records]
    assert codes.count("reply_repeat_caught") == 2 and "reply_repeated" in codes
    # Asked a question next, and parroting again: the fallback answers it, and repeats no earlier reply either.
    result = await agent.generate("What is my name?", memory=MEM)
    assert result.text == "I'm not sure about that."


def test_the_fallback_never_repeats_an_earlier_reply():
    from voiceserver.agent.run_model import fallback_reply
    from voiceserver.llm.base import ChatMessage

    asked = [ChatMessage("user", "Is it far?")]
    assert fallback_reply(asked, []) == "I'm not sure about that."
    assert fallback_reply(asked, ["I'm not sure about that."]) == "Sorry, I don't know that one."
    both = ["I'm not sure about that.", "Sorry, I don't know that one."]
    assert fallback_reply(asked, both) == "Hmm."
    assert fallback_reply([ChatMessage("user", "Thanks.")], ["Okay, got it."]) == "Understood."
    # A request written without a question mark is answered like a question, not acknowledged.
    assert fallback_reply([ChatMessage("user", "Tell me the short story about a robot.")], []) == \
        "I'm not sure about that."
    assert fallback_reply([ChatMessage("user", "My favourite colour is blue.")], []) == "Okay, got it."


async def test_the_guard_leaves_tool_steps_and_structured_output_alone():
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str

    same = '{"text": "London today is forecasted to be sunny"}'
    model = ScriptedChatModel([same, same])
    agent = Agent(name="A", model=model)
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": same},
               {"role": "user", "content": "q"}]
    result = await agent.generate(history, structured_output={"schema": Answer})
    assert result.object.text.startswith("London") and model.calls == 1


async def test_without_memory_the_earlier_replies_come_from_the_input_history():
    model = ScriptedChatModel([WEATHER, "Paris is the capital of France."])
    agent = Agent(name="A", model=model)
    result = await agent.generate([{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": WEATHER},
                                   {"role": "user", "content": "Capital of France?"}])
    assert result.text == "Paris is the capital of France." and model.calls == 2


async def test_a_cancelled_held_reply_sends_nothing():
    model = ScriptedChatModel([Reply(text=WEATHER, chunk_delay_s=0.01)])
    agent = Agent(name="A", model=model)
    history = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": WEATHER},
               {"role": "user", "content": "Again?"}]
    stream = agent.stream(history)
    seen = []
    async for chunk in stream:
        seen.append(chunk.type)
        if chunk.type == "step-start":
            await stream.cancel()
    assert "text-delta" not in seen and seen[-1] == "abort" and model.cancelled == 1


async def test_a_reply_recalled_from_an_earlier_call_is_guarded_too():
    memory = FakeMemory()  # recalls messages of other threads that share a word with the question
    memory.messages.append({"id": "old", "role": "assistant", "content": "Cela est un dessin de l'amour, mon ami.",
                            "type": "text", "thread_id": "t0", "resource_id": "user-1", "metadata": {}})
    model = ScriptedChatModel(["Cela est un dessin de l'amour, mon ami.", "Your favourite colour is blue."])
    agent = Agent(name="A", model=model, memory=memory)
    result = await agent.generate("What is my favourite colour, mon ami?", memory=MEM)
    recall = model.requests[0].messages[-2]
    assert recall.role == "system" and "- assistant: Cela est un dessin" in recall.content  # in the prompt, recalled
    assert result.text == "Your favourite colour is blue." and model.calls == 2


def test_only_replies_to_other_questions_count():
    pairs = [("What's my name?", "Your name is Ada."), ("Weather?", WEATHER), (None, "Hello there, friend.")]
    assert same_question("What's my name?", "what is my name") and not same_question("What is my name?", None)
    assert same_question("Tell me the short story about a robot.", "Tell me a short story about a robot.")
    assert not same_question("Tell me a short story about a robot.", "Tell me a short story about a dragon.")
    assert replies_to_other_questions(pairs, "What is my name?") == [WEATHER, "Hello there, friend."]
    assert replies_to_other_questions(pairs, "And the weather?") == [p[1] for p in pairs]


async def test_the_same_question_answered_the_same_way_again_is_not_regenerated():
    """A later call asks the name again: the same answer is right, and a second attempt would cost a prompt read.
    The same words in reply to another question are still caught."""
    memory = FakeMemory()
    model = ScriptedChatModel(["Your name is Ada, you told me.", "Your name is Ada, you told me.",
                               "Your name is Ada, you told me.", "Blue, you said."])
    agent = Agent(name="A", model=model, memory=memory)
    await agent.generate("What is my name?", memory=MEM)
    again = await agent.generate("What's my name?", memory=MEM)
    assert again.text == "Your name is Ada, you told me." and model.calls == 2
    other = await agent.generate("What is my favourite colour?", memory=MEM)
    assert other.text == "Blue, you said." and model.calls == 4


async def test_an_echo_of_the_callers_own_words_is_caught():
    model = ScriptedChatModel(["My favorite color is blue.", "Blue is a lovely colour; I will remember it."])
    agent = Agent(name="A", model=model)
    result = await agent.generate("My favorite color is blue.")
    assert result.text == "Blue is a lovely colour; I will remember it." and model.calls == 2


async def test_a_retry_that_reads_the_nudge_back_is_never_spoken():
    # Seen in bench_conversation: asked for a story after a repeat, the 0.5B model answered the nudge itself.
    memory = FakeMemory()
    model = ScriptedChatModel([WEATHER, WEATHER, NUDGE, "A robot named Bolt learned to paint the sky."])
    agent = Agent(name="A", model=model, memory=memory)
    await agent.generate("What's the weather in London?", memory=MEM)
    streamed, result, _ = await streamed_run(agent, "Tell me a short story about a robot.", memory=MEM)
    assert streamed == result.text == "A robot named Bolt learned to paint the sky."
    assert "repeat" not in streamed.lower() and model.calls == 4


async def test_when_every_retry_reads_the_nudge_back_the_fallback_is_said():
    model = ScriptedChatModel([WEATHER, WEATHER, NUDGE, NUDGE + " Sure."])
    agent = Agent(name="A", model=model, memory=FakeMemory())
    await agent.generate("Weather?", memory=MEM)
    result = await agent.generate("Is it far?", memory=MEM)
    assert result.text == "I'm not sure about that." and model.calls == 4
