"""Conversation messages: what callers pass in, what suspended runs persist, and keeping tool pairs consistent."""

from __future__ import annotations

import json
from typing import Any

from ..llm.base import ChatMessage, ToolCall
from .errors import AgentError

ROLES = ("system", "user", "assistant", "tool")
MAX_INPUT_MESSAGES = 1000


def normalize_input(value: Any) -> list[ChatMessage]:
    """A str, or a list of ``{"role", "content"}`` dicts / ChatMessage objects, as ChatMessages.

    Dicts may also use the OpenAI shapes for tool calls (``tool_calls``, ``tool_call_id``).
    """
    if isinstance(value, str):
        return [ChatMessage("user", value)]
    if isinstance(value, ChatMessage):
        return [value]
    if isinstance(value, dict):
        return [_from_input_dict(value, 0)]
    if not isinstance(value, list | tuple):
        raise AgentError("invalid_input", f"input must be a string or a list of messages, not {type(value).__name__}")
    if not value:
        raise AgentError("invalid_input", "input is an empty list of messages")
    if len(value) > MAX_INPUT_MESSAGES:
        raise AgentError("invalid_input", f"input has {len(value)} messages; at most {MAX_INPUT_MESSAGES} allowed")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, ChatMessage):
            if item.role not in ROLES:
                raise AgentError("invalid_input", f"message {i}: unknown role {item.role!r}")
            out.append(item)
        elif isinstance(item, dict):
            out.append(_from_input_dict(item, i))
        else:
            raise AgentError("invalid_input", f"message {i} must be a dict or ChatMessage, not {type(item).__name__}")
    return out


def _content_text(content: Any, index: int) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise AgentError("invalid_input", f"message {index}: content must be a string")


def _from_input_dict(item: dict[str, Any], index: int) -> ChatMessage:
    role = item.get("role")
    if role not in ROLES:
        raise AgentError("invalid_input", f"message {index}: role must be one of {', '.join(ROLES)}, got {role!r}")
    calls = None
    if item.get("tool_calls"):
        calls = []
        for raw in item["tool_calls"]:
            fn = raw.get("function", raw)
            args = fn.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args or "{}")
                except json.JSONDecodeError:
                    args = {}
            calls.append(ToolCall(id=str(raw.get("id") or ToolCall.new_id()), name=str(fn.get("name", "")),
                                  arguments=args if isinstance(args, dict) else {}))
    return ChatMessage(role, _content_text(item.get("content"), index), tool_calls=calls,
                       tool_call_id=item.get("tool_call_id"), name=item.get("name"))


def message_to_json(message: ChatMessage) -> dict[str, Any]:
    """A ChatMessage as plain JSON (for run snapshots)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


def message_from_json(data: dict[str, Any]) -> ChatMessage:
    calls = [ToolCall(c["id"], c["name"], c.get("arguments") or {}) for c in data.get("tool_calls") or []] or None
    return ChatMessage(data["role"], data.get("content"), tool_calls=calls, tool_call_id=data.get("tool_call_id"),
                       name=data.get("name"))


def sanitize_tool_pairs(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Drop tool calls that have no result and results that have no call.

    A history window or an interrupted turn can cut between an assistant tool call and its result; providers reject
    such a conversation, so the unmatched half goes.
    """
    result_ids = {m.tool_call_id for m in messages if m.role == "tool" and m.tool_call_id}
    call_ids: set[str] = set()
    out: list[ChatMessage] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            kept = [c for c in m.tool_calls if c.id in result_ids]
            call_ids.update(c.id for c in kept)
            if kept:
                out.append(ChatMessage("assistant", m.content, tool_calls=kept, name=m.name))
            elif m.content:
                out.append(ChatMessage("assistant", m.content, name=m.name))
        elif m.role == "tool":
            if m.tool_call_id in call_ids:
                out.append(m)
        else:
            out.append(m)
    return out


def last_user_text(messages: list[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role == "user" and m.content:
            return m.content
    return ""
