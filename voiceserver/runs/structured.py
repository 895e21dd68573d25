"""Structured output: the options, the JSON schema sent to the model, partial parsing while streaming, validation.

    result = await agent.generate("...", structured_output={"schema": Recipe, "error_strategy": "fallback",
                                                           "fallback_value": Recipe(name="unknown")})
    result.object  # a Recipe

``error_strategy``: "strict" (default) makes a non-conforming answer an error (the run ends with finish_reason
"error"); "warn" logs a warning and leaves ``result.object`` None; "fallback" sets ``result.object`` to
``fallback_value``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .errors import AgentError, StructuredOutputError
from .values import describe_validation_error, to_jsonable

ErrorStrategy = Literal["strict", "warn", "fallback"]
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


@dataclass(slots=True)
class StructuredOutput:
    """Parsed ``structured_output`` option."""

    schema: type[BaseModel] | dict[str, Any]
    error_strategy: ErrorStrategy = "strict"
    fallback_value: Any = None

    @classmethod
    def parse(cls, option: Any) -> StructuredOutput | None:
        """Accept ``{"schema": Model, ...}``, a bare pydantic model class, or None."""
        if option is None or isinstance(option, StructuredOutput):
            return option
        if isinstance(option, type) and issubclass(option, BaseModel):
            return cls(option)
        if not isinstance(option, dict) or "schema" not in option:
            raise AgentError("invalid_option", "structured_output must be {'schema': Model, 'error_strategy': ...}")
        unknown = set(option) - {"schema", "error_strategy", "fallback_value"}
        if unknown:
            raise AgentError("invalid_option", f"unknown structured_output keys: {', '.join(sorted(unknown))}")
        schema = option["schema"]
        if not (isinstance(schema, dict) or (isinstance(schema, type) and issubclass(schema, BaseModel))):
            raise AgentError("invalid_option", "structured_output schema must be a pydantic model or a JSON schema")
        strategy = option.get("error_strategy", "strict")
        if strategy not in ("strict", "warn", "fallback"):
            raise AgentError("invalid_option",
                             f"error_strategy {strategy!r}: allowed values are 'strict', 'warn', 'fallback'")
        if strategy == "fallback" and "fallback_value" not in option:
            raise AgentError("invalid_option", "error_strategy 'fallback' needs a fallback_value")
        return cls(schema, strategy, option.get("fallback_value"))

    def json_schema(self) -> dict[str, Any]:
        if isinstance(self.schema, dict):
            return self.schema
        return self.schema.model_json_schema()

    def validate(self, text: str) -> Any:
        """The validated object from the model's text; StructuredOutputError says what is wrong."""
        body = strip_fences(text)
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise StructuredOutputError(f"the answer is not valid JSON: {exc.msg} at position {exc.pos}",
                                        raw_text=text) from None
        if isinstance(self.schema, dict):
            if not isinstance(data, dict) and self.schema.get("type") == "object":
                raise StructuredOutputError("the answer is not a JSON object", raw_text=text)
            missing = [k for k in self.schema.get("required", []) if isinstance(data, dict) and k not in data]
            if missing:
                raise StructuredOutputError("; ".join(f"{k}: Field required" for k in missing), raw_text=text)
            return data
        try:
            return self.schema.model_validate(data)
        except ValidationError as exc:
            raise StructuredOutputError(
                f"the answer does not match {self.schema.__name__}: {describe_validation_error(exc)}", raw_text=text
            ) from None

    def object_json(self, obj: Any) -> Any:
        return to_jsonable(obj)

    def persistable(self) -> dict[str, Any] | None:
        """What a suspended run keeps of this option (the schema by import path when it has one)."""
        path = None
        if isinstance(self.schema, type):
            module, qual = self.schema.__module__, self.schema.__qualname__
            if "<locals>" not in qual:
                path = f"{module}:{qual}"
        try:
            fallback = json.loads(json.dumps(to_jsonable(self.fallback_value)))
        except (TypeError, ValueError):
            fallback = None
        schema_json = self.schema if isinstance(self.schema, dict) else None
        return {"schema_path": path, "schema": schema_json, "error_strategy": self.error_strategy,
                "fallback_value": fallback}


def strip_fences(text: str) -> str:
    """Small models often wrap JSON in a ```json fence; take what is inside."""
    match = _FENCE.match(text)
    return match.group(1) if match else text.strip()


def parse_partial_json(text: str) -> Any:
    """Best-effort value of a JSON prefix (``{"name": "Pa`` -> ``{"name": "Pa"}``); None when nothing parses yet.

    A single pass tracks open containers and whether a string is an object key; the prefix is then cut back to the
    last complete element (keeping an open string value) and the open containers are closed.
    """
    text = text.strip()
    if text.startswith("```"):  # an opening fence, maybe not closed yet
        text = re.sub(r"^```(?:json|JSON)?\s*", "", text)
        text = text.removesuffix("```").rstrip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    stack: list[list[Any]] = []  # [bracket, expecting_key]
    safe_cut = 0  # text[:safe_cut] + closers(safe_stack) is valid
    safe_stack: list[str] = []
    in_string = escape = False
    string_is_key = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
                if not string_is_key:
                    safe_cut, safe_stack = i + 1, [f[0] for f in stack]
            i += 1
            continue
        if ch == '"':
            in_string = True
            string_is_key = bool(stack) and stack[-1][0] == "{" and stack[-1][1]
        elif ch in "{[":
            stack.append([ch, ch == "{"])
            safe_cut, safe_stack = i + 1, [f[0] for f in stack]
        elif ch in "}]":
            if stack:
                stack.pop()
            safe_cut, safe_stack = i + 1, [f[0] for f in stack]
        elif ch == ":":
            if stack:
                stack[-1][1] = False
        elif ch == ",":
            if stack and stack[-1][0] == "{":
                stack[-1][1] = True
        elif ch not in " \t\r\n":
            # A literal or number: complete when the next delimiter arrives.
            j = i
            while j < n and text[j] not in ",}] \t\r\n":
                j += 1
            if j < n:
                safe_cut, safe_stack = j, [f[0] for f in stack]
            i = j
            continue
        i += 1
    candidates = []
    if in_string and not string_is_key:
        body = text[:n]
        if escape:
            body = body[:-1]
        body = re.sub(r"\\u[0-9a-fA-F]{0,3}$", "", body)
        candidates.append(body + '"' + _closers([f[0] for f in stack]))
    elif not in_string and stack:
        candidates.append(text.rstrip() + _closers([f[0] for f in stack]))  # a trailing number
    candidates.append(text[:safe_cut] + _closers(safe_stack))
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def _closers(stack: list[str]) -> str:
    return "".join("}" if b == "{" else "]" for b in reversed(stack))
