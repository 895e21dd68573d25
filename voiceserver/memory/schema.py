"""LanceDB table schemas and the only way filters are built.

Filters are SQL text for LanceDB, so a caller-supplied string must never be pasted into one. Every value that goes
into a where-clause passes :func:`eq` / :func:`is_in`, which accept only ids that :func:`voiceserver.ids.validate_id`
accepts (letters, digits, ``._:@-``), or integers; and they still quote and escape what they emit.

Each helper returns a :class:`Where`: the SQL text (a ``str``, what LanceDB runs) that also carries the same
condition as data, so rows can be checked in Python too (the local journal and row cache that answer reads while
storage is unreachable, see :mod:`.outage`), and so a journaled delete can be written to disk and read back.
"""

from __future__ import annotations

import re
from typing import Any

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
# The column that identifies a row of each table: a journaled write is replayed as an insert-if-absent or an upsert
# on it, so replaying it twice (a crash during the replay) changes nothing. Vectors tables use "id".
KEY_COLUMNS: dict[str, str] = {THREADS: "id", MESSAGES: "id", RESOURCES: "id", ENTRIES: "id", RUNS: "key"}


def key_column(table: str) -> str:
    return KEY_COLUMNS.get(table, "id")

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


class Where(str):
    """A filter: SQL text for LanceDB that also knows its condition as data (``spec``), to test rows in Python.

    ``spec`` is one of ``["eq", column, value]``, ``["in", column, [values]]``, ``["lt" | "ge", column, int]``,
    ``["and", [spec, ...]]``, ``["true"]``, ``["false"]``, or ``["sql", text]`` for SQL text built elsewhere, which
    Python cannot evaluate (JSON, so a journal can store it).
    """

    spec: list[Any]

    def __new__(cls, sql: str, spec: list[Any]) -> Where:
        where = super().__new__(cls, sql)
        where.spec = spec
        return where

    def matches(self, row: dict[str, Any]) -> bool:
        return _matches(self.spec, row)

    @classmethod
    def from_spec(cls, spec: list[Any]) -> Where:
        """Rebuild a filter from its spec (journal entries): the SQL text is built again by the same helpers."""
        kind = spec[0]
        if kind == "eq":
            return eq(spec[1], spec[2])
        if kind == "in":
            return is_in(spec[1], list(spec[2]))
        if kind == "lt":
            return lt(spec[1], spec[2])
        if kind == "ge":
            return ge(spec[1], spec[2])
        if kind == "and":
            return both(*(cls.from_spec(s) for s in spec[1]))  # type: ignore[return-value]
        if kind in ("true", "false"):
            return cls(kind, [kind])
        if kind == "sql":  # text built elsewhere: LanceDB can run it, Python cannot test it
            return cls(spec[1], spec)
        raise ValueError(f"unknown filter {kind!r}")

    @classmethod
    def of(cls, where: str) -> Where:
        """``where`` as a Where (SQL text from elsewhere becomes ``["sql", text]``, which no row matches in Python)."""
        return where if isinstance(where, Where) else cls(str(where), ["sql", str(where)])


def _matches(spec: list[Any], row: dict[str, Any]) -> bool:
    kind = spec[0]
    if kind == "eq":
        return row.get(spec[1]) == spec[2]
    if kind == "in":
        return row.get(spec[1]) in spec[2]
    if kind in ("lt", "ge"):
        value = row.get(spec[1])
        return value is not None and (value < spec[2] if kind == "lt" else value >= spec[2])
    if kind == "and":
        return all(_matches(s, row) for s in spec[1])
    return kind == "true"


def quote(value: str) -> str:
    """A SQL string literal of a validated id (single quotes doubled anyway)."""
    return "'" + value.replace("'", "''") + "'"


def eq(column: str, value: str | int, what: str = "id") -> Where:
    """``column = <value>`` for a validated id or an integer."""
    if isinstance(value, bool):
        raise TypeError("booleans are not filter values")
    if isinstance(value, int):
        return Where(f"{column} = {int(value)}", ["eq", column, int(value)])
    checked = validate_id(value, what)
    return Where(f"{column} = {quote(checked)}", ["eq", column, checked])


def is_in(column: str, values: list[str], what: str = "id") -> Where:
    """``column IN (...)`` for validated ids (an empty list matches nothing)."""
    if not values:
        return Where("false", ["false"])
    checked = [validate_id(v, what) for v in values]
    return Where(f"{column} IN ({', '.join(quote(v) for v in checked)})", ["in", column, checked])


def lt(column: str, value: int) -> Where:
    return Where(f"{column} < {int(value)}", ["lt", column, int(value)])


def ge(column: str, value: int) -> Where:
    return Where(f"{column} >= {int(value)}", ["ge", column, int(value)])


def both(*clauses: str | None) -> str:
    """The clauses joined with AND (None ones left out); a :class:`Where` when every clause is one."""
    parts = [c for c in clauses if c]
    if not parts:
        return Where("true", ["true"])
    sql = " AND ".join(f"({c})" for c in parts)
    if all(isinstance(c, Where) for c in parts):
        return Where(sql, ["and", [c.spec for c in parts]])  # type: ignore[union-attr]
    return sql
