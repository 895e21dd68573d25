"""Key/value memory scoped to a caller: store, retrieve, batch_store, search, and age-based cleanup.

Mixed into :class:`Memory`. Each entry is (resource, namespace, key) -> a JSON value; its text is embedded so
:meth:`search` finds entries (and messages) of the same caller by meaning.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..ids import validate_id
from . import records
from .schema import ENTRIES, MESSAGES, both, eq, is_in, lt, vectors_schema
from .types import MemoryStoreError, SearchHit, to_micros, utc_now

if TYPE_CHECKING:
    from .embedders import Embedder
    from .store import LanceDBStore

MAX_VALUE_CHARS = 100_000
MAX_BATCH = 1_000


def _entry_text(namespace: str, key: str, value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"{namespace} {key}: {shown}"


class EntryOperations:
    storage: LanceDBStore
    embedder: Embedder | None

    async def _vectors(self, create: bool = False) -> str | None:  # provided by Memory
        raise NotImplementedError

    def _check_item(self, namespace: Any, key: Any, value: Any) -> tuple[str, str, Any]:
        validate_id(namespace, "namespace")
        validate_id(key, "key")
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MemoryStoreError(f"value of {namespace}/{key} is not JSON-serialisable: {exc}",
                                   code="invalid_value") from exc
        if len(text) > MAX_VALUE_CHARS:
            raise MemoryStoreError(f"a value is limited to {MAX_VALUE_CHARS} characters of JSON", code="invalid_value")
        return namespace, key, value

    async def store(self, namespace: str, key: str, value: Any, *, resource_id: str) -> None:
        """Store ``value`` (JSON-serialisable) under (namespace, key) for this caller, replacing any old value."""
        await self.batch_store([(namespace, key, value)], resource_id=resource_id)

    async def batch_store(self, items: list[dict[str, Any] | tuple[str, str, Any]], *, resource_id: str) -> None:
        """Store many entries in one commit. Items are {"namespace", "key", "value"} dicts or 3-tuples."""
        validate_id(resource_id, "resource")
        if not isinstance(items, list) or len(items) > MAX_BATCH:
            raise MemoryStoreError(f"batch_store takes a list of at most {MAX_BATCH} items", code="invalid_value")
        checked = []
        for item in items:
            if isinstance(item, dict):
                if set(item) != {"namespace", "key", "value"}:
                    raise MemoryStoreError("an item needs exactly namespace, key and value", code="invalid_value")
                item = (item["namespace"], item["key"], item["value"])
            if not isinstance(item, tuple | list) or len(item) != 3:
                raise MemoryStoreError("an item is (namespace, key, value)", code="invalid_value")
            checked.append(self._check_item(*item))
        if not checked:
            return
        checked = list({(ns, k): (ns, k, v) for ns, k, v in checked}.values())  # last write of a key wins
        now = to_micros(utc_now())
        await self.storage.upsert(ENTRIES, "id", records.entry_rows(resource_id, checked, now))
        if self.embedder is not None:
            vectors = await self.embedder.embed([_entry_text(*item) for item in checked])
            name = await self._vectors(create=True)
            assert name is not None
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
            rows = pa.table({
                "id": [records.entry_id(resource_id, ns, k) for ns, k, _ in checked],
                "kind": ["entry"] * len(checked), "resource_id": [resource_id] * len(checked),
                "thread_id": [None] * len(checked), "created_at": [now] * len(checked),
                "vector": pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1])),
            }, schema=vectors_schema(int(vectors.shape[1])))
            await self.storage.upsert(name, "id", rows)

    async def retrieve(self, namespace: str, key: str, *, resource_id: str) -> Any:
        """The caller's value under (namespace, key), or None."""
        validate_id(resource_id, "resource")
        validate_id(namespace, "namespace")
        validate_id(key, "key")
        row = await records.get_entry(self.storage, resource_id, namespace, key)
        return json.loads(row["value"]) if row else None

    async def search(self, query: str, *, resource_id: str, top_k: int = 5) -> list[SearchHit]:
        """The caller's entries and messages most similar in meaning to ``query``, best first."""
        validate_id(resource_id, "resource")
        if not isinstance(query, str) or not query.strip():
            raise MemoryStoreError("search needs a non-empty query", code="invalid_request")
        if not 1 <= top_k <= 100:
            raise MemoryStoreError("top_k must be from 1 to 100", code="invalid_request")
        if self.embedder is None:
            raise MemoryStoreError("search needs an embedder", code="not_enabled")
        name = await self._vectors()
        if name is None:
            return []
        vector = (await self.embedder.embed([query[:8000]]))[0]
        rows = await self.storage.nearest(name, vector, eq("resource_id", resource_id, "resource"), top_k,
                                          ["id", "kind"])
        entry_ids = [r["id"] for r in rows if r["kind"] == "entry"]
        message_ids = [r["id"] for r in rows if r["kind"] == "message"]
        entries = {}
        if entry_ids:
            where = both(eq("resource_id", resource_id, "resource"), is_in("id", entry_ids))
            entries = {e["id"]: e for e in await self.storage.query(ENTRIES, where)}
        messages = {m.id: m for m in await records.messages_by_ids(self.storage, message_ids, resource_id)} \
            if message_ids else {}
        hits = []
        for row in rows:
            score = 1.0 - float(row["_distance"])
            if row["id"] in entries:
                e = entries[row["id"]]
                value = json.loads(e["value"])
                hits.append(SearchHit(kind="entry", score=score, text=_entry_text(e["namespace"], e["key"], value),
                                      namespace=e["namespace"], key=e["key"], value=value))
            elif row["id"] in messages:
                m = messages[row["id"]]
                hits.append(SearchHit(kind="message", score=score, text=m.content, message=m))
        return hits

    async def cleanup(self, older_than: timedelta | datetime | float, *, resource_id: str | None = None
                      ) -> dict[str, int]:
        """Delete messages, their vectors and entries older than ``older_than`` (an age as timedelta or seconds,
        or a cut-off datetime), for one caller or for everyone. Returns how many rows of each went."""
        if resource_id is not None:
            validate_id(resource_id, "resource")
        if isinstance(older_than, datetime):
            cutoff = older_than
        elif isinstance(older_than, timedelta):
            cutoff = utc_now() - older_than
        elif isinstance(older_than, int | float) and not isinstance(older_than, bool) and older_than >= 0:
            cutoff = utc_now() - timedelta(seconds=older_than)
        else:
            raise MemoryStoreError("older_than must be a timedelta, seconds >= 0, or a datetime",
                                   code="invalid_request")
        cut = to_micros(cutoff)
        scope = eq("resource_id", resource_id, "resource") if resource_id is not None else None
        counts = {}
        plan = [("messages", MESSAGES, both(lt("created_at", cut), scope)),
                ("entries", ENTRIES, both(lt("updated_at", cut), scope))]
        plan += [("vectors", name, both(lt("created_at", cut), scope))
                 for name in await self.storage.vector_table_names()]
        for label, table, where in plan:
            n = await self.storage.count(table, where)
            if n:
                await self.storage.delete(table, where)
            counts[label] = counts.get(label, 0) + n
        return counts
