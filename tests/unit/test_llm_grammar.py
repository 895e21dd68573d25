"""The tool decision schema, its grammar and its incremental parser (no model needed)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from voiceserver.engines import ProviderError
from voiceserver.llm.base import ToolSpec
from voiceserver.llm.grammar import DecisionParser, GrammarCache, decision_schema


class City(BaseModel):
    name: str
    country: str


class Trip(BaseModel):
    origin: City
    destination: City
    days: int = 1


WEATHER = ToolSpec("weather", "Weather.", {"type": "object", "properties": {"location": {"type": "string"}},
                                           "required": ["location"]})
TRIP = ToolSpec("trip", "Plan a trip.", Trip.model_json_schema())


def branches(schema):
    return schema.get("anyOf", [schema])


def test_auto_offers_every_tool_and_none():
    schema = decision_schema([WEATHER, TRIP], "auto")
    names = [b["properties"]["tool"]["const"] for b in branches(schema)]
    assert names == ["weather", "trip", "none"]
    # "tool" comes first in every branch: the parser reads the name before the arguments
    assert all(list(b["properties"])[0] == "tool" for b in branches(schema))


def test_required_and_named_choice_remove_branches():
    assert [b["properties"]["tool"]["const"] for b in branches(decision_schema([WEATHER, TRIP], "required"))] == [
        "weather", "trip"]
    named = decision_schema([WEATHER, TRIP], "trip")
    assert named["properties"]["tool"]["const"] == "trip"
    assert "anyOf" not in named


def test_unknown_tool_choice_is_a_clear_error():
    with pytest.raises(ProviderError) as err:
        decision_schema([WEATHER], "book_table")
    assert err.value.code == "invalid_request" and "weather" in err.value.message


def test_nested_model_definitions_are_hoisted_and_refs_rewritten():
    schema = decision_schema([TRIP], "required")
    assert set(schema["$defs"]) == {"t0_City"}
    args = schema["properties"]["arguments"]
    assert args["properties"]["origin"] == {"$ref": "#/$defs/t0_City"}
    assert "$defs" not in args


def test_grammar_keeps_the_schema_property_order():
    grammar = GrammarCache().get(decision_schema([WEATHER], "auto"))
    text = grammar._grammar
    tool_rule = next(line for line in text.splitlines() if line.startswith("alternative-0 ::="))
    assert tool_rule.index("tool-kv") < tool_rule.index("arguments-kv")


def test_grammar_cache_reuses_and_bounds():
    cache = GrammarCache(size=2)
    first = cache.get({"type": "integer"})
    assert cache.get({"type": "integer"}) is first
    cache.get({"type": "string"})
    cache.get({"type": "boolean"})
    assert cache.get({"type": "integer"}) is not first  # evicted, rebuilt


def test_grammars_build_for_pydantic_schemas():
    assert GrammarCache().get(decision_schema([TRIP, WEATHER], "auto")) is not None
    assert GrammarCache().get(Trip.model_json_schema()) is not None


def test_unsupported_schema_is_a_provider_error():
    with pytest.raises(ProviderError) as err:
        GrammarCache().get({"$ref": "https://example.com/elsewhere.json"})
    assert err.value.code == "llm_unsupported_schema"


def test_parser_knows_the_tool_before_the_object_ends():
    parser = DecisionParser()
    assert parser.feed('{ "to') is None
    assert parser.feed('ol" : "weat') is None
    assert parser.feed('her", "arguments": {"location": "Pa') == "weather"
    parser.feed('ris"}}')
    assert parser.result() == ("weather", {"location": "Paris"})


def test_parser_reads_none_and_escaped_names():
    assert DecisionParser().feed('{"tool": "none"') == "none"
    assert DecisionParser().feed('{"tool":"a\\"b"') == 'a"b'


def test_incomplete_decision_is_a_clear_error():
    parser = DecisionParser()
    parser.feed('{"tool": "weather", "arguments": {"location": "Par')
    with pytest.raises(ProviderError) as err:
        parser.result()
    assert err.value.code == "llm_invalid_output"


def test_control_characters_in_strings_are_accepted():
    parser = DecisionParser()
    parser.feed('{"tool": "note", "arguments": {"text": "line1\nline2"}}')
    assert parser.result() == ("note", {"text": "line1\nline2"})
    assert json.dumps(parser.result()[1])
