"""Memory: each caller's threads, messages, working memory and semantic recall, in LanceDB.

A *resource* is a caller (``resource_id``); a *thread* is one conversation, owned by exactly one resource for
its whole life. Nothing is stored or recalled unless both are known, and every public method validates the ids it
is given (:func:`voiceserver.ids.validate_id`) before they reach a query.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..ids import new_id, validate_id
from ..logs import get_logger
from . import recall as recall_mod
from . import records, working
from .embedders import Embedder, resolve_embedder
from .entries import EntryOperations
from .options import MemoryOptions
from .processors import MemoryProcessor
from .schema import MESSAGES, THREADS, eq
from .store import LanceDBStore
from .turns import TurnWork
from .types import (
    MAX_CONTENT_CHARS,
    MESSAGE_TYPES,
    ROLES,
    ClonedThread,
    MemoryContext,
    MemoryStoreError,
    Message,
    RecallResult,
    Thread,
    ThreadNotFoundError,
    ThreadOwnerError,
    ThreadPage,
    from_micros,
    is_generated_message_id,
    to_micros,
    utc_now,
)
from .working_store import WorkingMemoryOperations

log = get_logger("MEMORY")

OWNER_CACHE_SIZE = 10_000  # thread -> owner; safe to cache because an owner never changes
SAVED_IDS_SIZE = 50_000  # generated message ids this process saved: re-saving one replaces it
MAX_MESSAGES_PER_SAVE = 1_000
MAX_METADATA_CHARS = 100_000


class Memory(EntryOperations, WorkingMemoryOperations, TurnWork):
    """Conversation memory for agents. See the package docstring for an example.

    ``embedder``: "wordllama" (offline, default), "openai/<model>", an :class:`Embedder`, or None (no semantic
    recall). ``options``: a dict or :class:`MemoryOptions`. ``processors`` shape the history in :meth:`prepare`.
    """

    def __init__(self, storage: LanceDBStore | None = None, embedder: str | Embedder | None = "wordllama",
                 options: dict[str, Any] | MemoryOptions | None = None, processors: list[MemoryProcessor] | None = None,
                 *, models_dir: str | Path | None = None, openai_api_key: str | None = None,
                 openai_base_url: str | None = None):
        self.storage = storage or LanceDBStore()
        self.options = MemoryOptions.parse(options)
        self.embedder = resolve_embedder(embedder, models_dir=models_dir, openai_api_key=openai_api_key,
                                         openai_base_url=openai_base_url)
        self.processors = list(processors or [])
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._saved_ids: OrderedDict[str, None] = OrderedDict()
        self._locks = [asyncio.Lock() for _ in range(64)]  # read-modify-write of one thread / resource row

    # ------------------------------------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Open storage (creating tables) and load the embedder. Raises MemoryStoreError with a clear message."""
        await self.storage.open()
        if self.embedder is not None:
            await self.embedder.load()

    async def close(self) -> None:
        await self.storage.close()
        if self.embedder is not None:
            await self.embedder.close()

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks[hash(key) % len(self._locks)]

    async def _vectors(self, create: bool = False) -> str | None:
        if self.embedder is None:
            return None
        return await self.storage.vectors_table(self.embedder.name, self.embedder.dimensions, create=create)

    # -------------------------------------------------------------------------------------------------- threads
    def _remember_owner(self, thread_id: str, owner: str) -> None:
        self._owners[thread_id] = owner
        self._owners.move_to_end(thread_id)
        while len(self._owners) > OWNER_CACHE_SIZE:
            self._owners.popitem(last=False)

    def _check_owner(self, thread_id: str, owner: str, resource_id: str | None) -> None:
        if resource_id is not None and owner != resource_id:
            raise ThreadOwnerError(thread_id, owner, resource_id)

    async def _owner(self, thread_id: str, resource_id: str | None, *, create: bool) -> str | None:
        """The thread's owner after checking it against ``resource_id``; creates the thread when asked."""
        owner = self._owners.get(thread_id)
        if owner is None:
            found = await records.get_thread(self.storage, thread_id)
            if found is None and create and resource_id is not None:
                await records.insert_thread(self.storage, Thread(id=thread_id, resource_id=resource_id))
                found = await records.get_thread(self.storage, thread_id)  # a concurrent creator may have won
            if found is None:
                return None
            owner = found[0].resource_id
            self._remember_owner(thread_id, owner)
        self._check_owner(thread_id, owner, resource_id)
        return owner

    async def create_thread(self, resource_id: str, thread_id: str | None = None, title: str | None = None,
                            metadata: dict[str, Any] | None = None) -> Thread:
        """Create a thread for ``resource_id`` (a new id when none is given). If it exists and belongs to the same
        resource it is returned unchanged; another owner raises ThreadOwnerError."""
        validate_id(resource_id, "resource")
        thread_id = validate_id(thread_id, "thread") if thread_id is not None else new_id("thread")
        self._check_metadata(metadata)
        existing = await records.get_thread(self.storage, thread_id)
        if existing is None:
            await records.insert_thread(self.storage, Thread(id=thread_id, resource_id=resource_id, title=title,
                                                             metadata=dict(metadata or {})))
            existing = await records.get_thread(self.storage, thread_id)
        assert existing is not None
        self._remember_owner(thread_id, existing[0].resource_id)
        self._check_owner(thread_id, existing[0].resource_id, resource_id)
        return existing[0]

    async def get_thread_by_id(self, thread_id: str) -> Thread | None:
        """The thread, with ``updated_at`` = the later of its own update and its newest message; or None."""
        validate_id(thread_id, "thread")
        found = await records.get_thread(self.storage, thread_id)
        if found is None:
            return None
        thread = found[0]
        activity = await records.last_activity(self.storage, thread.resource_id, thread_id)
        if activity.get(thread_id, 0) > to_micros(thread.updated_at):
            thread.updated_at = from_micros(activity[thread_id])
        return thread

    async def list_threads(self, resource_id: str, page: int = 0, per_page: int = 100, order_by: str = "updated_at",
                           direction: str = "desc") -> ThreadPage:
        """The caller's threads, one page. ``order_by`` "updated_at" or "created_at"; ``direction`` "desc"/"asc"."""
        validate_id(resource_id, "resource")
        if order_by not in ("updated_at", "created_at") or direction not in ("asc", "desc"):
            raise MemoryStoreError("order_by must be updated_at or created_at; direction asc or desc",
                                   code="invalid_request")
        if page < 0 or not 1 <= per_page <= 1000:
            raise MemoryStoreError("page must be >= 0 and per_page from 1 to 1000", code="invalid_request")
        threads = await records.threads_of(self.storage, resource_id)
        activity = await records.last_activity(self.storage, resource_id)
        for thread in threads:
            if activity.get(thread.id, 0) > to_micros(thread.updated_at):
                thread.updated_at = from_micros(activity[thread.id])
        threads.sort(key=lambda t: (getattr(t, order_by), t.id), reverse=direction == "desc")
        return ThreadPage(threads=threads[page * per_page:(page + 1) * per_page], total=len(threads), page=page,
                          per_page=per_page)

    async def update_thread(self, thread_id: str, title: str | None = None,
                            metadata: dict[str, Any] | None = None) -> Thread:
        """Set the title and/or replace the metadata. The owner cannot change."""
        validate_id(thread_id, "thread")
        self._check_metadata(metadata)
        async with self._lock(f"t:{thread_id}"):  # the same lock as thread working memory: one row
            found = await records.get_thread(self.storage, thread_id)
            if found is None:
                raise ThreadNotFoundError(thread_id)
            thread, wm = found
            if title is not None:
                thread.title = str(title)[:500]
            if metadata is not None:
                thread.metadata = dict(metadata)
            thread.updated_at = utc_now()
            await records.save_thread(self.storage, thread, wm)
        return thread

    async def delete_thread(self, thread_id: str) -> None:
        """Delete the thread, its messages and their vectors (no error if it does not exist)."""
        validate_id(thread_id, "thread")
        await self.storage.delete(MESSAGES, eq("thread_id", thread_id, "thread"))
        for name in await self.storage.vector_table_names():
            await self.storage.delete(name, eq("thread_id", thread_id, "thread"))
        await self.storage.delete(THREADS, eq("id", thread_id, "thread"))
        self._owners.pop(thread_id, None)

    async def clone_thread(self, thread_id: str, new_thread_id: str | None = None,
                           title: str | None = None) -> ClonedThread:
        """Copy a thread (same owner), its messages (new ids), their vectors and its thread working memory."""
        validate_id(thread_id, "thread")
        new_thread_id = validate_id(new_thread_id, "thread") if new_thread_id is not None else new_id("thread")
        found = await records.get_thread(self.storage, thread_id)
        if found is None:
            raise ThreadNotFoundError(thread_id)
        source, wm = found
        if await records.get_thread(self.storage, new_thread_id) is not None:
            raise MemoryStoreError(f"Thread {new_thread_id} already exists", code="thread_exists")
        clone = Thread(id=new_thread_id, resource_id=source.resource_id, title=title or source.title,
                       metadata={**source.metadata, "cloned_from": thread_id})
        messages = await records.thread_messages(self.storage, thread_id, source.resource_id)
        copies = [Message(role=m.role, content=m.content, thread_id=new_thread_id, resource_id=m.resource_id,
                          created_at=m.created_at, type=m.type, metadata=dict(m.metadata)) for m in messages]
        await records.save_thread(self.storage, clone, wm)
        self._remember_owner(new_thread_id, clone.resource_id)
        await self._store_messages(copies)
        return ClonedThread(thread=clone, messages=copies)

    # ------------------------------------------------------------------------------------------------- messages
    def _check_metadata(self, metadata: Any) -> None:
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            raise MemoryStoreError("metadata must be a JSON object", code="invalid_request")
        try:
            text = json.dumps(metadata, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MemoryStoreError(f"metadata is not JSON-serialisable: {exc}", code="invalid_request") from exc
        if len(text) > MAX_METADATA_CHARS:
            raise MemoryStoreError(f"metadata is limited to {MAX_METADATA_CHARS} characters", code="invalid_request")

    def _validated(self, message: Message | dict[str, Any]) -> Message:
        msg = message if isinstance(message, Message) else Message.from_dict(message)
        if msg.thread_id is None:
            raise MemoryStoreError("a message needs a thread_id: nothing is stored without a thread",
                                   code="missing_thread")
        validate_id(msg.thread_id, "thread")
        if msg.resource_id is not None:
            validate_id(msg.resource_id, "resource")
        validate_id(msg.id, "message")
        if msg.role not in ROLES:
            raise MemoryStoreError(f"invalid role {msg.role!r}: expected one of {', '.join(ROLES)}",
                                   code="invalid_message")
        if msg.type not in MESSAGE_TYPES:
            raise MemoryStoreError(f"invalid type {msg.type!r}: expected one of {', '.join(MESSAGE_TYPES)}",
                                   code="invalid_message")
        if not isinstance(msg.content, str):
            raise MemoryStoreError("message content must be text", code="invalid_message")
        try:
            msg.content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MemoryStoreError("message content is not valid Unicode text", code="invalid_message") from exc
        if len(msg.content) > MAX_CONTENT_CHARS:
            raise MemoryStoreError(f"message content is limited to {MAX_CONTENT_CHARS} characters",
                                   code="invalid_message")
        if not isinstance(msg.created_at, datetime):
            raise MemoryStoreError("created_at must be a datetime", code="invalid_message")
        self._check_metadata(msg.metadata)
        return msg

    async def save_messages(self, messages: list[Message | dict[str, Any]]) -> list[Message]:
        """Store messages (dicts or Message objects) and embed them for semantic recall.

        Each needs a thread id; the resource id may be left out when the thread exists (it is the thread's owner).
        A missing thread is created for the message's resource. Committed to LanceDB when this returns. With
        ``read_only`` nothing is written and the messages are returned as given.
        """
        if not isinstance(messages, list):
            raise MemoryStoreError("save_messages takes a list of messages", code="invalid_message")
        if len(messages) > MAX_MESSAGES_PER_SAVE:
            raise MemoryStoreError(f"at most {MAX_MESSAGES_PER_SAVE} messages per call", code="invalid_message")
        validated = [self._validated(m) for m in messages]
        if self.options.read_only or not validated:
            return validated
        for thread_id in dict.fromkeys(m.thread_id for m in validated):
            group = [m for m in validated if m.thread_id == thread_id]
            resources = {m.resource_id for m in group if m.resource_id is not None}
            if len(resources) > 1:
                raise ThreadOwnerError(str(thread_id), sorted(resources)[0], sorted(resources)[1])
            resource_id = next(iter(resources), None)
            owner = await self._owner(str(thread_id), resource_id, create=True)
            if owner is None:
                raise MemoryStoreError(f"Thread {thread_id} does not exist and the messages name no resource: "
                                       f"nothing is stored without both", code="missing_resource")
            for m in group:
                m.resource_id = owner
        # Keep a batch in order even when its messages were created within the same microsecond.
        for prev, cur in zip(validated, validated[1:], strict=False):
            if cur.thread_id == prev.thread_id and cur.created_at <= prev.created_at:
                cur.created_at = prev.created_at + timedelta(microseconds=1)
        if len({m.id for m in validated}) != len(validated):
            raise MemoryStoreError("two messages in one call have the same id", code="invalid_message")
        await self._store_messages(validated, replace=True)
        for m in validated:
            self._saved_ids[m.id] = None
        while len(self._saved_ids) > SAVED_IDS_SIZE:
            self._saved_ids.popitem(last=False)
        return validated

    async def _store_messages(self, messages: list[Message], *, replace: bool = False) -> None:
        """Embed and append. With ``replace``, a message whose id is stored already replaces the stored one (only
        within the same thread: an id of another thread is refused).

        Looking ids up costs a query per write, so it is skipped for fresh random ids (``msg_`` + 32 hex, never
        stored unless this process saved them before, which it remembers). Caller-chosen ids are always looked up.
        """
        embedded = [m for m in messages if m.content.strip()] if self.embedder is not None else []
        check = [m.id for m in messages if not is_generated_message_id(m.id) or m.id in self._saved_ids] \
            if replace else []
        jobs: list[Any] = [self.embedder.embed([m.content for m in embedded]) if embedded and self.embedder
                           else _none(),
                           records.stored_owners(self.storage, check) if check else _none()]
        vectors, stored = await asyncio.gather(*jobs)  # the id check runs alongside the embedding
        if stored:
            for m in messages:
                if m.id in stored and stored[m.id] != (m.thread_id, m.resource_id):
                    raise MemoryStoreError(f"message id {m.id} is already used in another thread",
                                           code="message_id_conflict")
            await records.delete_messages(self.storage, list(stored), await self.storage.vector_table_names())
        vectors_name = await self._vectors(create=True) if embedded else None
        await records.add_messages(self.storage, messages, vectors, vectors_name, embedded)

    async def recall(self, thread_id: str, resource_id: str | None = None, vector_search_string: str | None = None,
                     page: int = 0, per_page: int | None = None,
                     date_range: tuple[datetime | None, datetime | None] | dict[str, Any] | None = None
                     ) -> RecallResult:
        """A thread's messages, chronological: all of them (within ``date_range``), or one page of ``per_page``.
        With ``vector_search_string``, the semantic hits (options.semantic_recall) are merged in."""
        validate_id(thread_id, "thread")
        if resource_id is not None:
            validate_id(resource_id, "resource")
        if page < 0 or (per_page is not None and not 1 <= per_page <= 10_000):
            raise MemoryStoreError("page must be >= 0 and per_page from 1 to 10000", code="invalid_request")
        owner = await self._owner(thread_id, resource_id, create=False)
        if owner is None:
            return RecallResult(messages=[], total=0, page=page, per_page=per_page)
        start, end = _date_range(date_range)
        messages = await records.thread_messages(self.storage, thread_id, owner, start, end)
        total = len(messages)
        if per_page is not None:
            messages = messages[page * per_page:(page + 1) * per_page]
        if vector_search_string and self.embedder is not None:
            extra = await self._semantic(owner, thread_id, vector_search_string, messages,
                                         exclude={m.id for m in messages})
            messages = records.chronological(messages + extra)
        return RecallResult(messages=messages, total=total, page=page, per_page=per_page)

    async def delete_messages(self, ids: list[str]) -> None:
        """Delete messages and their vectors by id."""
        if not isinstance(ids, list):
            raise MemoryStoreError("delete_messages takes a list of ids", code="invalid_request")
        checked = [validate_id(i, "message") for i in ids]
        if checked:
            await records.delete_messages(self.storage, checked, await self.storage.vector_table_names())

    async def _semantic(self, resource_id: str, thread_id: str, query: str, current: list[Message],
                        exclude: set[str]) -> list[Message]:
        opts = self.options.semantic_recall
        hits, others = await recall_mod.candidates(
            self.storage, self.embedder, await self._vectors(), query, opts, resource_id=resource_id,
            current_thread=thread_id, limit=opts.top_k + len(exclude))
        return recall_mod.select(hits, opts, current_thread=thread_id, current_messages=current,
                                 other_threads=others, exclude=exclude)

    # ---------------------------------------------------------------------------------------------------- agent
    async def prepare(self, *, resource_id: str, thread_id: str, query: str | None) -> MemoryContext:
        """Everything memory adds to one agent turn: history, recalled messages, working memory, its system text
        (the working-memory block) and the working-memory tool. Creates the thread if it is missing (raises
        ThreadOwnerError for another owner)."""
        validate_id(resource_id, "resource")
        validate_id(thread_id, "thread")
        opts = self.options
        await self._owner(thread_id, resource_id, create=not opts.read_only)
        wm_opts = opts.working_memory
        semantic = opts.semantic_recall.enabled and bool(query and query.strip()) and self.embedder is not None
        jobs: list[Any] = [
            records.thread_messages(self.storage, thread_id, resource_id)
            if opts.last_messages or semantic else _none(),
            self._stored_working_memory(resource_id, thread_id) if wm_opts.enabled else _none(),
        ]
        if semantic:
            assert query is not None
            # Up to last_messages hits may be excluded as already in the history: ask for that many more.
            jobs.append(recall_mod.candidates(
                self.storage, self.embedder, await self._vectors(), query, opts.semantic_recall,
                resource_id=resource_id, current_thread=thread_id,
                limit=opts.semantic_recall.top_k + opts.last_messages))
        results = await asyncio.gather(*jobs)
        all_messages: list[Message] = results[0] or []
        stored_wm: str | None = results[1]
        window = all_messages[-opts.last_messages:] if opts.last_messages else []
        history = window
        for processor in self.processors:
            history = processor.process(history)
        recalled: list[Message] = []
        select_recalled = None
        if semantic:
            hits, others = results[2]

            def select_recalled(exclude: set[str]) -> list[Message]:
                return recall_mod.select(hits, opts.semantic_recall, current_thread=thread_id,
                                         current_messages=all_messages, other_threads=others, exclude=exclude)

            recalled = select_recalled({m.id for m in window})
        # The system message is working memory only: recall changes every turn, so the agent places it after the
        # history (see voiceserver.runs.prompt), where it does not rewrite the prompt's cached prefix.
        system = working.system_block(wm_opts, stored_wm, opts.read_only) if wm_opts.enabled else None
        tool = working.tool_spec(wm_opts) if wm_opts.enabled and wm_opts.offers_tool and not opts.read_only \
            else None
        return MemoryContext(history=history, recalled=recalled,
                             working_memory=stored_wm if wm_opts.enabled else None,
                             system_message=system, working_memory_tool=tool, select_recalled=select_recalled)


async def _none() -> None:
    return None


def _date_range(value: Any) -> tuple[int | None, int | None]:
    """(start, end) in microseconds from a (start, end) tuple or {"start": ..., "end": ...}; end is exclusive."""
    if value is None:
        return None, None
    if isinstance(value, dict):
        start, end = value.get("start"), value.get("end")
    elif isinstance(value, tuple | list) and len(value) == 2:
        start, end = value
    else:
        raise MemoryStoreError("date_range must be (start, end) or {'start': ..., 'end': ...}", code="invalid_request")
    for v in (start, end):
        if v is not None and not isinstance(v, datetime):
            raise MemoryStoreError("date_range values must be datetimes", code="invalid_request")
    return (to_micros(start) if start else None, to_micros(end) if end else None)
