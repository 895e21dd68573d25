"""Working memory rules and memory options, as pure functions."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from voiceserver.memory import MemoryOptions, MemoryStoreError, WorkingMemoryError
from voiceserver.memory.working import apply_update, deep_merge, is_empty_template, system_block, tool_spec

TEMPLATE = "# User\n- Name:\n- City:\n"


class Profile(BaseModel):
    name: str
    age: int | None = None
    tags: list[str] = []
    address: dict[str, str] = {}


def wm(**kwargs):
    return MemoryOptions.parse({"working_memory": {"enabled": True, **kwargs}}).working_memory


def test_deep_merge_null_deletes_lists_replace_objects_merge():
    current = {"name": "Ada", "tags": ["a", "b"], "address": {"city": "Paris", "zip": "75001"}, "age": 36}
    update = {"age": None, "tags": ["c"], "address": {"city": "Lyon"}, "pet": {"kind": "cat"}}
    assert deep_merge(current, update) == {"name": "Ada", "tags": ["c"], "address": {"city": "Lyon", "zip": "75001"},
                                           "pet": {"kind": "cat"}}
    assert current["age"] == 36  # the input is not modified


def test_template_mode_replaces_but_never_with_the_empty_template():
    options = wm(template=TEMPLATE)
    filled = "# User\n- Name: Ada\n- City:\n"
    assert apply_update(options, None, filled) == filled
    assert apply_update(options, filled, TEMPLATE) is None          # empty template: keep the data
    assert apply_update(options, filled, "  # User \n\n- Name:\n- City:  \n") is None  # same, other whitespace
    assert apply_update(options, filled, "   ") is None              # blank: keep
    assert apply_update(options, filled, filled) is None             # unchanged
    assert apply_update(options, None, TEMPLATE) == TEMPLATE         # nothing stored yet: harmless
    newer = "# User\n- Name: Ada\n- City: Paris\n"
    assert apply_update(options, filled, newer) == newer
    assert apply_update(options, filled, {"memory": newer}) == newer  # the tool's arguments are accepted
    with pytest.raises(WorkingMemoryError):
        apply_update(options, filled, {"name": "Ada"})
    assert is_empty_template("", TEMPLATE) and not is_empty_template(filled, TEMPLATE)


def test_schema_mode_merges_and_validates_with_pydantic():
    options = wm(schema=Profile)
    first = apply_update(options, None, {"name": "Ada", "tags": ["x", "y"]})
    assert json.loads(first) == {"name": "Ada", "tags": ["x", "y"]}
    second = apply_update(options, first, '{"tags": ["z"], "age": 36}')
    assert json.loads(second) == {"name": "Ada", "tags": ["z"], "age": 36}
    third = apply_update(options, second, {"memory": {"age": None}})
    assert json.loads(third) == {"name": "Ada", "tags": ["z"]}
    with pytest.raises(WorkingMemoryError, match="age"):
        apply_update(options, third, {"age": "not a number"})
    with pytest.raises(WorkingMemoryError):
        apply_update(options, third, "not json")
    with pytest.raises(WorkingMemoryError):
        apply_update(options, third, ["a", "list"])


def test_schema_mode_with_a_json_schema_refuses_unknown_fields_when_closed():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": False}
    options = wm(schema=schema)
    assert json.loads(apply_update(options, None, {"name": "Ada"})) == {"name": "Ada"}
    with pytest.raises(WorkingMemoryError, match="unknown"):
        apply_update(options, None, {"colour": "blue"})


def test_tool_spec_and_system_block():
    spec = tool_spec(wm(template=TEMPLATE))
    assert spec["name"] == "update-working-memory"
    assert spec["parameters"]["properties"]["memory"]["type"] == "string"
    schema_spec = tool_spec(wm(schema=Profile))
    memory = schema_spec["parameters"]["properties"]["memory"]
    assert "required" not in memory and set(memory["properties"]) == {"name", "age", "tags", "address"}
    block = system_block(wm(template=TEMPLATE), None, read_only=False)
    assert "- Name:" in block and "update-working-memory" in block
    assert "update-working-memory" not in system_block(wm(template=TEMPLATE), "# User\n- Name: Ada", read_only=True)


def test_without_the_tool_the_block_shows_only_what_is_known():
    extract = wm(template=TEMPLATE, extract=True)
    assert system_block(extract, None, read_only=False) is None  # nothing known yet: no block at all
    assert system_block(extract, TEMPLATE, read_only=False) is None  # the empty template is nothing known either
    block = system_block(extract, "# User\n- Name: Ada\n- Location:\n- Interests: chess, tea\n", read_only=False)
    assert block.endswith("- Name: Ada\n- Interests: chess, tea") and "Location" not in block and "#" not in \
        block.split("\n", 1)[1]
    schema = wm(schema=Profile, extract=True)
    assert system_block(schema, "{}", read_only=False) is None
    assert '"Ada"' in system_block(schema, '{"name": "Ada"}', read_only=False)


def test_options_parse_and_reject():
    options = MemoryOptions.parse({"last_messages": 5, "semantic_recall": {"top_k": 2, "message_range": 1},
                                   "working_memory": {"enabled": True, "scope": "thread"}})
    assert options.semantic_recall.enabled and options.semantic_recall.before == 1
    assert options.working_memory.template  # the default template fills in
    assert not MemoryOptions.parse(None).semantic_recall.enabled
    bad = [
        {"working_memory": {"enabled": True, "template": "x", "schema": Profile}},  # never both
        {"last_messages": -1}, {"semantic_recall": {"top_k": 0}}, {"semantic_recall": {"scope": "world"}},
        {"working_memory": {"scope": "everyone"}}, {"unknown": 1}, {"semantic_recall": {"message_range": {"x": 1}}},
        {"working_memory": {"enabled": True, "schema": {"type": "array"}}}, "not a dict",
    ]
    for value in bad:
        with pytest.raises(MemoryStoreError) as info:
            MemoryOptions.parse(value)  # type: ignore[arg-type]
        assert info.value.code == "invalid_options"
