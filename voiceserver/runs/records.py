"""Runs and Memory: what an agent or network run reads before a turn and the records it saves.

The interface used (``voiceserver.memory.Memory`` implements it):

- ``await memory.prepare(resource_id=, thread_id=, query=)`` -> an object with ``history`` and ``recalled`` (lists of
  messages), ``working_memory``, ``system_message`` and ``working_memory_tool`` (``{"name", "description",
  "parameters"}`` or None). Memory's own processors are applied inside ``prepare``.
- ``await memory.save_messages([...])`` with dicts ``{id, role, content, type, thread_id, resource_id, created_at,
  metadata}``; ``type`` is "text", "tool-call" or "tool-result".
- ``await memory.update_working_memory(thread_id, resource_id, working_memory=...)``.
- ``await memory.after_turn(resource_id=, thread_id=, messages=[...], model=...)``.
- optionally ``await memory.delete_messages(ids)`` (used to correct a reply the caller only partly heard).

A tool call is saved as one assistant message per call (``type="tool-call"``, metadata ``{tool_call_id, tool_name,
args}``, content a readable ``name({args})``) and its result as a ``role="tool"`` message (``type="tool-result"``,
metadata ``{tool_call_id, tool_name, result, is_error}``, content the text the model saw, capped), so history
filters can drop them by tool name.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ..llm.base import ChatMessage, ToolCall
from .messages import sanitize_tool_pairs

MAX_TOOL_CONTENT_CHARS = 8000  # a tool message in history: enough for the model, bounded for the prompt
MAX_RESULT_METADATA_CHARS = 20_000


def _cap(text: str, limit: int = MAX_TOOL_CONTENT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_field(message: Any, name: str, default: Any = None) -> Any:
    """A field of a memory message, whether it is a Message object or a dict."""
    if isinstance(message, dict):
        return message.get(name, default)
    return getattr(message, name, default)


class MemoryRecords:
    """Builds the dict records of one turn, with strictly increasing timestamps so their order survives storage."""

    def __init__(self, resource_id: str, thread_id: str):
        self.resource_id = resource_id
        self.thread_id = thread_id
        self._last = 0.0

    def _stamp(self) -> float:
        now = max(time.time(), self._last + 1e-6)
        self._last = now
        return now

    def make(self, role: str, content: str, type: str = "text", metadata: dict[str, Any] | None = None) -> dict:
        return {"id": "msg_" + uuid.uuid4().hex[:24], "role": role, "content": content, "type": type,
                "thread_id": self.thread_id, "resource_id": self.resource_id, "created_at": self._stamp(),
                "metadata": metadata or {}}

    def from_input(self, message: ChatMessage) -> list[dict]:
        if message.role == "assistant" and message.tool_calls:
            out = [self.make("assistant", message.content, "text")] if message.content else []
            return out + [self.tool_call(c.id, c.name, c.arguments) for c in message.tool_calls]
        if message.role == "tool":
            return [self.tool_result(message.tool_call_id or "", message.name or "", message.content or "",
                                     message.content or "", False)]
        if message.role == "system":
            return []  # system prompts belong to the agent, not to the conversation
        return [self.make(message.role, message.content or "")]

    def tool_call(self, call_id: str, name: str, args: dict[str, Any]) -> dict:
        data = {"tool_call_id": call_id, "tool_name": name, "args": args}
        readable = f"{name}({json.dumps(args, ensure_ascii=False)})"
        return self.make("assistant", _cap(readable), "tool-call", data)

    def tool_result(self, call_id: str, name: str, content: str, result: Any, is_error: bool,
                    extra: dict[str, Any] | None = None) -> dict:
        meta = {"tool_call_id": call_id, "tool_name": name, "is_error": is_error, **(extra or {})}
        if len(json.dumps(result, ensure_ascii=False, default=str)) <= MAX_RESULT_METADATA_CHARS:
            meta["result"] = result
        return self.make("tool", _cap(content), "tool-result", meta)


def to_storage(record: dict[str, Any]) -> dict[str, Any]:
    """A record as handed to ``save_messages`` (created_at as an aware datetime)."""
    out = {k: v for k, v in record.items() if k != "saved" and not k.startswith("_")}
    out["created_at"] = datetime.fromtimestamp(record["created_at"], UTC)
    return out


def history_to_chat(messages: list[Any]) -> list[ChatMessage]:
    """Memory messages (Message objects or dicts) as model messages, with tool calls regrouped and paired."""
    out: list[ChatMessage] = []
    for m in messages:
        role = message_field(m, "role")
        kind = message_field(m, "type", "text") or "text"
        content = message_field(m, "content", "") or ""
        meta = message_field(m, "metadata", None) or {}
        if kind == "tool-call":
            data = meta if meta.get("tool_call_id") else _json_or_empty(content)
            call = ToolCall(str(data.get("tool_call_id", "")), str(data.get("tool_name", "")),
                            data.get("args") if isinstance(data.get("args"), dict) else {})
            if not call.id or not call.name:
                continue
            if out and out[-1].role == "assistant" and out[-1].tool_calls:
                out[-1].tool_calls.append(call)  # parallel calls of one step go back into one message
            else:
                out.append(ChatMessage("assistant", None, tool_calls=[call]))
        elif kind == "tool-result" or role == "tool":
            out.append(ChatMessage("tool", content, tool_call_id=meta.get("tool_call_id"),
                                   name=meta.get("tool_name")))
        elif role in ("user", "assistant", "system"):
            out.append(ChatMessage(role, content))
    return sanitize_tool_pairs(out)


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}
