"""Working memory in storage: where it lives (the resource row, or the thread row), reading it, and applying an
update under the row's lock. Mixed into :class:`~voiceserver.memory.Memory`; the text rules are in :mod:`.working`."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from ..ids import validate_id
from . import records, working
from .types import MemoryStoreError, ReadOnlyMemoryError, ThreadNotFoundError, to_micros, utc_now

if TYPE_CHECKING:
    from .options import MemoryOptions
    from .store import LanceDBStore

_UNSET: Any = object()


class WorkingMemoryOperations:
    storage: LanceDBStore
    options: MemoryOptions

    def _lock(self, key: str) -> asyncio.Lock:  # provided by Memory
        raise NotImplementedError

    async def _owner(self, thread_id: str, resource_id: str | None, *, create: bool) -> str | None:  # by Memory
        raise NotImplementedError

    async def _working_location(self, thread_id: str | None, resource_id: str | None) -> tuple[str, str | None]:
        if resource_id is not None:
            validate_id(resource_id, "resource")
        if thread_id is None:
            if self.options.working_memory.scope != "resource" or resource_id is None:
                raise MemoryStoreError("thread-scoped working memory needs a thread id", code="missing_thread")
            return resource_id, None
        validate_id(thread_id, "thread")
        owner = await self._owner(thread_id, resource_id, create=False)
        if owner is None:
            if resource_id is None:
                raise ThreadNotFoundError(thread_id)
            owner = resource_id
        return owner, thread_id

    async def _stored_working_memory(self, resource_id: str, thread_id: str | None) -> str | None:
        if self.options.working_memory.scope == "resource":
            row = await records.get_resource(self.storage, resource_id)
            return row["working_memory"] if row else None
        assert thread_id is not None
        found = await records.get_thread(self.storage, thread_id)
        return found[1] if found else None

    async def get_working_memory(self, thread_id: str | None, resource_id: str | None = None) -> str | None:
        """The stored working memory text (Markdown, or JSON in schema mode), or None. ``thread_id`` may be None
        for resource-scoped working memory."""
        if not self.options.working_memory.enabled:
            return None
        owner, thread_id = await self._working_location(thread_id, resource_id)
        return await self._stored_working_memory(owner, thread_id)

    async def update_working_memory(self, thread_id: str | None, resource_id: str | None = None,
                                    working_memory: Any = _UNSET) -> None:
        """Apply an update: Markdown text (template mode) or a JSON object / JSON text (schema mode). Also
        accepts the tool's arguments ``{"memory": ...}``. The empty template never overwrites data; a thread
        that does not exist yet is created for the resource."""
        wm_options = self.options.working_memory
        if not wm_options.enabled:
            raise MemoryStoreError("working memory is not enabled in the memory options", code="not_enabled")
        if self.options.read_only:
            raise ReadOnlyMemoryError()
        if working_memory is _UNSET:
            raise MemoryStoreError("update_working_memory needs working_memory=...", code="invalid_request")
        owner, thread_id = await self._working_location(thread_id, resource_id)
        if thread_id is not None:
            await self._owner(thread_id, owner, create=True)
        key = f"r:{owner}" if wm_options.scope == "resource" else f"t:{thread_id}"
        async with self._lock(key):
            if wm_options.scope == "resource":
                row = await records.get_resource(self.storage, owner)
                stored = row["working_memory"] if row else None
                new = working.apply_update(wm_options, stored, working_memory)
                if new is None:
                    return
                now = to_micros(utc_now())
                await records.save_resource(self.storage, owner, new, json.loads(row["metadata"] or "{}") if row
                                            else {}, row["created_at"] if row else now, now)
            else:
                assert thread_id is not None
                found = await records.get_thread(self.storage, thread_id)
                if found is None:
                    raise ThreadNotFoundError(thread_id)
                thread, stored = found
                new = working.apply_update(wm_options, stored, working_memory)
                if new is None:
                    return
                await records.save_thread(self.storage, thread, new)
