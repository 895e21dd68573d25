"""Filter building and message values: hostile ids never reach a LanceDB filter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voiceserver.ids import InvalidIdError
from voiceserver.memory import MemoryStoreError, Message
from voiceserver.memory.schema import both, eq, is_in, lt
from voiceserver.memory.types import from_micros, to_micros

HOSTILE = ["x' OR '1'='1", "../../etc", "", "a" * 10_000, b"\xff\xfe", "x\x00y", "ü", "a b", "a;DROP", None, 5.5]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_rejected(value):
    with pytest.raises((InvalidIdError, TypeError)):
        eq("resource_id", value, "resource")
    with pytest.raises((InvalidIdError, TypeError)):
        is_in("id", ["ok", value])


def test_valid_ids_are_quoted():
    assert eq("thread_id", "conv-1:a@b.c_d") == "thread_id = 'conv-1:a@b.c_d'"
    assert is_in("id", ["a", "b"]) == "id IN ('a', 'b')"
    assert is_in("id", []) == "false"
    assert eq("created_at", 12) == "created_at = 12"
    assert both(eq("a", "x"), None, lt("t", 5)) == "(a = 'x') AND (t < 5)"


@given(st.text(max_size=200))
def test_any_accepted_value_cannot_break_out_of_its_quotes(value):
    try:
        clause = eq("id", value)
    except InvalidIdError:
        return
    inner = clause[len("id = '"):-1]
    assert "'" not in inner and clause.endswith("'")


def test_micros_round_trip():
    moment = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert from_micros(to_micros(moment)) == moment
    assert to_micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0


def test_message_from_dict_checks_fields():
    m = Message.from_dict({"role": "user", "content": "hi", "thread_id": "t",
                           "created_at": "2024-01-01T00:00:00+00:00"})
    assert m.created_at.year == 2024 and m.type == "text" and m.id.startswith("msg_")
    for bad in [{"role": "user"}, {"content": "x"}, {"role": "user", "content": "x", "evil": 1}, "text",
                {"role": "user", "content": "x", "created_at": "yesterday"}]:
        with pytest.raises(MemoryStoreError):
            Message.from_dict(bad)  # type: ignore[arg-type]
