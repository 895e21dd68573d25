"""Rows <-> values, and the queries Memory runs. Every filter is built from validated ids (see :mod:`.schema`).

Every message query also filters on the caller's ``resource_id`` when one is known: even a bug elsewhere cannot
return another caller's messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa

from .schema import (
    ENTRIES,
    ENTRIES_SCHEMA,
    MESSAGES,
    MESSAGES_SCHEMA,
    RESOURCES,
    RESOURCES_SCHEMA,
    THREADS,
    THREADS_SCHEMA,
    both,
    eq,
    ge,
    is_in,
    lt,
    vectors_schema,
)
from .store import LanceDBStore
from .types import Message, Thread, from_micros, to_micros

MESSAGE_COLUMNS = ["id", "thread_id", "resource_id", "role", "type", "content", "metadata", "created_at"]
IN_CHUNK = 500  # ids per IN (...) clause


# ------------------------------------------------------------------------------------------------------ conversion
def _json(text: str | None) -> Any:
    return json.loads(text) if text else {}


def thread_from_row(row: dict[str, Any]) -> Thread:
    return Thread(id=row["id"], resource_id=row["resource_id"], title=row["title"], metadata=_json(row["metadata"]),
                  created_at=from_micros(row["created_at"]), updated_at=from_micros(row["updated_at"]))


def thread_row(thread: Thread, working_memory: str | None) -> dict[str, Any]:
    return {"id": thread.id, "resource_id": thread.resource_id, "title": thread.title,
            "metadata": json.dumps(thread.metadata, ensure_ascii=False), "working_memory": working_memory,
            "created_at": to_micros(thread.created_at), "updated_at": to_micros(thread.updated_at)}


def message_from_row(row: dict[str, Any]) -> Message:
    return Message(role=row["role"], content=row["content"], thread_id=row["thread_id"],
                   resource_id=row["resource_id"], id=row["id"], created_at=from_micros(row["created_at"]),
                   type=row["type"], metadata=_json(row["metadata"]))


def message_row(message: Message) -> dict[str, Any]:
    return {"id": message.id, "thread_id": message.thread_id, "resource_id": message.resource_id,
            "role": message.role, "type": message.type, "content": message.content,
            "metadata": json.dumps(message.metadata, ensure_ascii=False), "created_at": to_micros(message.created_at)}


def chronological(messages: list[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: (m.created_at, m.id))


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i:i + IN_CHUNK] for i in range(0, len(values), IN_CHUNK)]


# ------------------------------------------------------------------------------------------------------- threads
async def get_thread(store: LanceDBStore, thread_id: str) -> tuple[Thread, str | None] | None:
    """The thread and its thread-scoped working memory. If two processes raced to create it, the first row wins
    (earliest created_at): that is the owner every process agrees on."""
    rows = await store.query(THREADS, eq("id", thread_id, "thread"))
    if not rows:
        return None
    row = min(rows, key=lambda r: (r["created_at"], r["resource_id"]))
    return thread_from_row(row), row["working_memory"]


async def insert_thread(store: LanceDBStore, thread: Thread) -> None:
    """Insert unless a thread with that id exists (one commit)."""
    table = pa.Table.from_pylist([thread_row(thread, None)], schema=THREADS_SCHEMA)
    await store.insert_new(THREADS, "id", table)


async def save_thread(store: LanceDBStore, thread: Thread, working_memory: str | None) -> None:
    await store.upsert(THREADS, "id", pa.Table.from_pylist([thread_row(thread, working_memory)],
                                                           schema=THREADS_SCHEMA))


async def threads_of(store: LanceDBStore, resource_id: str) -> list[Thread]:
    rows = await store.query(THREADS, eq("resource_id", resource_id, "resource"))
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["id"] not in first or row["created_at"] < first[row["id"]]["created_at"]:
            first[row["id"]] = row
    return [thread_from_row(r) for r in first.values()]


async def last_activity(store: LanceDBStore, resource_id: str, thread_id: str | None = None) -> dict[str, int]:
    """Newest message time per thread (microseconds): a thread's updated_at is the later of its own and this."""
    where = both(eq("resource_id", resource_id, "resource"),
                 eq("thread_id", thread_id, "thread") if thread_id is not None else None)
    out: dict[str, int] = {}
    for row in await store.query(MESSAGES, where, ["thread_id", "created_at"]):
        if row["created_at"] > out.get(row["thread_id"], 0):
            out[row["thread_id"]] = row["created_at"]
    return out


# ------------------------------------------------------------------------------------------------------ messages
async def thread_messages(store: LanceDBStore, thread_id: str, resource_id: str,
                          start_us: int | None = None, end_us: int | None = None) -> list[Message]:
    """All messages of a thread (optionally in [start, end)), chronological."""
    where = both(eq("thread_id", thread_id, "thread"), eq("resource_id", resource_id, "resource"),
                 ge("created_at", start_us) if start_us is not None else None,
                 lt("created_at", end_us) if end_us is not None else None)
    rows = await store.query(MESSAGES, where, MESSAGE_COLUMNS)
    return chronological([message_from_row(r) for r in rows])


