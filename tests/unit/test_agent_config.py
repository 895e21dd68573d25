"""Agents from configuration: import paths with clear errors, tools by path, sub-agents by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from voiceserver.agent import Agent, AgentConfigError, Tool, build_agents, load_object, load_tool
from voiceserver.settings import AgentConfig, MemoryConfig, VoiceConfig
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """A user's package on sys.path, like a deployment adding its own tools."""
    pkg = tmp_path / "acme_tools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(
        "from voiceserver.agent import tool\n"
        "@tool\n"
        "def shout(text: str) -> str:\n"
        "    '''Say it louder.'''\n"
        "    return text.upper()\n"
        "def plain(text: str) -> str:\n"
        "    return text\n"
        "class Holder:\n"
        "    inner = shout\n"
        "NUMBER = 3\n"
    )
    (pkg / "broken_import.py").write_text("import acme_missing_dependency\n")
    (pkg / "raises.py").write_text("raise RuntimeError('bad config at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(REPO))
    return pkg


def test_load_object_and_tool(user_modules):
    assert isinstance(load_object("acme_tools.good:shout"), Tool)
    assert load_object("acme_tools.good:Holder.inner") is load_object("acme_tools.good:shout")
    assert load_tool("acme_tools.good:shout").id == "shout"


@pytest.mark.parametrize("path, message", [
    ("acme_tools.good", "is not an import path"),
    ("acme_tools.good:", "is not an import path"),
    ("not a path:x", "is not an import path"),
    ("acme_tools.nothing_here:x", "module 'acme_tools.nothing_here' not found"),
    ("nowhere_pkg.mod:x", "module 'nowhere_pkg.mod' not found"),
    ("acme_tools.broken_import:x", "no module named 'acme_missing_dependency'"),
    ("acme_tools.raises:x", "RuntimeError: bad config at import"),
    ("acme_tools.good:missing", "has no attribute 'missing'"),
])
def test_load_object_errors_say_what_is_wrong(user_modules, path, message):
    with pytest.raises(AgentConfigError, match=message):
        load_object(path)


def test_load_tool_rejects_what_is_not_a_tool(user_modules):
    with pytest.raises(AgentConfigError, match="is not a tool: it is a function .*@tool"):
        load_tool("acme_tools.good:plain")
    with pytest.raises(AgentConfigError, match="is not a tool: it is a int"):
        load_tool("acme_tools.good:NUMBER")


class Registry:
    def __init__(self, script):
        self.script = script
        self.asked = []

    def resolve(self, spec):
        self.asked.append(spec)
        return ScriptedChatModel(self.script)


async def test_build_agents_with_tools_sub_agents_memory_and_voice(user_modules):
    configs = [
        AgentConfig(name="Concierge", instructions="Help.", model="local/smollm2",
                    tools=["examples.custom_tools:weather", "acme_tools.good:shout"]),
        AgentConfig(name="Front Desk", model=["openai/gpt-4o-mini", "local/smollm2"], agents=["Concierge"],
                    memory=MemoryConfig(type="none")),
    ]
    memories, voices = [], []
    registry = Registry([Reply(tool_calls=[("weather", {"city": "Paris"})]), "Sunny."])
    agents = build_agents(configs, model_registry=registry,
                          memory_factory=lambda cfg: memories.append(cfg) or f"memory-{len(memories)}",
                          voice_factory=lambda cfg: voices.append(cfg) or "voice")
    assert list(agents) == ["Concierge", "Front Desk"]
    concierge, desk = agents["Concierge"], agents["Front Desk"]
    assert isinstance(concierge, Agent) and concierge.id == "concierge" and desk.id == "front-desk"
    assert concierge.list_tools() == ["weather", "shout"]
    assert desk.list_tools() == ["agent-concierge"] and desk.agents["concierge"] is concierge
    assert concierge.memory == "memory-1" and desk.memory is None  # memory type none: factory not called
    assert len(memories) == 1 and isinstance(memories[0], MemoryConfig)
    assert all(isinstance(v, VoiceConfig) for v in voices) and concierge.voice == "voice"
    result = await concierge.generate("Weather in Paris?")
    assert result.text == "Sunny." and result.tool_results[0].result["city"] == "Paris"
    assert registry.asked == ["local/smollm2"]


def test_build_agents_sets_the_prompt_budget_and_the_voice_mode_from_the_settings():
    configs = [AgentConfig(name="Plain"), AgentConfig(name="Router", network=True, prompt_budget_tokens=0)]
    agents = build_agents(configs)
    assert agents["Plain"].voice_mode == "agent" and agents["Plain"].prompt_budget_tokens == 1024
    assert agents["Router"].voice_mode == "network" and agents["Router"].prompt_budget_tokens == 0
    with pytest.raises(ValueError, match="voice_mode"):
        Agent(name="x", model="local/smollm2", voice_mode="chat")
    with pytest.raises(ValueError, match="prompt_budget_tokens"):
        Agent(name="x", model="local/smollm2", prompt_budget_tokens=-1)


def test_memory_settings_reach_the_memory_options(tmp_path):
    from voiceserver import build_server
    from voiceserver.settings import Settings

    server = build_server(Settings(lancedb_uri=str(tmp_path / "m")))
    recall = server.agents["Assistant"].memory.options.semantic_recall
    # one whole exchange: fewer tokens for voice
    assert (recall.top_k, recall.exchange, recall.threshold) == (1, True, 0.3)
    old = {"memory": {"recall_top_k": 3, "recall_exchange": False, "recall_message_range": 2,
                      "recall_threshold": None}}
    server = build_server(Settings(lancedb_uri=str(tmp_path / "m"), agent=old))
    recall = server.agents["Assistant"].memory.options.semantic_recall
    assert (recall.top_k, recall.exchange, recall.message_range, recall.threshold) == (3, False, 2, None)


@pytest.mark.parametrize("configs, message", [
    ([AgentConfig(name="A"), AgentConfig(name="A")], "two agents are named 'A'"),
    ([AgentConfig(name="A b"), AgentConfig(name="a-b")], "the same id"),
    ([AgentConfig(name="A", agents=["Ghost"])], "unknown agent 'Ghost'"),
    ([AgentConfig(name="A", agents=["B"]), AgentConfig(name="B", agents=["A"])], "cycle: A -> B -> A"),
    ([AgentConfig(name="A", tools=["acme_tools.good:plain"])], "agent 'A': 'acme_tools.good:plain' is not a tool"),
    ([AgentConfig(name="A", tools=["acme_tools.good:shout", "acme_tools.good:Holder.inner"])],
     "two tools have the id 'shout'"),
    ([AgentConfig(name="A", workflows=["acme_tools.good:shout"])], "is not a workflow"),
])
def test_build_agents_errors(user_modules, configs, message):
    with pytest.raises(AgentConfigError, match=message):
        build_agents(configs)
