"""Tools: typed functions the model may call.

    class Weather(BaseModel):
        location: str

    async def get_weather(input: Weather, ctx: ToolContext) -> dict:
        return {"location": input.location, "temperature_c": 18}

    weather = create_tool(id="weather", description="Current weather for a city.", input_schema=Weather,
                          execute=get_weather)

or, from a typed function and its docstring:

    @tool
    async def weather(location: str, unit: Literal["c", "f"] = "c") -> dict:
        '''Current weather for a city.

        Args:
            location: The city name.
            unit: Celsius or Fahrenheit.
        '''

Arguments are validated against ``input_schema`` before ``execute`` runs; a failure, an exception or a timeout
becomes a tool error the model sees (with the pydantic message naming the field), never a crashed run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from ..runs.tool_context import ToolContext, ToolSuspended
from ..runs.values import describe_validation_error, to_jsonable
from .errors import ToolDefinitionError

__all__ = ["Tool", "ToolContext", "ToolOutcome", "ToolSuspended", "create_tool", "describe_validation_error",
           "to_jsonable", "tool"]

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what OpenAI-style function names allow
DEFAULT_TOOL_TIMEOUT_S = 30.0

Execute = Callable[[Any, "ToolContext"], Awaitable[Any]]


@dataclass(slots=True)
class ToolOutcome:
    """How a tool call ended. ``value`` is the JSON-able result, or the error message."""

    status: Literal["ok", "error", "denied", "suspended", "cancelled"]
    value: Any = None
    suspend_payload: Any = None

    @property
    def is_error(self) -> bool:
        return self.status in ("error", "cancelled")

    def model_content(self) -> str:
        """The text the model sees as the tool message."""
        if self.status == "ok":
            return self.value if isinstance(self.value, str) else json.dumps(self.value, ensure_ascii=False)
        if self.status == "denied":
            reason = f" Reason: {self.value}" if self.value else ""
            return f"The user declined this tool call; it was not run.{reason} Answer without it."
        if self.status == "cancelled":
            return "Error: the tool call was cancelled."
        return f"Error: {self.value}"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "value": self.value, "suspend_payload": self.suspend_payload}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolOutcome:
        return cls(data["status"], data.get("value"), data.get("suspend_payload"))


class Tool:
    """A tool: id, description, input schema and an async ``execute(input, ctx)``. Build with :func:`create_tool`."""

    def __init__(
        self,
        *,
        id: str,
        description: str,
        execute: Execute,
        input_schema: type[BaseModel] | dict[str, Any] | None = None,
        output_schema: type[BaseModel] | None = None,
        require_approval: bool = False,
        suspend_schema: type[BaseModel] | None = None,
        resume_schema: type[BaseModel] | None = None,
        timeout_s: float | None = DEFAULT_TOOL_TIMEOUT_S,
        cancel_on_interrupt: bool = True,
    ):
        if not isinstance(id, str) or not TOOL_NAME.fullmatch(id):
            raise ToolDefinitionError(f"tool id {id!r} must be 1-64 letters, digits, '_' or '-'")
        if not description or not description.strip():
            raise ToolDefinitionError(f"tool {id!r} needs a description: the model picks tools by it")
        if input_schema is not None and not _is_model(input_schema) and not isinstance(input_schema, dict):
            raise ToolDefinitionError(f"tool {id!r}: input_schema must be a pydantic model class or a JSON schema")
        if timeout_s is not None and timeout_s <= 0:
            raise ToolDefinitionError(f"tool {id!r}: timeout_s must be positive")
        self.id = id
        self.description = description.strip()
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.require_approval = require_approval
        self.suspend_schema = suspend_schema
        self.resume_schema = resume_schema
        self.timeout_s = timeout_s
        self.cancel_on_interrupt = cancel_on_interrupt
        self.execute: Execute = _as_two_arg_coroutine(execute, id)
        self._parameters_schema: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Tool(id={self.id!r})"

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as offered to the model."""
        if self.input_schema is None:
            return {"type": "object", "properties": {}}
        if isinstance(self.input_schema, dict):
            return self.input_schema
        if self._parameters_schema is None:
            # Built once: pydantic's schema generator is a cycle of bound methods (about a hundred objects for the
            # collector per call), and the tools are offered to the model on every turn. Shared, like a dict
            # input_schema above: readers copy before they change it (llm/grammar.py).
            schema = self.input_schema.model_json_schema()
            schema.pop("title", None)
            self._parameters_schema = schema
        return self._parameters_schema

    def parse_args(self, args: Any) -> Any:
        """Validate the model's arguments; raise ValueError with a message naming the bad field."""
        if not isinstance(args, dict):
            raise ValueError(f"arguments must be a JSON object, got {type(args).__name__}")
        if self.input_schema is None:
            return args
        if isinstance(self.input_schema, dict):
            missing = [k for k in self.input_schema.get("required", []) if k not in args]
            if missing:
                raise ValueError("; ".join(f"{k}: Field required" for k in missing))
            return args
        try:
            return self.input_schema.model_validate(args)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc)) from None

    def parse_resume_data(self, data: Any) -> Any:
        """Validate resume data against ``resume_schema`` (a ValueError names the field)."""
        if _is_model(self.resume_schema):
            try:
                return self.resume_schema.model_validate(data)
            except ValidationError as exc:
                raise ValueError(describe_validation_error(exc)) from None
        return data

    async def run(self, args: Any, ctx: ToolContext) -> ToolOutcome:
        """Validate, execute with the timeout, validate the output. Never raises except on cancellation."""
        try:
            parsed = self.parse_args(args)
        except ValueError as exc:
            return ToolOutcome("error", f"invalid arguments for tool {ctx.tool_name!r}: {exc}")
        timeout = asyncio.timeout(self.timeout_s)
        try:
            async with timeout:
                value = await self.execute(parsed, ctx)
        except ToolSuspended as sig:
            return ToolOutcome("suspended", suspend_payload=sig.payload)
        except TimeoutError:
            if ctx.suspended:
                return ToolOutcome("suspended", suspend_payload=ctx.suspend_payload)
            if timeout.expired():
                return ToolOutcome("error", f"tool {ctx.tool_name!r} timed out after {self.timeout_s:g}s")
            return ToolOutcome("error", f"tool {ctx.tool_name!r} failed: TimeoutError")
        except Exception as exc:  # noqa: BLE001 - a failing tool is a tool error the model sees
            if ctx.suspended:  # the tool caught our signal; the suspension still stands
                return ToolOutcome("suspended", suspend_payload=ctx.suspend_payload)
            return ToolOutcome("error", f"tool {ctx.tool_name!r} failed: {type(exc).__name__}: {exc}")
        if ctx.suspended:
            return ToolOutcome("suspended", suspend_payload=ctx.suspend_payload)
        if _is_model(self.output_schema):
            try:
                value = self.output_schema.model_validate(
                    value.model_dump() if isinstance(value, BaseModel) else value)
            except ValidationError as exc:
                return ToolOutcome("error", f"tool {ctx.tool_name!r} returned an invalid result: "
                                            f"{describe_validation_error(exc)}")
        return ToolOutcome("ok", to_jsonable(value))


