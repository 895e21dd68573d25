"""The application container (VoiceApp): registration, lookup, shared storage."""

import pytest

from voiceserver import Agent, VoiceApp, create_step, create_workflow
from voiceserver.runs.store import InMemoryRunStore
from voiceserver.testing.fake_llm import ScriptedChatModel


def make_agent(name="Helper"):
    return Agent(name=name, instructions="x", model=ScriptedChatModel(["ok"]))


def make_workflow(wid="wf"):
    async def run(ctx):
        return {"ok": True}

    return create_workflow(id=wid).then(create_step(id="s", execute=run)).commit()


def test_lookup_by_key_and_id():
    agent, workflow = make_agent("Front Desk"), make_workflow()
    app = VoiceApp(agents={"desk": agent}, workflows={"wf": workflow})
    assert app.get_agent("desk") is agent and app.get_agent("front-desk") is agent
    assert app.get_workflow("wf") is workflow and app.find_workflow("nope") is None
    assert app.get_agents() == {"desk": agent} and app.get_workflows() == {"wf": workflow}
    with pytest.raises(KeyError, match="registered: desk"):
        app.get_agent("other")
    with pytest.raises(KeyError, match="no workflow 'x'"):
        app.get_workflow("x")


def test_storage_is_shared_with_agents_and_workflows_that_have_none():
    store = InMemoryRunStore()
    own = InMemoryRunStore()
    agent, workflow = make_agent(), make_workflow()
    keeps = Agent(name="Keeps", instructions="x", model=ScriptedChatModel(["ok"]), storage=own)
    app = VoiceApp(agents={"a": agent, "b": keeps}, workflows={"wf": workflow}, storage=store)
    assert app.get_storage() is store
    assert agent.storage is store and keeps.storage is own
    assert workflow.storage is store


def test_duplicate_names_are_refused():
    app = VoiceApp(agents={"a": make_agent()})
    with pytest.raises(ValueError, match="already registered"):
        app.add_agent(make_agent(), "a")
    app.add_workflow(make_workflow("w1"))
    with pytest.raises(ValueError, match="already registered"):
        app.add_workflow(make_workflow("w1"))
