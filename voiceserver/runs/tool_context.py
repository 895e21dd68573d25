"""What a tool's ``execute`` receives next to its input, in an agent run or a network run."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .values import to_jsonable


class ToolSuspended(Exception):  # a signal, not an error
    """Raised by :meth:`ToolContext.suspend` to stop the tool; the run records the suspension."""

    def __init__(self, payload: Any):
        super().__init__("tool suspended")
        self.payload = payload


@dataclass(slots=True)
class ToolContext:
    """What a tool's ``execute`` receives next to its validated input.

    ``resume_data`` is set when the run was resumed with ``agent.resume_stream(resume_data, run_id=...)`` after the
    tool suspended itself: ``execute`` runs again from the top, so check ``ctx.resume_data`` first.
    ``context`` is the ``context={...}`` option of generate/stream (request-scoped values such as a user id).
    """

    run_id: str
    tool_call_id: str
    tool_name: str
    agent: Any = None
    resource_id: str | None = None
    thread_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    resume_data: Any = None
    memory: Any = None
    suspend_schema: Any = None
    suspend_payload: Any = None
    suspended: bool = False

    async def suspend(self, payload: Any = None) -> typing.NoReturn:
        """Suspend the run at this tool call: the stream emits tool-call-suspended with ``payload``.

        This raises to stop the tool; do not catch it. Resume with ``agent.resume_stream(data, run_id=...)``.
        """
        if isinstance(self.suspend_schema, type) and issubclass(self.suspend_schema, BaseModel):
            payload = self.suspend_schema.model_validate(payload)
        self.suspend_payload = to_jsonable(payload)
        self.suspended = True
        raise ToolSuspended(self.suspend_payload)
