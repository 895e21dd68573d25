"""The state of one run, as kept between a suspension and its approval or resume (JSON in a RunStore, kind "agent").

Snapshot layout (version 1)::

    {"version": 1, "run_id", "agent_id", "status": "running"|"suspended"|"finished"|"aborted"|"failed",
     "messages": [...],            # the conversation as sent to the model, system prompts included
     "step": 2,                    # model calls made so far (counted against max_steps)
     "current_step": {"step", "text", "finish_reason", "usage", "calls": [...]} | null,
     "outcomes": {tool_call_id: {"status", "value", "suspend_payload"}},   # calls that ran: never run again
     "approved": [tool_call_id, ...],
     "pending": [{"tool_call_id", "tool_name", "args", "kind", "suspend_payload"}],
     "seen_call_ids": [...], "text_parts": [...], "tool_calls": [...], "tool_results": [...], "steps": [...],
     "usage": {"prompt_tokens", "completion_tokens", "cached_tokens"},
     "records": [...],             # this turn's memory messages, each with "saved"
     "options": {"max_steps", "require_tool_approval", "structured_output", "memory", "context",
                 "model_settings", "working_memory_tool"}}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..llm.base import ChatMessage, ToolCall, Usage
from ..runs.messages import message_from_json, message_to_json
from .chunks import PendingToolCall, StepResult, ToolCallRecord, ToolResultRecord
from .tools import ToolOutcome

SNAPSHOT_VERSION = 1


@dataclass
class CurrentStep:
    """The step whose tool calls are being resolved."""

    step: int
    text: str
    finish_reason: str
    usage: Usage
    calls: list[ToolCall]


@dataclass
class RunState:
    run_id: str
    agent_id: str
    messages: list[ChatMessage] = field(default_factory=list)
    status: str = "running"
    step: int = 0
    current_step: CurrentStep | None = None
    outcomes: dict[str, ToolOutcome] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)
    pending: list[PendingToolCall] = field(default_factory=list)
    seen_call_ids: set[str] = field(default_factory=set)
    text_parts: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_results: list[ToolResultRecord] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    records: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    response_start: int = 0  # index in messages where this run's assistant/tool messages begin

    def to_json(self) -> dict[str, Any]:
        cur = None
        if self.current_step is not None:
            c = self.current_step
            cur = {"step": c.step, "text": c.text, "finish_reason": c.finish_reason, "usage": _usage(c.usage),
                   "calls": [{"id": x.id, "name": x.name, "arguments": x.arguments} for x in c.calls]}
        data = {
            "version": SNAPSHOT_VERSION, "run_id": self.run_id, "agent_id": self.agent_id, "status": self.status,
            "messages": [message_to_json(m) for m in self.messages], "step": self.step, "current_step": cur,
            "outcomes": {k: v.to_json() for k, v in self.outcomes.items()}, "approved": sorted(self.approved),
            "pending": [asdict(p) for p in self.pending], "seen_call_ids": sorted(self.seen_call_ids),
            "text_parts": list(self.text_parts), "tool_calls": [asdict(t) for t in self.tool_calls],
            "tool_results": [asdict(t) for t in self.tool_results],
            "steps": [_step_json(s) for s in self.steps], "usage": _usage(self.usage),
            "records": list(self.records), "options": self.options, "response_start": self.response_start,
        }
        # Round-trip through JSON text so a value that is not JSON fails here, not in the store.
        return json.loads(json.dumps(data, ensure_ascii=False))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported agent run snapshot version {data.get('version')!r}")
        cur = data.get("current_step")
        current = None
        if cur:
            current = CurrentStep(cur["step"], cur["text"], cur["finish_reason"], Usage(**cur["usage"]),
                                  [ToolCall(c["id"], c["name"], c["arguments"]) for c in cur["calls"]])
        return cls(
            run_id=data["run_id"], agent_id=data["agent_id"], status=data["status"],
            messages=[message_from_json(m) for m in data["messages"]], step=data["step"], current_step=current,
            outcomes={k: ToolOutcome.from_json(v) for k, v in data["outcomes"].items()},
            approved=set(data["approved"]), pending=[PendingToolCall(**p) for p in data["pending"]],
            seen_call_ids=set(data["seen_call_ids"]), text_parts=list(data["text_parts"]),
            tool_calls=[ToolCallRecord(**t) for t in data["tool_calls"]],
            tool_results=[ToolResultRecord(**t) for t in data["tool_results"]],
            steps=[_step_from_json(s) for s in data["steps"]], usage=Usage(**data["usage"]),
            records=list(data["records"]), options=dict(data["options"]),
            response_start=int(data.get("response_start", 0)),
        )


def _usage(u: Usage) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "cached_tokens": u.cached_tokens}


def _step_json(s: StepResult) -> dict[str, Any]:
    return {"step": s.step, "text": s.text, "tool_calls": [asdict(t) for t in s.tool_calls],
            "tool_results": [asdict(t) for t in s.tool_results], "finish_reason": s.finish_reason,
            "usage": _usage(s.usage)}


def _step_from_json(d: dict[str, Any]) -> StepResult:
    return StepResult(d["step"], d["text"], [ToolCallRecord(**t) for t in d["tool_calls"]],
                      [ToolResultRecord(**t) for t in d["tool_results"]], d["finish_reason"], Usage(**d["usage"]))
