"""One turn's messages for memory: recorded as the run goes, saved at its end points.

The records live in the run state (so a suspended run keeps the unsaved part in its snapshot); each has a
``saved`` mark: missing (not yet), True, "dropped" (replaced or refused) or "deleted" (corrected after the turn).
End points: ``finish`` saves everything; ``suspend`` holds back the step whose calls wait for a decision; ``abort``
keeps the input and complete tool pairs, replaces the assistant's text by what the caller heard, and holds a call
whose tool is still running in the background until it ends.
"""

from __future__ import annotations

from typing import Any

from ..llm.base import ChatMessage, ToolCall
from ..logs import get_logger
from ..runs.records import MemoryRecords, to_storage
from .run_state import RunState
from .tools import ToolOutcome

log = get_logger("AGENT")


class TurnMemory:
    """Memory records of one run. Inactive (every method a no-op) without memory or without both ids."""

    def __init__(self, memory: Any, target: tuple[str, str] | None, state: RunState):
        self.memory = memory if target is not None else None
        self.records = MemoryRecords(*target) if self.memory is not None and target is not None else None
        self.state = state
        self.saved_messages: list[Any] = []  # what memory returned for this run's saves (for after_turn)

    @property
    def active(self) -> bool:
        return self.records is not None

    # --- recording -------------------------------------------------------------------------------------------------

    def add_input(self, messages: list[ChatMessage]) -> None:
        if self.records is not None:
            for message in messages:
                self.state.records.extend(self.records.from_input(message))

    def add_text(self, text: str) -> None:
        if self.records is not None:
            self.state.records.append(self.records.make("assistant", text, "text"))

    def add_tool_call(self, call: ToolCall) -> None:
        if self.records is not None:
            self._add(self.records.tool_call(call.id, call.name, call.arguments), call.id)

    def add_tool_result(self, call: ToolCall, outcome: ToolOutcome) -> None:
        if self.records is None:
            return
        meta = {"denied": True} if outcome.status == "denied" else None
        result = outcome.value if outcome.status == "ok" else outcome.model_content()
        self._add(self.records.tool_result(call.id, call.name, outcome.model_content(), result, outcome.is_error,
                                           meta), call.id)

    def replace_text(self, text: str) -> None:
        """An output processor rewrote the reply: the unsaved text records become one record of ``text``."""
        if self.records is None:
            return
        for r in self.state.records:
            if r["role"] == "assistant" and r["type"] == "text" and not r.get("saved"):
                r["saved"] = "dropped"
        self.add_text(text)

    def drop_unsaved(self) -> None:
        for r in self.state.records:
            r.setdefault("saved", "dropped")

    def _add(self, record: dict[str, Any], call_id: str) -> None:
        record["_call"] = call_id
        self.state.records.append(record)

    # --- saving ----------------------------------------------------------------------------------------------------

    async def save(self, *, mode: str, heard_text: str | None = None) -> None:
        """Save the unsaved records for an end point: "finish", "suspend" or "abort"."""
        if self.records is None:
            return
        unsaved = [r for r in self.state.records if not r.get("saved")]
        if mode == "suspend":
            cur = self.state.current_step
            held = {c.id for c in cur.calls} if cur is not None else {p.tool_call_id for p in self.state.pending}
            unsaved = [r for r in unsaved if r.get("_call") not in held]
        elif mode == "abort":
            resulted = {r["_call"] for r in self.state.records if r["type"] == "tool-result" and "_call" in r}
            keep = []
            for r in unsaved:
                if r["role"] == "assistant" and r["type"] == "text":
                    r["saved"] = "dropped"  # replaced by what was heard
                elif r["type"] in ("tool-call", "tool-result") and r.get("_call") not in resulted:
                    continue  # held until a background tool ends
                else:
                    keep.append(r)
            unsaved = keep
            if heard_text:
                unsaved.append(self._heard(heard_text))
        await self._save_records(unsaved)

    async def save_background_call(self, call_id: str) -> None:
        """A tool finished after an abort: save its call and result, marked as completed after the interrupt."""
        held = [r for r in self.state.records if r.get("_call") == call_id and not r.get("saved")]
        for r in held:
            r["metadata"] = {**r["metadata"], "completed_after_interrupt": True}
        await self._save_records(held)

    async def apply_heard_text(self, heard_text: str, finish_reason: str | None) -> None:
        """After the run ended: make memory hold exactly what the caller heard of the reply."""
        if self.records is None or self.memory is None or finish_reason in ("tripwire", "error", "suspended", None):
            return
        # Whatever assistant text is stored for this run (the full reply, or a heard text recorded when the run was
        # aborted) is replaced by what the caller heard in the end.
        spoken = [r for r in self.state.records
                  if r.get("saved") is True and r["role"] == "assistant" and r["type"] == "text"]
        if spoken:
            delete = getattr(self.memory, "delete_messages", None)
            if delete is None:
                log.warning("memory cannot delete messages; the full reply stays remembered")
                return
            await delete([r["id"] for r in spoken])
            for r in spoken:
                r["saved"] = "deleted"
        await self._save_records([self._heard(heard_text)])

    def _heard(self, heard_text: str) -> dict[str, Any]:
        assert self.records is not None
        record = self.records.make("assistant", heard_text, "text", {"interrupted": True})
        self.state.records.append(record)
        return record

    async def _save_records(self, records: list[dict[str, Any]]) -> None:
        if not records or self.memory is None:
            return
        stored = await self.memory.save_messages([to_storage(r) for r in records])
        for r in records:
            r["saved"] = True
        # Memory returns its own message objects; after_turn gets those (it reads .role / .content).
        self.saved_messages.extend(stored if isinstance(stored, list) and len(stored) == len(records)
                                   else [to_storage(r) for r in records])