def create_tool(
    id: str,
    description: str,
    input_schema: type[BaseModel] | dict[str, Any] | None = None,
    output_schema: type[BaseModel] | None = None,
    execute: Callable[..., Any] | None = None,
    require_approval: bool = False,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
    timeout_s: float | None = DEFAULT_TOOL_TIMEOUT_S,
    cancel_on_interrupt: bool = True,
) -> Tool:
    """Build a tool (Mastra's ``createTool``).

    ``execute(input, ctx)`` (or ``execute(input)``) may be async or sync; sync functions run in a worker thread so
    they never block the event loop (a thread cannot be cancelled: it finishes in the background).
    ``require_approval`` stops the run before the call until ``agent.approve_tool_call`` / ``decline_tool_call``.
    ``cancel_on_interrupt=False`` lets the call finish when the caller interrupts (its result is recorded).
    """
    if execute is None:
        raise ToolDefinitionError(f"tool {id!r} needs an execute function")
    return Tool(id=id, description=description, execute=execute, input_schema=input_schema,
                output_schema=output_schema, require_approval=require_approval, suspend_schema=suspend_schema,
                resume_schema=resume_schema, timeout_s=timeout_s, cancel_on_interrupt=cancel_on_interrupt)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    id: str | None = None,
    description: str | None = None,
    output_schema: type[BaseModel] | None = None,
    require_approval: bool = False,
    suspend_schema: type[BaseModel] | None = None,
    resume_schema: type[BaseModel] | None = None,
    timeout_s: float | None = DEFAULT_TOOL_TIMEOUT_S,
    cancel_on_interrupt: bool = True,
) -> Any:
    """Decorator: build a :class:`Tool` from a typed function; the docstring gives the description.

    Parameters become the input schema (with descriptions from a Google-style ``Args:`` section). A parameter named
    ``ctx`` (or annotated :class:`ToolContext`) receives the tool context. A function whose only parameter is a
    pydantic model uses that model as the input schema. Use as ``@tool`` or ``@tool(require_approval=True)``.
    """

    def build(func: Callable[..., Any], localns: dict[str, Any]) -> Tool:
        tool_id = id or func.__name__
        summary, arg_docs = _parse_docstring(inspect.getdoc(func) or "")
        desc = description or summary
        if not desc:
            raise ToolDefinitionError(f"tool {tool_id!r} needs a description: add a docstring or description=")
        input_schema, call = _signature_to_schema(func, tool_id, arg_docs, localns)
        out = output_schema
        if out is None:
            ret = _type_hints(func, tool_id, localns).get("return")
            out = ret if _is_model(ret) else None
        return Tool(id=tool_id, description=desc, execute=call, input_schema=input_schema, output_schema=out,
                    require_approval=require_approval, suspend_schema=suspend_schema, resume_schema=resume_schema,
                    timeout_s=timeout_s, cancel_on_interrupt=cancel_on_interrupt)

    # Names in string annotations (``from __future__ import annotations``) may be local to the defining function:
    # resolve them in the namespace where the decorator is applied.
    if fn is not None:
        return build(fn, dict(sys._getframe(1).f_locals))
    return lambda func: build(func, dict(sys._getframe(1).f_locals))


