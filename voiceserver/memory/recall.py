"""Semantic recall: the messages most similar to a query, each with its neighbours (the agent lays them out:
:mod:`voiceserver.runs.prompt`).

The vector search is prefiltered on the caller's resource id (and the thread id for thread scope), so it is exact:
a caller's few hundred vectors are compared one by one after the scalar index picked them out, which beats an
approximate vector index at this selectivity (see scripts/bench_memory.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import records
from .options import SemanticRecallOptions
from .schema import both, eq
from .store import LanceDBStore
from .types import Message


async def search_hits(store: LanceDBStore, vectors_name: str | None, query_vector: np.ndarray, *, resource_id: str,
                      thread_id: str | None, limit: int, threshold: float | None) -> list[dict[str, Any]]:
    """Nearest message vectors of the caller (and thread), best first, each with ``score`` = cosine similarity."""
    if vectors_name is None or limit <= 0:
        return []
    where = both(eq("resource_id", resource_id, "resource"), eq("kind", "message"),
                 eq("thread_id", thread_id, "thread") if thread_id is not None else None)
    rows = await store.nearest(vectors_name, query_vector, where, limit, ["id", "thread_id", "created_at"])
    hits = []
    for row in rows:
        score = 1.0 - float(row["_distance"])
        if threshold is None or score >= threshold:
            hits.append({**row, "score": score})
    return hits


def _window(ordered: list[Message], hit_id: str, before: int, after: int) -> list[Message]:
    for i, message in enumerate(ordered):
        if message.id == hit_id:
            return ordered[max(0, i - before): i + after + 1]
    return []


def _exchange(ordered: list[Message], hit_id: str) -> list[Message]:
    """The hit with the other half of its exchange: a user message and the reply after it, or a reply and the user
    message before it (the hit alone when there is none)."""
    for i, message in enumerate(ordered):
        if message.id != hit_id:
            continue
        if message.role == "user" and i + 1 < len(ordered) and ordered[i + 1].role == "assistant":
            return ordered[i:i + 2]
        if message.role == "assistant" and i > 0 and ordered[i - 1].role == "user":
            return ordered[i - 1:i + 1]
        return [message]
    return []


async def other_threads_of_hits(store: LanceDBStore, hits: list[dict[str, Any]], *, resource_id: str,
                                current_thread: str, top_k: int) -> dict[str, list[Message]]:
    """Messages of the threads (other than the current one) of the hits that can be selected, by thread.

    Only current-thread messages are ever excluded from recall, so at most the first ``top_k`` other-thread hits
    can be selected: only their threads are read (whole, which is one query instead of positions + ids).
    """
    threads: list[str] = []
    for hit in hits:
        if hit["thread_id"] != current_thread and hit["thread_id"] not in threads:
            threads.append(hit["thread_id"])
        if len(threads) >= top_k:
            break
    if not threads:
        return {}
    grouped: dict[str, list[Message]] = {}
    for message in await records.messages_of_threads(store, threads, resource_id):
        grouped.setdefault(str(message.thread_id), []).append(message)
    return grouped


async def candidates(store: LanceDBStore, embedder: Any, vectors_name: str | None, query: str,
                     options: SemanticRecallOptions, *, resource_id: str, current_thread: str, limit: int
                     ) -> tuple[list[dict[str, Any]], dict[str, list[Message]]]:
    """Embed the query, search the caller's vectors, and read the other threads the hits may come from.

    Needs nothing from the history, so :meth:`Memory.prepare` runs it concurrently with the history read."""
    if vectors_name is None:
        return [], {}
    vector = (await embedder.embed([query[:8000]]))[0]
    hits = await search_hits(store, vectors_name, vector, resource_id=resource_id,
                             thread_id=current_thread if options.scope == "thread" else None, limit=limit,
                             threshold=options.threshold)
    others = await other_threads_of_hits(store, hits, resource_id=resource_id, current_thread=current_thread,
                                         top_k=options.top_k)
    return hits, others


def select(hits: list[dict[str, Any]], options: SemanticRecallOptions, *, current_thread: str,
           current_messages: list[Message], other_threads: dict[str, list[Message]],
           exclude: set[str]) -> list[Message]:
    """The first ``top_k`` hits not in ``exclude``, each with its neighbours, chronological, minus ``exclude``.

    A hit whose text another chosen hit already has (the same question asked in two earlier calls) is passed
    over: it would show the caller the same words twice, and a returning caller's prompt would grow by a copy of
    every question they ask again."""
    picked: dict[str, Message] = {}
    texts: set[tuple[str, str]] = set()
    chosen = 0
    for hit in hits:
        if chosen >= options.top_k:
            break
        if hit["id"] in exclude:
            continue
        thread = current_messages if hit["thread_id"] == current_thread else other_threads.get(hit["thread_id"], [])
        window = _exchange(thread, hit["id"]) if options.exchange else \
            _window(thread, hit["id"], options.before, options.after)
        found = next((m for m in window if m.id == hit["id"]), None)
        if found is not None:
            text = (found.role, " ".join(str(found.content or "").lower().split()))
            if text in texts:
                continue
            texts.add(text)
        chosen += 1
        for message in window:
            if message.id not in exclude:
                picked[message.id] = message
    return records.chronological(list(picked.values()))
