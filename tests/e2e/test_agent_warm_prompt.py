"""Warming the next prompt (agent.warm), with the real local model and real LanceDB memory, built as the server
builds its default agent.

Memory keeps a short window (``last_messages`` 4), so it slides past the prompt's start every other turn and the
prompt is cut. Without warming, the turn that makes the cut reads its whole history again. With it, the cut is made
after the previous reply and the model reads the new prefix in the background: every turn reads little more than
its own question. The same conversation is run both ways, so the test also shows that the cut happens.
"""

from __future__ import annotations

import pytest

from voiceserver import build_server
from voiceserver.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTIONS = [
    "I am planning a long walk along the river this weekend with my two brothers and our old dog Rex.",
    "We want to start early in the morning, pack sandwiches and tea, and be back before it gets dark.",
    "My younger brother has a bad knee, so we should avoid the steep hills on the eastern side of the valley.",
    "The dog gets tired after about ten kilometres and then he simply lies down in the grass and refuses to walk.",
    "We might stop at the small cafe by the old bridge, the one with the blue door and the big garden.",
    "What should we take with us for the dog?",
]
MARGIN_TOKENS = 24  # the chat template around the question, and the end of the previous reply
CUT_TOKENS = 40  # at least this much more is read by a turn that re-reads the history after a cut


async def conversation(models_dir, tmp_path, warm: bool) -> list[tuple[int, int, int]]:
    """(prompt tokens, cached tokens, question tokens) per turn."""
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / f"memory-{warm}"), llm={"pool": 1},
                        agent={"model": "local/smollm2", "warm_next_prompt": warm,
                               "memory": {"last_messages": 4, "semantic_recall": False, "working_memory": False}})
    server = build_server(settings)
    agent = server.agents[settings.agent.name]
    model = await agent.get_model()
    await agent.memory.open()
    turns = []
    try:
        for question in QUESTIONS:
            stream = agent.stream(question, memory={"resource": "walker", "thread": "call-1"},
                                  model_settings={"max_tokens": 24})
            # The first attempt's read (a repetition-guard retry reads only its nudge, which would hide a cut).
            reads = [c.payload["usage"] async for c in stream if c.type == "prompt-read"]
            await stream.result()
            read = reads[0]
            await agent.flush()  # the caller listens to the reply: background work (the warm-up) runs now
            turns.append((read["prompt_tokens"], read["cached_tokens"], await model.count_tokens_async(question)))
    finally:
        await agent.memory.close()
        await server.model_registry.close()
    return turns


async def test_the_turn_after_a_history_cut_reads_only_its_question_when_the_prompt_was_warmed(models_dir, tmp_path,
                                                                                               capsys):
    cold = await conversation(models_dir, tmp_path, warm=False)
    warmed = await conversation(models_dir, tmp_path, warm=True)
    with capsys.disabled():
        print(f"\n(prompt, cached, question) per turn\n  not warmed: {cold}\n  warmed:     {warmed}")
    # Without warming, some turn re-reads history it did not ask: the cut is real.
    assert any(prompt - cached > question + CUT_TOKENS for prompt, cached, question in cold[1:]), cold
    # Warmed, every later turn reads its question and little else, the cut turns included.
    for prompt, cached, question in warmed[1:]:
        assert prompt - cached <= question + MARGIN_TOKENS, warmed
