"""Plain JSON values from whatever a tool, a workflow or a model returned, and readable validation errors."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python


def to_jsonable(value: Any) -> Any:
    """Turn a tool result (pydantic model, dataclass, dict, ...) into plain JSON values."""
    return to_jsonable_python(value, fallback=str)


def describe_validation_error(exc: ValidationError) -> str:
    """``location: Field required; unit: Input should be 'c' or 'f'``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
