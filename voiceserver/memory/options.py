"""Memory options: what an agent remembers and how. Built from a plain dict (as in a settings file) or given as
dataclasses.

    Memory(options={"last_messages": 10,
                    "semantic_recall": {"top_k": 3, "message_range": 2, "scope": "resource"},
                    "working_memory": {"enabled": True, "scope": "resource", "template": "# User\\n- Name:\\n"},
                    "generate_title": False, "read_only": False})
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .types import MemoryStoreError

Scope = Literal["thread", "resource"]

DEFAULT_TEMPLATE = """# User
- Name:
- Location:
- Interests:
- Preferences:
"""


@dataclass
class SemanticRecallOptions:
    """Semantic recall: the ``top_k`` most similar earlier messages, each with ``message_range`` neighbours
    before and after it in its own thread, from this thread or from all the caller's threads (``scope``).
    ``threshold`` is a minimum cosine similarity (0..1); None keeps every hit. ``exchange``: instead of
    ``message_range`` neighbours, each hit comes with the other half of its exchange (a question with the reply
    that followed it, a reply with the question before it): what a voice prompt needs, in fewer tokens."""

    enabled: bool = True
    top_k: int = 3
    message_range: int | dict[str, int] = 2
    scope: Scope = "resource"
    threshold: float | None = None
    exchange: bool = False

    @property
    def before(self) -> int:
        return self.message_range["before"] if isinstance(self.message_range, dict) else self.message_range

    @property
    def after(self) -> int:
        return self.message_range["after"] if isinstance(self.message_range, dict) else self.message_range


@dataclass
class WorkingMemoryOptions:
    """Working memory: markdown ``template`` mode or ``schema`` mode (a pydantic model class or a JSON schema),
    never both. ``scope`` "resource" keeps it on the caller (shared by all their threads), "thread" on the thread.

    ``extract``: after each turn, ask the model for the updated working memory with structured output (for small
    local models that do not call tools reliably). ``tool``: offer the ``update-working-memory`` tool (defaults to
    ``not extract``)."""

    enabled: bool = False
    scope: Scope = "resource"
    template: str | None = None
    schema: Any = None
    extract: bool = False
    tool: bool | None = None

    @property
    def mode(self) -> Literal["template", "schema"]:
        return "schema" if self.schema is not None else "template"

    @property
    def offers_tool(self) -> bool:
        return self.tool if self.tool is not None else not self.extract


@dataclass
class MemoryOptions:
    """All memory options. ``last_messages`` = how many recent messages go to the model (0 = none)."""

    last_messages: int = 10
    semantic_recall: SemanticRecallOptions = field(default_factory=lambda: SemanticRecallOptions(enabled=False))
    working_memory: WorkingMemoryOptions = field(default_factory=WorkingMemoryOptions)
    generate_title: bool = False
    read_only: bool = False

    @classmethod
    def parse(cls, value: dict[str, Any] | MemoryOptions | None) -> MemoryOptions:
        """Validate and build options; raises MemoryStoreError(code="invalid_options") naming the bad field."""
        if value is None:
            return cls()
        if isinstance(value, MemoryOptions):
            options = value
        elif isinstance(value, dict):
            options = _from_dict(value)
        else:
            raise _bad(f"options must be a dict or MemoryOptions, got {type(value).__name__}")
        _check(options)
        return options


def _bad(message: str) -> MemoryStoreError:
    return MemoryStoreError(f"invalid memory options: {message}", code="invalid_options")


def _section(value: Any, kind: type, name: str) -> Any:
    if isinstance(value, kind):
        return value
    if value is None or value is False:
        return kind(enabled=False)
    if value is True:
        return kind(enabled=True)
    if not isinstance(value, dict):
        raise _bad(f"{name} must be a bool or a dict")
    allowed = {f.name for f in fields(kind)}
    unknown = set(value) - allowed
    if unknown:
        raise _bad(f"unknown {name} keys: {', '.join(sorted(unknown))}")
    data = dict(value)
    data.setdefault("enabled", True)
    return kind(**data)


def _from_dict(value: dict[str, Any]) -> MemoryOptions:
    allowed = {f.name for f in fields(MemoryOptions)}
    unknown = set(value) - allowed
    if unknown:
        raise _bad(f"unknown keys: {', '.join(sorted(unknown))}")
    last = value.get("last_messages", 10)
    if last is False or last is None:
        last = 0
    return MemoryOptions(
        last_messages=last,
        semantic_recall=_section(value.get("semantic_recall", False), SemanticRecallOptions, "semantic_recall"),
        working_memory=_section(value.get("working_memory", False), WorkingMemoryOptions, "working_memory"),
        generate_title=bool(value.get("generate_title", False)),
        read_only=bool(value.get("read_only", False)),
    )


def _check(options: MemoryOptions) -> None:
    if not isinstance(options.last_messages, int) or isinstance(options.last_messages, bool) \
            or not 0 <= options.last_messages <= 1000:
        raise _bad("last_messages must be an integer from 0 to 1000")
    recall = options.semantic_recall
    if not 1 <= recall.top_k <= 50:
        raise _bad("semantic_recall.top_k must be from 1 to 50")
    if isinstance(recall.message_range, dict) and set(recall.message_range) != {"before", "after"}:
        raise _bad("semantic_recall.message_range must be an int or {'before': n, 'after': n}")
    for n in (recall.before, recall.after):
        if not isinstance(n, int) or not 0 <= n <= 20:
            raise _bad("semantic_recall.message_range values must be integers from 0 to 20")
    if recall.scope not in ("thread", "resource"):
        raise _bad("semantic_recall.scope must be 'thread' or 'resource'")
    if recall.threshold is not None and not -1.0 <= recall.threshold <= 1.0:
        raise _bad("semantic_recall.threshold must be a cosine similarity from -1 to 1")
    if not isinstance(recall.exchange, bool):
        raise _bad("semantic_recall.exchange must be true or false")
    wm = options.working_memory
    if wm.scope not in ("thread", "resource"):
        raise _bad("working_memory.scope must be 'thread' or 'resource'")
    if wm.template is not None and wm.schema is not None:
        raise _bad("working_memory takes a template or a schema, never both")
    if wm.schema is not None:
        wm.schema = normalise_schema(wm.schema)
    elif wm.enabled and wm.template is None:
        wm.template = DEFAULT_TEMPLATE


@dataclass(frozen=True)
class WorkingSchema:
    """Schema mode: the JSON schema shown to the model, and the pydantic model when one was given."""

    json_schema: dict[str, Any]
    model: Any = None


def normalise_schema(schema: Any) -> WorkingSchema:
    """Accept a pydantic model class, a JSON schema dict (or its JSON text), or an existing WorkingSchema."""
    if isinstance(schema, WorkingSchema):
        return schema
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise _bad(f"working_memory.schema is not valid JSON: {exc}") from exc
    if isinstance(schema, dict):
        if schema.get("type") != "object":
            raise _bad("working_memory.schema must be a JSON schema of type 'object'")
        return WorkingSchema(json_schema=schema)
    model_json_schema = getattr(schema, "model_json_schema", None)
    if isinstance(schema, type) and callable(model_json_schema):
        return WorkingSchema(json_schema=model_json_schema(), model=schema)
    raise _bad("working_memory.schema must be a pydantic model class or a JSON schema dict")
