"""A returning caller, with the real local model and real LanceDB memory, built as the server builds its default
agent (settings defaults: local model, semantic recall, working memory filled by after-turn extraction).

Call 1 (one thread): "My name is Ada." The call ends (its background work finishes). Call 2 (a new thread of the
same caller): "What is my name?" — the answer must contain "Ada", which only memory can supply.

Reliability of the answer depends on the model; scripts/bench_prompt.py --name-runs N counts it over N runs (see
the report of issue 9 for the figures per model). The pipeline checks before the answer (working memory holds the
name, the prompt carries it and the recalled message) are model-independent.
"""

from __future__ import annotations

import pytest

from voiceserver import build_server
from voiceserver.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_a_returning_caller_is_answered_with_their_name_from_memory(models_dir, tmp_path, capsys):
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / "memory"))
    server = build_server(settings)
    agent = server.agents[settings.agent.name]
    await agent.memory.open()
    try:
        intro = await agent.generate("My name is Ada.", memory={"resource": "caller-ada", "thread": "call-1"})
        await agent.flush()  # the first call is over; its working-memory extraction has run
        working = await agent.memory.get_working_memory(None, "caller-ada")
        stream = agent.stream("What is my name?", memory={"resource": "caller-ada", "thread": "call-2"})
        context = next(c.payload for c in [c async for c in stream] if c.type == "context")
        answer = await stream.result()
        await agent.flush()
    finally:
        await agent.memory.close()
        await server.model_registry.close()
    with capsys.disabled():
        print(f"\n[{settings.agent.model}] call 1: {intro.text!r}\n[{settings.agent.model}] working memory: "
              f"{working!r}\n[{settings.agent.model}] call 2: {answer.text!r}\n[{settings.agent.model}] {context}")
    assert working and "Ada" in working
    assert context["working_memory"] is True and context["recalled_messages"] >= 1
    assert context["history_messages"] == 0  # a new call: nothing in the thread yet; the name comes from memory
    assert "ada" in answer.text.lower(), answer.text
