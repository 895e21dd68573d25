"""Caller-supplied identifiers: one strict pattern, checked at every boundary.

Resource, thread, run and key ids must match ``[A-Za-z0-9._:@-]{1,128}``. Anything else is rejected with a clear
error, so no caller-supplied string ever reaches a storage filter unchecked.
"""

from __future__ import annotations

import re
import uuid

ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
MAX_ID_LENGTH = 128


def shown(value: object, limit: int = 40) -> str:
    """A caller-supplied value as an error message shows it: its repr, cut at ``limit`` characters (a message must
    not echo a 64 KiB field back)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidIdError(ValueError):
    """An id that does not match the allowed pattern. ``code`` is what clients see."""

    code = "invalid_id"

    def __init__(self, what: str, value: object):
        super().__init__(
            f"invalid {what} id {shown(value)}: use 1-{MAX_ID_LENGTH} characters from letters, digits and ._:@-"
        )
        self.what = what


def validate_id(value: object, what: str = "resource") -> str:
    """Return ``value`` if it is a valid id, else raise InvalidIdError."""
    if isinstance(value, bytes):
        raise InvalidIdError(what, value)
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidIdError(what, value)
    return value


def new_id(prefix: str) -> str:
    """A fresh id such as ``sess_3f2a...`` (always valid)."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
