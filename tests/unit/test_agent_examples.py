"""The examples in examples/ run (with scripted models, so they are deterministic)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("examples.multi_agent_chain"), importlib.import_module("examples.custom_tools")


async def test_multi_agent_chain_passes_each_output_to_the_next_agent(examples):
    chain, _ = examples
    research = ScriptedChatModel(["Fact one.\nFact two."])
    analysis = ScriptedChatModel(["The facts imply a trend."])
    report = ScriptedChatModel(["Title\nA short report on the trend."])
    stages = chain.build_chain(research_model=research, analysis_model=analysis, report_model=report)
    seen = []
    outputs = await chain.run_chain("heat pumps", stages, on_stage=lambda name, text: seen.append(name))
    assert seen == ["Researcher", "Analyst", "Writer"]
    assert list(outputs) == ["researcher", "analyst", "writer"]
    assert outputs["writer"] == "Title\nA short report on the trend."
    assert research.requests[0].messages[-1].content.endswith("heat pumps")
    assert analysis.requests[0].messages[-1].content.endswith("Fact one.\nFact two.")
    assert report.requests[0].messages[-1].content.endswith("The facts imply a trend.")


async def test_supervisor_delegates_to_the_chain_agents(examples):
    chain, _ = examples
    stages = chain.build_chain(ScriptedChatModel(["sub-agent answer"]))
    editor_model = ScriptedChatModel([
        Reply(tool_calls=[("agent-researcher", {"prompt": "facts on heat pumps"})]),
        Reply(tool_calls=[("agent-analyst", {"prompt": "analyse"})]),
        Reply(tool_calls=[("agent-writer", {"prompt": "write"})]),
        "Final report.",
    ])
    editor = chain.build_supervisor(stages, editor_model)
    result = await editor.generate("Report on heat pumps")
    assert [c.tool_name for c in result.tool_calls] == ["agent-researcher", "agent-analyst", "agent-writer"]
    assert result.text == "Final report." and all(r.result == {"text": "sub-agent answer"}
                                                  for r in result.tool_results)


async def test_custom_tools_example_weather_approval_and_resume(examples):
    _, tools = examples
    tools.BOOKINGS.clear()
    model = ScriptedChatModel([
        Reply(tool_calls=[("weather", {"city": "London"})]), "Light rain, 14 degrees.",
        Reply(tool_calls=[("book_table", {"restaurant": "Luigi", "people": 2, "time": "19:00"})]), "Booked.",
        Reply(tool_calls=[("cancel_booking", {"reference": "BK0001"})]), "Cancelled.",
    ])
    agent = tools.build_concierge(model)
    weather = await agent.generate("Weather in London?")
    assert weather.tool_results[0].result == {"city": "London", "conditions": "light rain", "temperature_c": 14}

    booking = await agent.generate("Book Luigi's for two")
    assert booking.finish_reason == "suspended" and tools.BOOKINGS == []
    booked = await (await agent.approve_tool_call(run_id=booking.run_id)).result()
    assert booked.text == "Booked." and tools.BOOKINGS[0]["reference"] == "BK0001"

    cancel = await agent.generate("Cancel BK0001")
    assert cancel.suspend_payload == {"question": "Do you really want to cancel booking BK0001?"}
    done = await (await agent.resume_stream({"confirmed": True}, run_id=cancel.run_id)).result()
    assert done.tool_results[-1].result == {"cancelled": True, "reference": "BK0001"} and tools.BOOKINGS == []


def test_the_example_settings_file_builds(examples):
    from voiceserver.agent import build_agents
    from voiceserver.settings import load_settings

    settings = load_settings(REPO / "examples" / "agents.yaml")
    agents = build_agents(settings.agents, model_registry=object())
    assert agents["Assistant"].list_tools() == ["agent-concierge"]
    assert agents["Concierge"].list_tools() == ["weather", "convert_temperature", "book_table"]
