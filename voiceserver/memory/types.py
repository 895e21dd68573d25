"""Values of the memory package: messages, threads, recall results, errors.

Times are timezone-aware UTC datetimes in Python and int64 microseconds since the epoch in LanceDB.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

MessageType = Literal["text", "tool-call", "tool-result"]
MESSAGE_TYPES: tuple[str, ...] = ("text", "tool-call", "tool-result")
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
MAX_CONTENT_CHARS = 200_000  # one message; longer text is a caller bug, not a conversation


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_micros(value: datetime) -> int:
    """A datetime as int64 microseconds since the epoch (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


_GENERATED_ID = re.compile(r"msg_[0-9a-f]{32}")


def is_generated_message_id(value: str) -> bool:
    """True for ids made by :func:`new_message_id` (random: never stored before unless re-saved)."""
    return bool(_GENERATED_ID.fullmatch(value))


class MemoryStoreError(Exception):
    """Memory could not be used: storage unreachable or not writable, bad message, bad option.

    ``code`` is a stable string a client can act on; the message says what to do.
    """

    code = "memory_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class ThreadNotFoundError(MemoryStoreError):
    code = "thread_not_found"

    def __init__(self, thread_id: str):
        super().__init__(f"Thread {thread_id} not found")
        self.thread_id = thread_id


class ThreadOwnerError(MemoryStoreError):
    """A thread used with a resource other than its owner. A thread's owner never changes."""

    code = "thread_owner_mismatch"

    def __init__(self, thread_id: str, owner: str, queried: str):
        super().__init__(f"Thread {thread_id} is for resource {owner} but resource {queried} was queried")
        self.thread_id = thread_id
        self.owner = owner
        self.queried = queried


class WorkingMemoryError(MemoryStoreError):
    code = "invalid_working_memory"


class ReadOnlyMemoryError(MemoryStoreError):
    code = "memory_read_only"

    def __init__(self) -> None:
        super().__init__("memory is read_only: nothing can be written")


@dataclass
class Message:
    """One message of a conversation.

    ``type`` is "text", "tool-call" or "tool-result". A tool call carries ``{"tool_call_id", "tool_name", "args"}``
    in ``metadata`` and a tool result ``{"tool_call_id", "tool_name", "result"}``; ``content`` may hold a short
    readable form of either (it is what semantic recall embeds).
    """

    role: str
    content: str
    thread_id: str | None = None
    resource_id: str | None = None
    id: str = field(default_factory=new_message_id)
    created_at: datetime = field(default_factory=utc_now)
    type: str = "text"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (created_at as ISO 8601)."""
        return {"id": self.id, "role": self.role, "content": self.content, "type": self.type,
                "thread_id": self.thread_id, "resource_id": self.resource_id,
                "created_at": self.created_at.isoformat(), "metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        """Build a message from a dict with ``role`` and ``content`` (other keys optional)."""
        if not isinstance(data, dict):
            raise MemoryStoreError(f"a message must be a dict or a Message, got {type(data).__name__}",
                                   code="invalid_message")
        unknown = set(data) - {"id", "role", "content", "type", "thread_id", "resource_id", "created_at", "metadata"}
        if unknown:
            raise MemoryStoreError(f"unknown message fields: {', '.join(sorted(unknown))}", code="invalid_message")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if v is not None}
        created = kwargs.get("created_at")
        if isinstance(created, str):
            try:
                kwargs["created_at"] = datetime.fromisoformat(created)
            except ValueError as exc:
                raise MemoryStoreError(f"invalid created_at {created!r}", code="invalid_message") from exc
        elif isinstance(created, int | float):
            kwargs["created_at"] = datetime.fromtimestamp(created, tz=UTC)
        if "role" not in kwargs or "content" not in kwargs:
            raise MemoryStoreError("a message needs a role and a content", code="invalid_message")
        return cls(**kwargs)


@dataclass
class Thread:
    """A conversation. ``resource_id`` (its owner, the caller) never changes."""

    id: str
    resource_id: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "resource_id": self.resource_id, "title": self.title, "metadata": self.metadata,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


@dataclass
class ThreadPage:
    """One page of a caller's threads."""

    threads: list[Thread]
    total: int
    page: int
    per_page: int

    @property
    def has_more(self) -> bool:
        return (self.page + 1) * self.per_page < self.total


@dataclass
class RecallResult:
    """Messages of a thread, chronological. With a vector search string, the semantic hits are merged in."""

    messages: list[Message]
    total: int
    page: int = 0
    per_page: int | None = None

    @property
    def has_more(self) -> bool:
        return self.per_page is not None and (self.page + 1) * self.per_page < self.total


@dataclass
class ClonedThread:
    thread: Thread
    messages: list[Message]


@dataclass
class SearchHit:
    """A semantic search result over a caller's entries and messages. ``score`` is cosine similarity."""

    kind: Literal["entry", "message"]
    score: float
    text: str
    namespace: str | None = None
    key: str | None = None
    value: Any = None
    message: Message | None = None


@dataclass
class MemoryContext:
    """What an agent needs from memory for one turn (see :meth:`Memory.prepare`). ``system_message`` is the
    working-memory block (None without working memory); ``recalled`` are laid out by the agent: they exclude
    ``history``, and ``select_recalled(exclude)`` picks them again (no further query) for an agent that sends only part
    of ``history``, so what it leaves out can be recalled instead of being lost."""

    history: list[Message]
    recalled: list[Message]
    working_memory: str | None
    system_message: str | None
    working_memory_tool: dict[str, Any] | None
    select_recalled: Callable[[set[str]], list[Message]] | None = field(default=None, repr=False, compare=False)
