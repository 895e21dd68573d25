"""Hypothesis strategies shared by the codec fuzz properties (test_fuzz_*.py): JSON values with the edge cases
clients really send (NaN, infinities, huge integers, hostile strings), and valid messages with one field changed."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from voiceserver.testing import fuzz

# A few hundred examples per property keeps the suite's share small; no deadline (a busy machine is not a bug).
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_MESSAGE = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_MESSAGE_CHARS = 600  # an error message stays short whatever the input was

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.sampled_from(fuzz.NASTY_NUMBERS) | st.sampled_from(fuzz.NASTY_STRINGS))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


def _replaced(message: Any, path: tuple, value: Any, delete: bool) -> Any:
    out = copy.deepcopy(message)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def one_field_changed(message: dict[str, Any], *, keep: tuple[str, ...] = ("type",)) -> st.SearchStrategy:
    """``message`` with one field (at any depth) replaced by an edge-case scalar or any JSON value, or removed."""
    paths = [p for p in fuzz.json_paths(message) if p and (p[0] not in keep or len(p) > 1)]
    if not paths:
        return st.just(copy.deepcopy(message))
    return st.builds(_replaced, st.just(message), st.sampled_from(paths), scalars | json_values,
                     st.integers(0, 4).map(lambda n: n == 0))  # a fifth of the time the field goes missing
