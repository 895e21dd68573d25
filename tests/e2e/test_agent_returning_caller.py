"""A returning caller, with a real local model and real LanceDB memory, built as the server builds its default agent
(settings defaults: semantic recall, working memory filled by after-turn extraction), for each local model.

Call 1 (one thread): "My name is Ada." The call ends (its background work finishes). Call 2 (a new thread of the
same caller): "What is my name?" — the answer must contain "Ada", which only memory can supply.

The memory pipeline is checked strictly for every model: working memory holds the name, and the second call's prompt
carries it and the recalled message. Whether the model then says the name depends on the model:
``scripts/bench_prompt.py --name-runs 10 --model <model>`` counts it. Qwen2.5-Coder-0.5B named the caller in 10 of
10 runs and must pass; SmolLM2-135M (the default today) in 6 of 10, so its miss is reported as an expected failure
(xfail, with the answer), never as a pass.
"""

from __future__ import annotations

import pytest

from voiceserver import build_server
from voiceserver.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
UNRELIABLE = {"local/smollm2": "SmolLM2-135M names the caller in about 6 of 10 runs (bench_prompt.py --name-runs 10)"}


@pytest.mark.parametrize("model", ["local/smollm2", "local/qwen2.5-coder-0.5b"])
async def test_a_returning_caller_is_answered_with_their_name_from_memory(model, models_dir, tmp_path, capsys):
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / "memory"), agent={"model": model})
    server = build_server(settings)
    agent = server.agents[settings.agent.name]
    await agent.memory.open()
    try:
        intro = await agent.generate("My name is Ada.", memory={"resource": "caller-ada", "thread": "call-1"})
        await agent.flush()  # the first call is over; its working-memory extraction has run
        working = await agent.memory.get_working_memory(None, "caller-ada")
        stream = agent.stream("What is my name?", memory={"resource": "caller-ada", "thread": "call-2"})
        chunks = [c async for c in stream]
        answer = await stream.result()
        await agent.flush()
    finally:
        await agent.memory.close()
        await server.model_registry.close()
    context = next(c.payload for c in chunks if c.type == "context")
    with capsys.disabled():
        print(f"\n[{model}] call 1: {intro.text!r}\n[{model}] working memory: {working!r}\n"
              f"[{model}] call 2: {answer.text!r}\n[{model}] {context}")
    assert working and "Ada" in working
    assert context["working_memory"] is True and context["recalled_messages"] >= 1
    assert context["history_messages"] == 0  # a new call: nothing in the thread yet; the name comes from memory
    if "ada" not in answer.text.lower() and model in UNRELIABLE:
        pytest.xfail(f"{UNRELIABLE[model]}; this time: {answer.text!r}")
    assert "ada" in answer.text.lower(), answer.text