async def messages_by_ids(store: LanceDBStore, ids: list[str], resource_id: str | None) -> list[Message]:
    out: list[Message] = []
    for chunk in _chunks(ids):
        where = both(is_in("id", chunk, "message"),
                     eq("resource_id", resource_id, "resource") if resource_id is not None else None)
        out.extend(message_from_row(r) for r in await store.query(MESSAGES, where, MESSAGE_COLUMNS))
    return chronological(out)


async def stored_owners(store: LanceDBStore, ids: list[str]) -> dict[str, tuple[str, str]]:
    """id -> (thread_id, resource_id) of the given message ids that are already stored."""
    out: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(ids):
        for row in await store.query(MESSAGES, is_in("id", chunk, "message"), ["id", "thread_id", "resource_id"]):
            out[row["id"]] = (row["thread_id"], row["resource_id"])
    return out


async def messages_of_threads(store: LanceDBStore, thread_ids: list[str], resource_id: str) -> list[Message]:
    """Every message of these threads of one caller, chronological."""
    out: list[Message] = []
    for chunk in _chunks(thread_ids):
        where = both(is_in("thread_id", chunk, "thread"), eq("resource_id", resource_id, "resource"))
        out.extend(message_from_row(r) for r in await store.query(MESSAGES, where, MESSAGE_COLUMNS))
    return chronological(out)


async def add_messages(store: LanceDBStore, messages: list[Message], vectors: np.ndarray | None,
                       vectors_name: str | None, embedded: list[Message]) -> None:
    """Append messages, then their vectors (two commits, run concurrently; both done when this returns).

    If the process dies between the two, a message may lack its vector: it is still in the history, only
    semantic recall misses it. A vector without its message is never returned (recall joins on messages).
    """
    rows = pa.Table.from_pylist([message_row(m) for m in messages], schema=MESSAGES_SCHEMA)
    jobs = [store.add(MESSAGES, rows)]
    if vectors is not None and len(embedded) and vectors_name is not None:
        jobs.append(store.add(vectors_name, vector_rows(embedded, vectors, "message")))
    await asyncio.gather(*jobs)


def vector_rows(items: list[Message], vectors: np.ndarray, kind: str) -> pa.Table:
    dim = int(vectors.shape[1])
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table({
        "id": [m.id for m in items], "kind": [kind] * len(items), "resource_id": [m.resource_id for m in items],
        "thread_id": [m.thread_id for m in items], "created_at": [to_micros(m.created_at) for m in items],
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    }, schema=vectors_schema(dim))


async def delete_messages(store: LanceDBStore, ids: list[str], vectors_names: list[str]) -> None:
    for chunk in _chunks(ids):
        await store.delete(MESSAGES, is_in("id", chunk, "message"))
        for name in vectors_names:
            await store.delete(name, is_in("id", chunk, "message"))


# ----------------------------------------------------------------------------------------------------- resources
async def get_resource(store: LanceDBStore, resource_id: str) -> dict[str, Any] | None:
    rows = await store.query(RESOURCES, eq("id", resource_id, "resource"))
    return max(rows, key=lambda r: r["updated_at"]) if rows else None


async def save_resource(store: LanceDBStore, resource_id: str, working_memory: str | None,
                        metadata: dict[str, Any], created_us: int, updated_us: int) -> None:
    row = {"id": resource_id, "working_memory": working_memory, "metadata": json.dumps(metadata, ensure_ascii=False),
           "created_at": created_us, "updated_at": updated_us}
    await store.upsert(RESOURCES, "id", pa.Table.from_pylist([row], schema=RESOURCES_SCHEMA))


# ------------------------------------------------------------------------------------------------------- entries
def entry_id(resource_id: str, namespace: str, key: str) -> str:
    """A valid id for (resource, namespace, key), usable in filters and as the entry's vector id."""
    digest = hashlib.sha256(f"{resource_id}\x00{namespace}\x00{key}".encode()).hexdigest()
    return "entry:" + digest[:40]


def entry_rows(resource_id: str, items: list[tuple[str, str, Any]], now_us: int) -> pa.Table:
    rows = [{"id": entry_id(resource_id, ns, key), "resource_id": resource_id, "namespace": ns, "key": key,
             "value": json.dumps(value, ensure_ascii=False), "created_at": now_us, "updated_at": now_us}
            for ns, key, value in items]
    return pa.Table.from_pylist(rows, schema=ENTRIES_SCHEMA)


async def get_entry(store: LanceDBStore, resource_id: str, namespace: str, key: str) -> dict[str, Any] | None:
    where = both(eq("resource_id", resource_id, "resource"), eq("namespace", namespace, "namespace"),
                 eq("key", key, "key"))
    rows = await store.query(ENTRIES, where)
    return max(rows, key=lambda r: r["updated_at"]) if rows else None
