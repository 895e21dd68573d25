"""LanceDB table schemas and the only way filters are built.

Filters are SQL text for LanceDB, so a caller-supplied string must never be pasted into one. Every value that goes
into a where-clause passes :func:`eq` / :func:`is_in`, which accept only ids that :func:`voiceserver.ids.validate_id`
accepts (letters, digits, ``._:@-``), or integers; and they still quote and escape what they emit.
"""

from __future__ import annotations

import re

import pyarrow as pa

from ..ids import validate_id

THREADS = "threads"
MESSAGES = "messages"
RESOURCES = "resources"
ENTRIES = "entries"
RUNS = "runs"

THREADS_SCHEMA = pa.schema([
    ("id", pa.string()), ("resource_id", pa.string()), ("title", pa.string()), ("metadata", pa.string()),
    ("working_memory", pa.string()), ("created_at", pa.int64()), ("updated_at", pa.int64()),
])
MESSAGES_SCHEMA = pa.schema([
    ("id", pa.string()), ("thread_id", pa.string()), ("resource_id", pa.string()), ("role", pa.string()),
    ("type", pa.string()), ("content", pa.string()), ("metadata", pa.string()), ("created_at", pa.int64()),
])
RESOURCES_SCHEMA = pa.schema([
    ("id", pa.string()), ("working_memory", pa.string()), ("metadata", pa.string()),
    ("created_at", pa.int64()), ("updated_at", pa.int64()),
])
ENTRIES_SCHEMA = pa.schema([
    ("id", pa.string()), ("resource_id", pa.string()), ("namespace", pa.string()), ("key", pa.string()),
    ("value", pa.string()), ("created_at", pa.int64()), ("updated_at", pa.int64()),
])
RUNS_SCHEMA = pa.schema([
    ("key", pa.string()), ("kind", pa.string()), ("run_id", pa.string()), ("owner_id", pa.string()),
    ("status", pa.string()), ("snapshot", pa.string()), ("resource_id", pa.string()), ("thread_id", pa.string()),
    ("created_at", pa.float64()), ("updated_at", pa.float64()),
])

# Scalar (BTree) indexes: every column a hot filter uses.
INDEXED_COLUMNS: dict[str, tuple[str, ...]] = {
    THREADS: ("id", "resource_id"),
    MESSAGES: ("id", "thread_id", "resource_id"),
    RESOURCES: ("id",),
    ENTRIES: ("id", "resource_id"),
    RUNS: ("key", "run_id", "kind"),
}
VECTOR_INDEXED_COLUMNS = ("id", "thread_id", "resource_id")

BASE_TABLES: dict[str, pa.Schema] = {
    THREADS: THREADS_SCHEMA, MESSAGES: MESSAGES_SCHEMA, RESOURCES: RESOURCES_SCHEMA, ENTRIES: ENTRIES_SCHEMA,
    RUNS: RUNS_SCHEMA,
}


def vectors_schema(dim: int) -> pa.Schema:
    """Vectors of one embedder: a message's (kind "message") or a key/value entry's (kind "entry")."""
    return pa.schema([
        ("id", pa.string()), ("kind", pa.string()), ("resource_id", pa.string()), ("thread_id", pa.string()),
        ("created_at", pa.int64()), ("vector", pa.list_(pa.float32(), dim)),
    ])


def vectors_table_name(embedder_name: str) -> str:
    return "vectors_" + re.sub(r"[^A-Za-z0-9_]+", "_", embedder_name).strip("_").lower()


def quote(value: str) -> str:
    """A SQL string literal of a validated id (single quotes doubled anyway)."""
    return "'" + value.replace("'", "''") + "'"


def eq(column: str, value: str | int, what: str = "id") -> str:
    """``column = <value>`` for a validated id or an integer."""
    if isinstance(value, bool):
        raise TypeError("booleans are not filter values")
    if isinstance(value, int):
        return f"{column} = {int(value)}"
    return f"{column} = {quote(validate_id(value, what))}"


def is_in(column: str, values: list[str], what: str = "id") -> str:
    """``column IN (...)`` for validated ids (an empty list matches nothing)."""
    if not values:
        return "false"
    return f"{column} IN ({', '.join(quote(validate_id(v, what)) for v in values)})"


def lt(column: str, value: int) -> str:
    return f"{column} < {int(value)}"


def ge(column: str, value: int) -> str:
    return f"{column} >= {int(value)}"


def both(*clauses: str | None) -> str:
    parts = [c for c in clauses if c]
    return " AND ".join(f"({c})" for c in parts) if parts else "true"
