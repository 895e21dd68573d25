"""JSON-schema grammars for the local model: the tool decision object and its incremental parser.

With tools on offer, the local model's reply is constrained (llama.cpp GBNF grammar built from a JSON schema) to one
decision object::

    {"tool": "<tool name>", "arguments": {...that tool's parameters...}}   # one branch per offered tool
    {"tool": "none"}                                                      # only when tool_choice is "auto"

so a tool call is always valid JSON of the tool's schema. :class:`DecisionParser` reads the decision as it streams,
so generation can stop as soon as the tool name is known to be "none".
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any

from ..engines import ProviderError
from .base import ToolSpec
from .chat_format import NONE_TOOL

_NAME_RE = re.compile(r'\s*\{\s*"tool"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _object_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A tool's parameter schema as an object schema (an empty schema means "any object")."""
    if not parameters:
        return {"type": "object"}
    schema = dict(parameters)
    if "type" not in schema and "properties" in schema:
        schema["type"] = "object"
    return schema


def _hoist_defs(schema: dict[str, Any], defs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Move a sub-schema's ``$defs`` to the root (renamed per tool) and rewrite its ``$ref``s to match."""
    local = schema.get("$defs") or schema.get("definitions") or {}
    if not local:
        return schema
    renames = {name: f"{prefix}{name}" for name in local}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("$defs", "definitions"):
                    continue
                if key == "$ref" and isinstance(value, str):
                    for marker in ("#/$defs/", "#/definitions/"):
                        if value.startswith(marker) and value[len(marker):] in renames:
                            value = "#/$defs/" + renames[value[len(marker):]]
                out[key] = rewrite(value)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, sub in local.items():
        defs[renames[name]] = rewrite(sub)
    return rewrite(schema)


def decision_schema(tools: list[ToolSpec], tool_choice: str) -> dict[str, Any]:
    """The JSON schema of the decision object for ``tools`` under ``tool_choice`` (auto | required | a tool name)."""
    if tool_choice == "none":
        raise ValueError("tool_choice 'none' has no decision")
    if any(t.name == NONE_TOOL for t in tools) and tool_choice == "auto":
        raise ProviderError("invalid_request", f"a tool may not be named {NONE_TOOL!r} on the local model")
    offered = tools
    if tool_choice not in ("auto", "required"):
        offered = [t for t in tools if t.name == tool_choice]
        if not offered:
            known = ", ".join(t.name for t in tools)
            raise ProviderError("invalid_request", f"tool_choice {tool_choice!r} is not one of the tools: {known}")
    if not offered:
        raise ProviderError("invalid_request", f"tool_choice {tool_choice!r} needs at least one tool")
    defs: dict[str, Any] = {}
    branches: list[dict[str, Any]] = []
    for i, tool in enumerate(offered):
        params = _hoist_defs(_object_schema(tool.parameters), defs, f"t{i}_")
        branches.append({"type": "object", "properties": {"tool": {"const": tool.name}, "arguments": params},
                         "required": ["tool", "arguments"], "additionalProperties": False})
    if tool_choice == "auto":
        branches.append({"type": "object", "properties": {"tool": {"const": NONE_TOOL}}, "required": ["tool"],
                         "additionalProperties": False})
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


class DecisionParser:
    """Reads a streamed decision object. ``tool`` is known as soon as its string closes; ``result()`` at the end."""

    def __init__(self) -> None:
        self.text = ""
        self.tool: str | None = None

    def feed(self, piece: str) -> str | None:
        """Add generated text; returns the tool name once it is known (None before)."""
        self.text += piece
        if self.tool is None:
            match = _NAME_RE.match(self.text)
            if match:
                self.tool = json.loads('"' + match.group(1) + '"')
        return self.tool

    def result(self) -> tuple[str, dict[str, Any]]:
        """(tool name, arguments) of a complete decision; ProviderError if the text is not one."""
        try:
            # strict=False: the JSON-schema grammar lets raw control characters into strings.
            obj = json.loads(self.text, strict=False)
        except json.JSONDecodeError as exc:
            raise ProviderError("llm_invalid_output",
                                f"the tool decision is not complete JSON (cut off at the token limit?): "
                                f"{self.text[:200]!r}") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("tool"), str):
            raise ProviderError("llm_invalid_output", f"not a tool decision: {self.text[:200]!r}")
        args = obj.get("arguments", {})
        return obj["tool"], args if isinstance(args, dict) else {"__raw__": args}


class GrammarCache:
    """Compiled grammars by schema (bounded LRU): building GBNF from a schema costs a few milliseconds."""

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, schema: dict[str, Any]) -> Any:
        """A ``llama_cpp.LlamaGrammar`` for ``schema``; ProviderError("llm_unsupported_schema") if none can be built."""
        # Key on the exact text: property order matters (the grammar emits properties in schema order).
        key = json.dumps(schema)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        from llama_cpp import LlamaGrammar

        try:
            grammar = LlamaGrammar.from_json_schema(key, verbose=False)
        except Exception as exc:  # the converter raises plain exceptions for what it cannot do
            raise ProviderError("llm_unsupported_schema",
                                f"cannot build a grammar from this JSON schema: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._items[key] = grammar
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return grammar
