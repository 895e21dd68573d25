"""Validating values against step and workflow schemas, with errors that name the field.

A schema is a pydantic model class, any type pydantic can validate (``list[Item]``, ``int``, ...) or ``None``
(anything JSON-serialisable goes). Values cross step boundaries and go into snapshots as plain JSON
(``dump``); a step sees the validated value (``validate``: a model instance for a model schema).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python


class WorkflowError(Exception):
    """Base of every error the workflow engine raises to its callers. ``code`` is what HTTP clients see."""

    code = "workflow_error"


class SchemaValidationError(WorkflowError, ValueError):
    """A value did not fit its schema. ``fields`` lists ``{"field", "message", "type"}`` per problem."""

    code = "invalid_input"

    def __init__(self, what: str, fields: list[dict[str, str]], code: str | None = None):
        self.what = what
        self.fields = fields
        if code:
            self.code = code
        detail = "; ".join(f"{f['field']}: {f['message']}" if f["field"] else f["message"] for f in fields)
        super().__init__(f"invalid {what}: {detail}")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "fields": self.fields}


def _is_model(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, BaseModel)


@lru_cache(maxsize=512)
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


def fields_of(error: ValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``[{"field": "a.b", "message": ..., "type": ...}]`` (field "" for the value itself)."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False)
    ]


def validate(schema: Any, value: Any, what: str, code: str = "invalid_input") -> Any:
    """The value as the step sees it: a model instance for a model schema, the validated value otherwise."""
    if schema is None:
        return value
    try:
        if _is_model(schema):
            if isinstance(value, schema):
                return value
            return schema.model_validate(value)
        return _adapter(schema).validate_python(value)
    except ValidationError as e:
        raise SchemaValidationError(what, fields_of(e), code) from None


def dump(schema: Any, value: Any, what: str, code: str = "invalid_output") -> Any:
    """Validate ``value`` and return it as plain JSON data (what snapshots and the next step receive)."""
    if schema is None:
        try:
            return to_jsonable_python(value)
        except (PydanticSerializationError, TypeError, ValueError) as e:
            raise SchemaValidationError(what, [{"field": "", "message": f"not JSON-serialisable: {e}",
                                                "type": "not_json"}], code) from None
    if _is_model(schema):
        if not isinstance(value, schema):
            value = validate(schema, value, what, code)
        return value.model_dump(mode="json")
    adapter = _adapter(schema)
    checked = validate(schema, value, what, code)
    return adapter.dump_python(checked, mode="json")


def json_schema(schema: Any) -> dict[str, Any] | None:
    """The JSON schema of a schema (for descriptions and routing), or None."""
    if schema is None:
        return None
    if _is_model(schema):
        return schema.model_json_schema()
    return _adapter(schema).json_schema()
