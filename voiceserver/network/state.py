"""The state of one network run, as persisted in the agent's RunStore (kind "network", owner = the agent id).

Snapshot layout (version 1)::

    {"version": 1, "run_id", "agent_id", "status": "running"|"suspended"|"success"|"max_steps"|"failed"|"aborted",
     "task", "resource_id", "thread_id", "max_steps", "iteration",
     "steps": [{"iteration", "primitive_type", "primitive_id", "prompt", "result", "is_error", "selection_reason"}],
     "decision": {"primitive_id", "primitive_type", "prompt", "selection_reason"} | null,   # the step under way
     "pending": {...} | null,      # what a suspended run waits for (see PENDING_KINDS)
     "feedback": str | null,       # the last completion check's reason when not complete
     "result", "is_complete", "reason",
     "options": {"structured_output", "require_tool_approval", "context", "instructions"},
     "usage": {"prompt_tokens", "completion_tokens"},
     "saved_ids": [...]}           # memory messages this run wrote (kept out of its routing history)

``pending`` kinds: ``tool-approval`` / ``tool-suspended`` ``{tool_call_id, tool_name, args, suspend_payload}``;
``agent`` ``{agent_id, agent_run_id, calls: [{tool_call_id, tool_name, args, kind, suspend_payload}]}``;
``workflow`` ``{workflow_id, workflow_run_id, suspended, suspend_payload}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..llm.base import Usage
from .routing import RoutingDecision, StepRecord

SNAPSHOT_VERSION = 1
RUN_KIND = "network"
PENDING_KINDS = ("tool-approval", "tool-suspended", "agent", "workflow")


@dataclass
class NetworkState:
    run_id: str
    agent_id: str
    task: str
    resource_id: str
    thread_id: str
    max_steps: int
    status: str = "running"
    iteration: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    decision: RoutingDecision | None = None
    pending: dict[str, Any] | None = None
    feedback: str | None = None
    result: str = ""
    is_complete: bool = False
    reason: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    saved_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {
            "version": SNAPSHOT_VERSION, "run_id": self.run_id, "agent_id": self.agent_id, "status": self.status,
            "task": self.task, "resource_id": self.resource_id, "thread_id": self.thread_id,
            "max_steps": self.max_steps, "iteration": self.iteration, "steps": [s.to_json() for s in self.steps],
            "decision": self.decision.to_json() if self.decision else None, "pending": self.pending,
            "feedback": self.feedback, "result": self.result, "is_complete": self.is_complete,
            "reason": self.reason, "options": self.options,
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "saved_ids": list(self.saved_ids),
        }
        # Round-trip through JSON text so a value that is not JSON fails here, not in the store.
        return json.loads(json.dumps(data, ensure_ascii=False, default=str))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkState:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported network run snapshot version {data.get('version')!r}")
        decision = data.get("decision")
        return cls(
            run_id=data["run_id"], agent_id=data["agent_id"], task=data["task"], resource_id=data["resource_id"],
            thread_id=data["thread_id"], max_steps=int(data["max_steps"]), status=data["status"],
            iteration=int(data["iteration"]), steps=[StepRecord.from_json(s) for s in data["steps"]],
            decision=RoutingDecision(**decision) if decision else None, pending=data.get("pending"),
            feedback=data.get("feedback"), result=data.get("result", ""), is_complete=bool(data.get("is_complete")),
            reason=data.get("reason", ""), options=dict(data.get("options") or {}),
            usage=Usage(**data.get("usage", {})), saved_ids=list(data.get("saved_ids") or []),
        )
