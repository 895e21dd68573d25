"""A small in-process Memory with the interface the agent uses (no tests here; imported by the agent tests).

It stands in for voiceserver.memory.Memory where a test is about the agent's side of the contract: what it reads in
prepare, what it saves and in which order, working memory updates, after_turn, and corrections of heard text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voiceserver.runs.store import InMemoryRunStore


@dataclass
class FakeMemoryContext:
    history: list[dict] = field(default_factory=list)
    recalled: list[dict] = field(default_factory=list)
    working_memory: str | None = None
    system_message: str | None = None
    working_memory_tool: dict | None = None


class FakeMemory:
    """Messages in a list; working memory per resource; records every call."""

    def __init__(self, *, last_messages: int = 20, working_memory: bool = False, storage: Any = None,
                 history_filter: Any = None):
        self.last_messages = last_messages
        self.working_memory_enabled = working_memory
        self.storage = storage if storage is not None else InMemoryRunStore()
        self.history_filter = history_filter  # stands in for memory processors (applied inside prepare)
        self.messages: list[dict] = []
        self.working: dict[str, str] = {}
        self.prepare_calls: list[dict] = []
        self.save_calls: list[list[dict]] = []
        self.after_turn_calls: list[dict] = []
        self.deleted: list[str] = []

    def thread(self, thread_id: str) -> list[dict]:
        return [m for m in self.messages if m["thread_id"] == thread_id]

    async def prepare(self, *, resource_id: str, thread_id: str, query: str) -> FakeMemoryContext:
        self.prepare_calls.append({"resource_id": resource_id, "thread_id": thread_id, "query": query})
        history = [m for m in self.thread(thread_id) if m["resource_id"] == resource_id][-self.last_messages:]
        if self.history_filter is not None:
            history = self.history_filter(history)
        words = {w.lower().strip("?.!,") for w in query.split() if len(w) > 3}
        recalled = [m for m in self.messages if m["resource_id"] == resource_id and m["thread_id"] != thread_id
                    and words & {w.lower().strip("?.!,") for w in m["content"].split()}]
        wm = self.working.get(resource_id)
        tool = None
        if self.working_memory_enabled:
            tool = {"name": "update-working-memory", "description": "Save facts about the user.",
                    "parameters": {"type": "object", "properties": {"memory": {"type": "string"}},
                                   "required": ["memory"]}}
        system = f"Working memory:\n{wm}" if wm else None
        return FakeMemoryContext(history, recalled, wm, system, tool)

    async def save_messages(self, messages: list[dict]) -> None:
        batch = [dict(m) for m in messages]
        self.save_calls.append(batch)
        self.messages.extend(batch)

    async def delete_messages(self, ids: list[str]) -> None:
        self.deleted.extend(ids)
        self.messages = [m for m in self.messages if m["id"] not in ids]

    async def update_working_memory(self, thread_id: str, resource_id: str, working_memory: Any = None) -> None:
        self.working[resource_id] = working_memory

    async def after_turn(self, *, resource_id: str, thread_id: str, messages: list[dict], model: Any) -> None:
        self.after_turn_calls.append({"resource_id": resource_id, "thread_id": thread_id,
                                      "messages": [m["id"] for m in messages], "model": model})


async def streamed_run(agent: Any, message: str, **options: Any) -> tuple[str, Any, list[Any]]:
    """Stream one agent run: (the text its text-delta chunks carried, its result, all its chunks)."""
    stream = agent.stream(message, **options)
    chunks = [c async for c in stream]
    result = await stream.result()
    return "".join(c.payload["text"] for c in chunks if c.type == "text-delta"), result, chunks