# --- helpers -------------------------------------------------------------------------------------------------------


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _as_two_arg_coroutine(fn: Callable[..., Any], tool_id: str) -> Execute:
    """Normalise ``execute`` to ``async (input, ctx)``: accept one-argument and sync functions."""
    if not callable(fn):
        raise ToolDefinitionError(f"tool {tool_id!r}: execute must be callable")
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
        params = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        has_varargs = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    except (TypeError, ValueError):
        params, has_varargs = [], True
    takes_ctx = has_varargs or len(params) >= 2
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    async def execute(input: Any, ctx: Any) -> Any:
        args = (input, ctx) if takes_ctx else (input,)
        if is_async:
            return await fn(*args)
        result = await asyncio.to_thread(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    execute.__wrapped__ = fn  # type: ignore[attr-defined]
    return execute


def _type_hints(func: Callable[..., Any], tool_id: str, localns: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, localns=localns, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - NameError, TypeError...: all mean an unusable annotation
        raise ToolDefinitionError(f"tool {tool_id!r}: cannot resolve type hints: {exc}") from None


def _signature_to_schema(
    func: Callable[..., Any], tool_id: str, arg_docs: dict[str, str], localns: dict[str, Any]
) -> tuple[type[BaseModel] | None, Callable[..., Any]]:
    hints = _type_hints(func, tool_id, localns)
    ctx_name: str | None = None
    fields: dict[str, Any] = {}
    names: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_id!r}: *args / **kwargs are not supported; name each argument")
        annotation = hints.get(name, Any)
        if name in ("ctx", "context") or annotation is ToolContext:
            ctx_name = name
            continue
        if isinstance(param.default, FieldInfo):  # `people: int = Field(ge=1)`: keep its constraints
            info = param.default
            if info.description is None and arg_docs.get(name):
                info = FieldInfo.merge_field_infos(info, description=arg_docs[name])
            fields[name] = (annotation, info)
        else:
            default = ... if param.default is param.empty else param.default
            fields[name] = (annotation, Field(default, description=arg_docs.get(name)))
        names.append(name)
    is_async = inspect.iscoroutinefunction(func)

    if len(names) == 1 and _is_model(hints.get(names[0])):
        model_param = names[0]
        input_schema: type[BaseModel] | None = hints[model_param]

        def kwargs_of(input: Any, ctx: Any) -> dict[str, Any]:
            out = {model_param: input}
            if ctx_name:
                out[ctx_name] = ctx
            return out
    else:
        camel = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", tool_id) if part) or "Tool"
        input_schema = create_model(f"{camel}Input", __config__=ConfigDict(extra="ignore"), **fields) \
            if fields else None

        def kwargs_of(input: Any, ctx: Any) -> dict[str, Any]:
            out = {n: getattr(input, n) for n in names} if isinstance(input, BaseModel) else dict(input or {})
            if ctx_name:
                out[ctx_name] = ctx
            return out

    async def call(input: Any, ctx: Any) -> Any:
        kwargs = kwargs_of(input, ctx)
        if is_async:
            return await func(**kwargs)
        return await asyncio.to_thread(lambda: func(**kwargs))

    call.__wrapped__ = func  # type: ignore[attr-defined]
    return input_schema, call


_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_PARAM_REST = re.compile(r"^\s*:param\s+(?:\S+\s+)?(\w+)\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(summary, {argument: description}) from a Google-style or reST docstring."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in doc.splitlines():
        rest = _PARAM_REST.match(line)
        if rest:
            current = rest.group(1)
            args[current] = rest.group(2).strip()
            section = "rest"
            continue
        header = _SECTION.match(line)
        if header:
            section = header.group(1).lower()
            current = None
            continue
        if section is None:
            summary.append(line.strip())
        elif section in ("args", "arguments", "parameters", "params"):
            indent = len(line) - len(line.lstrip())
            match = _ARG_LINE.match(line)
            if match and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = match.group(1).lstrip("*")
                args[current] = match.group(3).strip()
            elif current and line.strip():  # a continuation line, indented deeper than the argument name
                args[current] = (args[current] + " " + line.strip()).strip()
        elif section == "rest" and current and line.strip() and not line.lstrip().startswith(":"):
            args[current] = (args[current] + " " + line.strip()).strip()
    text = "\n".join(summary).strip()
    text = re.sub(r"\n\s*\n", "\n\n", text)
    return text, args
