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
from .schema import RUNS, RUNS_SCHEMA, both, eq, quote
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
    """save_run / load_run / list_runs / delete_run of :class:`voiceserver.runs.store.RunStore`, and claim_run.

    ``claim_run`` is a LanceDB merge whose update is conditional on the stored row (``status`` and ``updated_at`` as
    they were read). Two processes claiming at once both read version N; the first commit wins; the second one's
    commit conflicts on the same row (Lance refuses to rebase two updates of one row), so LanceDB runs the merge
    again against the new version, where the condition no longer holds: it updates nothing and the claim is lost.
    On S3 the commits themselves are conditional puts, so this holds across machines.
    """

    def _run_row(self, record: RunRecord, created_at: float, updated_at: float) -> pa.Table:
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
        row = {"key": f"{kind}:{run_id}", "kind": kind, "run_id": run_id, "owner_id": str(record.owner_id),
               "status": str(record.status), "snapshot": snapshot, "resource_id": record.resource_id,
               "thread_id": record.thread_id, "created_at": created_at, "updated_at": updated_at}
        return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)

    async def save_run(self, record: RunRecord) -> None:
        """Insert or replace the run (kind, run_id); committed when this returns. Keeps the first created_at."""
        existing = await self.load_run(record.kind, record.run_id)
        rows = self._run_row(record, existing.created_at if existing else record.created_at, time.time())
        await self.upsert(RUNS, "key", rows)  # type: ignore[attr-defined]

    async def claim_run(self, record: RunRecord, *, expect_status: str, expect_updated_at: float) -> bool:
        """Save ``record`` only if the stored run still has ``expect_status`` and ``expect_updated_at``: atomic across
        processes (see the class notes). True when this call won. Needs storage: during an outage it raises
        MemoryStoreError ``storage_unavailable`` (a claim cannot wait in the journal)."""
        if getattr(self, "degraded", False):
            raise MemoryStoreError("storage is unreachable: a suspended run cannot be claimed now",
                                   code="storage_unavailable")
        updated_at = max(time.time(), expect_updated_at + 1e-6)  # the new token always differs from the old
        rows = self._run_row(record, record.created_at, updated_at)
        condition = (f"target.status = {quote(str(expect_status))} AND "
                     f"target.updated_at = {float(expect_updated_at)!r}")
        table = await self.table(RUNS)  # type: ignore[attr-defined]

        async def merge() -> int:
            result = await self._write(  # type: ignore[attr-defined]
                RUNS, lambda: table.merge_insert("key").when_matched_update_all(where=condition).execute(rows))
            return int(getattr(result, "num_updated_rows", 0) or 0)

        if getattr(self, "journal", None) is None:
            won = await merge() == 1
        else:
            ok, updated = await self._attempt(merge)  # type: ignore[attr-defined]
            if not ok:
                raise MemoryStoreError("storage is unreachable: a suspended run cannot be claimed now",
                                       code="storage_unavailable")
            won = updated == 1
        if won:
            record.updated_at = updated_at
            self._cache_write_rows(RUNS, rows)
        return won

    def _cache_write_rows(self, table: str, rows: pa.Table) -> None:
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache.remember(table, rows.to_pylist())

    async def load_run(self, kind: str, run_id: str, *, fresh: bool = False) -> RunRecord | None:
        """The run, or None. ``fresh``: read the table's latest version first (a claim must not act on a version up
        to ``read_consistency_s`` old)."""
        kind = _check_kind(kind)
        where = both(eq("run_id", run_id, "run"), eq("kind", kind))
        if fresh and not getattr(self, "degraded", False):
            table = await self.table(RUNS)  # type: ignore[attr-defined]
            await table.checkout_latest()
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
