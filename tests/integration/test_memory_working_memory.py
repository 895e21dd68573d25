"""Working memory on real LanceDB: template and schema modes, thread and resource scopes, the tool, and the
after-turn extraction and title generation with a scripted model."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from voiceserver.memory import LanceDBStore, Memory, Message, ThreadOwnerError
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel

TEMPLATE = "# User\n- Name:\n- City:\n"


class Profile(BaseModel):
    name: str | None = None
    city: str | None = None
    pets: list[str] = []
    prefs: dict[str, str] = {}


def make(tmp_path, **wm) -> Memory:
    return Memory(LanceDBStore(tmp_path / "mem"), embedder=None,
                  options={"last_messages": 5, "working_memory": {"enabled": True, **wm}})


async def test_template_resource_scope_is_shared_by_the_callers_threads(tmp_path):
    memory = make(tmp_path, template=TEMPLATE, scope="resource")
    first = await memory.prepare(resource_id="ada", thread_id="call-1", query=None)
    assert first.working_memory is None and "- Name:" in first.system_message
    assert first.working_memory_tool["name"] == "update-working-memory"
    await memory.update_working_memory("call-1", "ada", working_memory="# User\n- Name: Ada\n- City: London\n")
    second = await memory.prepare(resource_id="ada", thread_id="call-2", query=None)
    assert second.working_memory == "# User\n- Name: Ada\n- City: London\n"
    assert "Name: Ada" in second.system_message
    # The empty template never overwrites what is known.
    await memory.update_working_memory("call-2", "ada", working_memory=TEMPLATE)
    await memory.update_working_memory("call-2", "ada", working_memory={"memory": "  "})
    assert await memory.get_working_memory("call-1", "ada") == "# User\n- Name: Ada\n- City: London\n"
    assert await memory.get_working_memory(None, "ada") == "# User\n- Name: Ada\n- City: London\n"
    # Another caller sees nothing of it, and cannot use Ada's thread.
    other = await memory.prepare(resource_id="bob", thread_id="bob-1", query=None)
    assert other.working_memory is None and "Ada" not in other.system_message
    with pytest.raises(ThreadOwnerError):
        await memory.get_working_memory("call-1", "bob")
    with pytest.raises(ThreadOwnerError):
        await memory.update_working_memory("call-1", "bob", working_memory="# User\n- Name: Bob\n")


async def test_template_thread_scope_stays_on_the_thread(tmp_path):
    memory = make(tmp_path, template=TEMPLATE, scope="thread")
    await memory.update_working_memory("call-1", "ada", working_memory="# User\n- Name: Ada\n- City:\n")
    assert (await memory.prepare(resource_id="ada", thread_id="call-1", query=None)).working_memory.startswith(
        "# User\n- Name: Ada")
    assert (await memory.prepare(resource_id="ada", thread_id="call-2", query=None)).working_memory is None
    with pytest.raises(Exception, match="thread"):
        await memory.get_working_memory(None, "ada")
    # The thread keeps its title and owner when its working memory changes.
    await memory.update_thread("call-1", title="Booking")
    await memory.update_working_memory("call-1", "ada", working_memory="# User\n- Name: Ada\n- City: Rome\n")
    thread = await memory.get_thread_by_id("call-1")
    assert thread.title == "Booking" and thread.resource_id == "ada"


@pytest.mark.parametrize("scope", ["resource", "thread"])
async def test_schema_mode_deep_merges(tmp_path, scope):
    memory = make(tmp_path, schema=Profile, scope=scope)
    context = await memory.prepare(resource_id="ada", thread_id="call-1", query=None)
    params = context.working_memory_tool["parameters"]["properties"]["memory"]
    assert set(params["properties"]) == {"name", "city", "pets", "prefs"}
    await memory.update_working_memory("call-1", "ada", working_memory={"name": "Ada", "pets": ["cat", "dog"],
                                                                        "prefs": {"drink": "tea", "food": "soup"}})
    await memory.update_working_memory("call-1", "ada", working_memory={"memory": {"pets": ["fish"],
                                                                                   "prefs": {"drink": "coffee"},
                                                                                   "name": None}})
    data = json.loads(await memory.get_working_memory("call-1", "ada"))
    assert data == {"pets": ["fish"], "prefs": {"drink": "coffee", "food": "soup"}}
    context = await memory.prepare(resource_id="ada", thread_id="call-1", query=None)
    assert json.loads(context.working_memory) == data and '"coffee"' in context.system_message
    other = await memory.prepare(resource_id="ada", thread_id="call-2", query=None)
    assert (other.working_memory is not None) == (scope == "resource")
    with pytest.raises(Exception, match="pets"):
        await memory.update_working_memory("call-1", "ada", working_memory={"pets": "not a list"})


async def test_after_turn_extracts_working_memory_with_structured_output(tmp_path):
    """Template mode extracts field by field (a flat object of the template's labels), keeps only values grounded in
    what the user said, and never overwrites known data with an empty answer."""
    memory = make(tmp_path, template=TEMPLATE, extract=True)
    model = ScriptedChatModel([Reply(text=json.dumps({"Name": "Ada", "City": ""})),
                               Reply(text=json.dumps({"Name": "", "City": ""})),
                               Reply(text=json.dumps({"Name": "Ada", "City": "The complete working memory"}))])
    context = await memory.prepare(resource_id="ada", thread_id="c1", query=None)
    assert context.working_memory_tool is None  # extraction instead of the tool
    turn = [Message("user", "Hi, I am Ada.", "c1", "ada"), Message("assistant", "Hello Ada!", "c1", "ada")]
    await memory.save_messages(turn)
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn, model=model)
    request = model.requests[0]
    assert request.response_schema["properties"] == {"Name": {"type": "string"}, "City": {"type": "string"}}
    assert "Hi, I am Ada." in request.messages[-1].content
    assert await memory.get_working_memory("c1", "ada") == "# User\n- Name: Ada\n- City:\n"
    # Empty answers change nothing.
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn, model=model)
    assert await memory.get_working_memory("c1", "ada") == "# User\n- Name: Ada\n- City:\n"
    # A value the user never said (the model copying instructions) is not stored.
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn, model=model)
    assert await memory.get_working_memory("c1", "ada") == "# User\n- Name: Ada\n- City:\n"
    # A model failure is logged, not raised.
    broken = ScriptedChatModel([Reply(text="not json at all")])
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn, model=broken)
    assert await memory.get_working_memory("c1", "ada") == "# User\n- Name: Ada\n- City:\n"


async def test_after_turn_extracts_whole_memory_for_free_form_templates(tmp_path):
    """A template without "- Label:" lines is rewritten whole, through the memory field."""
    free = "# Notes about the user\n"
    memory = make(tmp_path, template=free, extract=True)
    model = ScriptedChatModel([Reply(text=json.dumps({"memory": "# Notes about the user\nLikes tea.\n"}))])
    turn = [Message("user", "I like tea.", "c1", "ada")]
    await memory.save_messages(turn)
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn, model=model)
    assert model.requests[0].response_schema["properties"]["memory"]["type"] == "string"
    assert await memory.get_working_memory("c1", "ada") == "# Notes about the user\nLikes tea.\n"


async def test_after_turn_generates_a_title(tmp_path):
    memory = Memory(LanceDBStore(tmp_path / "mem"), embedder=None, options={"generate_title": True})
    turn = [Message("user", "Can you book me a table for two tonight in Lisbon please, around eight?", "c1", "ada")]
    await memory.save_messages(turn)
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn,
                            model=ScriptedChatModel(['"Dinner booking in Lisbon"']))
    assert (await memory.get_thread_by_id("c1")).title == "Dinner booking in Lisbon"
    await memory.save_messages([Message("user", "Another call entirely", "c2", "ada")])
    await memory.after_turn(resource_id="ada", thread_id="c2", messages=[Message("user", "Another call entirely",
                                                                                 "c2", "ada")])
    assert (await memory.get_thread_by_id("c2")).title == "Another call entirely"  # no model: first sentence
    # An existing title is kept.
    await memory.after_turn(resource_id="ada", thread_id="c1", messages=turn, model=ScriptedChatModel(["Other"]))
    assert (await memory.get_thread_by_id("c1")).title == "Dinner booking in Lisbon"
