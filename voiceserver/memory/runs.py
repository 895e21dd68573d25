"""RunStore on LanceDB: suspended agent runs (tool approval) and workflow snapshots survive the process.

Mixed into :class:`LanceDBStore`. A run is one row of the ``runs`` table keyed ``"<kind>:<run_id>"``; the snapshot is
stored as JSON text. Only the kind (one of a fixed set) and validated ids go into filters; owner and status, which
may be free text, are filtered in Python.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa

from ..ids import validate_id
from ..runs.store import RUN_KINDS, RunRecord
from .schema import RUNS, RUNS_SCHEMA, both, eq
from .types import MemoryStoreError

MAX_SNAPSHOT_CHARS = 5_000_000


def _check_kind(kind: str) -> str:
    if kind not in RUN_KINDS:
        raise MemoryStoreError(f"unknown run kind {kind!r}: expected one of {', '.join(RUN_KINDS)}",
                               code="invalid_run")
    return kind


def _record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(kind=row["kind"], run_id=row["run_id"], owner_id=row["owner_id"], status=row["status"],
                     snapshot=json.loads(row["snapshot"]), resource_id=row["resource_id"],
                     thread_id=row["thread_id"], created_at=row["created_at"], updated_at=row["updated_at"])


class LanceRunStoreMixin:
    """save_run / load_run / list_runs / delete_run of :class:`voiceserver.runs.store.RunStore`."""

    async def save_run(self, record: RunRecord) -> None:
        """Insert or replace the run (kind, run_id); committed when this returns. Keeps the first created_at."""
        kind = _check_kind(record.kind)
        run_id = validate_id(record.run_id, "run")
        if record.resource_id is not None:
            validate_id(record.resource_id, "resource")
        if record.thread_id is not None:
            validate_id(record.thread_id, "thread")
        try:
            snapshot = json.dumps(record.snapshot, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MemoryStoreError(f"run snapshot is not JSON-serialisable: {exc}", code="invalid_run") from exc
        if len(snapshot) > MAX_SNAPSHOT_CHARS:
            raise MemoryStoreError(f"run snapshot is {len(snapshot)} characters (limit {MAX_SNAPSHOT_CHARS})",
                                   code="invalid_run")
        existing = await self.load_run(kind, run_id)
        now = time.time()
        row = {"key": f"{kind}:{run_id}", "kind": kind, "run_id": run_id, "owner_id": str(record.owner_id),
               "status": str(record.status), "snapshot": snapshot, "resource_id": record.resource_id,
               "thread_id": record.thread_id, "created_at": existing.created_at if existing else record.created_at,
               "updated_at": now}
        await self.upsert(RUNS, "key", pa.Table.from_pylist([row], schema=RUNS_SCHEMA))  # type: ignore[attr-defined]

    async def load_run(self, kind: str, run_id: str) -> RunRecord | None:
        """The run, or None."""
        kind = _check_kind(kind)
        where = both(eq("run_id", run_id, "run"), eq("kind", kind))
        rows = await self.query(RUNS, where)  # type: ignore[attr-defined]
        if not rows:
            return None
        return _record(max(rows, key=lambda r: r["updated_at"]))

    async def list_runs(self, kind: str, owner_id: str | None = None, resource_id: str | None = None,
                        status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs of a kind, newest first, filtered by owner / resource / status."""
        kind = _check_kind(kind)
        where = both(eq("kind", kind), eq("resource_id", resource_id, "resource") if resource_id is not None else None)
        rows = await self.query(RUNS, where)  # type: ignore[attr-defined]
        rows = [r for r in rows if (owner_id is None or r["owner_id"] == owner_id)
                and (status is None or r["status"] == status)]
        rows.sort(key=lambda r: r["updated_at"], reverse=True)
        return [_record(r) for r in rows[:max(0, limit)]]

    async def delete_run(self, kind: str, run_id: str) -> None:
        """Remove a run (no error if absent)."""
        kind = _check_kind(kind)
        await self.delete(RUNS, both(eq("run_id", run_id, "run"), eq("kind", kind)))  # type: ignore[attr-defined]
