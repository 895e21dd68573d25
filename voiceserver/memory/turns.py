"""Work after a turn, off the path to the reply: working-memory extraction and thread titles.

Mixed into :class:`Memory`. Extraction is for small local models that do not call the working-memory tool
reliably: the model is asked once more, with structured output (``ChatRequest.response_schema``), for the updated
working memory. Every such call is background work (:func:`background_request`). Failures are logged, never
raised: the turn has already been answered.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..ids import validate_id
from ..logs import get_logger
from . import records, working
from .options import DEFAULT_TEMPLATE
from .types import Message

if TYPE_CHECKING:
    from .options import MemoryOptions
    from .store import LanceDBStore

log = get_logger("MEMORY")
TITLE_MAX_CHARS = 60
BACKGROUND_ATTEMPTS = 3  # a background call a live turn took the model from (llm_preempted) is tried this often
BACKGROUND_IDLE_WAIT_S = 30.0  # before trying again, wait at most this long for live work to pause


def _transcript(messages: list[Message], limit_chars: int = 4000) -> str:
    lines = [f"{m.role}: {' '.join(m.content.split())}" for m in messages if m.type == "text" and m.content.strip()]
    text = "\n".join(lines)
    return text[-limit_chars:]


def background_request(**fields: Any) -> Any:
    """A model request for work after the turn, sent with ``priority="background"``: the engines serve it after
    live work (a turn being answered, speech being transcribed or synthesised) and never let it delay a turn."""
    from ..llm.base import ChatRequest

    return ChatRequest(**fields, priority="background")


async def complete_in_background(model: Any, request: Any) -> Any:
    """``model.complete(request)`` for a background request; when a live turn preempts it (``llm_preempted``), wait
    for live work to pause (``model.live_activity``) and try again, :data:`BACKGROUND_ATTEMPTS` times at most."""
    for attempt in range(BACKGROUND_ATTEMPTS):
        try:
            return await model.complete(request)
        except Exception as exc:
            if getattr(exc, "code", None) != "llm_preempted" or attempt == BACKGROUND_ATTEMPTS - 1:
                raise
            live = getattr(model, "live_activity", None)
            if live is not None:
                await live.wait_idle_async(timeout=BACKGROUND_IDLE_WAIT_S)
    raise AssertionError("unreachable")


def fallback_title(messages: list[Message]) -> str | None:
    """The first user sentence, cut to a title's length (used when no model is given)."""
    for m in messages:
        if m.role == "user" and m.type == "text" and m.content.strip():
            text = " ".join(m.content.split())
            return text if len(text) <= TITLE_MAX_CHARS else text[:TITLE_MAX_CHARS - 3].rstrip() + "..."
    return None


class TurnWork:
    storage: LanceDBStore
    options: MemoryOptions

    async def after_turn(self, *, resource_id: str, thread_id: str, messages: list[Message], model: Any = None
                         ) -> None:
        """Optional post-turn work: working-memory extraction (``working_memory.extract``, needs ``model``, a
        voiceserver.llm.base.ChatModel) and a title for an untitled thread (``generate_title``)."""
        validate_id(resource_id, "resource")
        validate_id(thread_id, "thread")
        if self.options.read_only:
            return
        wm = self.options.working_memory
        if wm.enabled and wm.extract and model is not None:
            try:
                await self._extract_working_memory(resource_id, thread_id, messages, model)
            except Exception as exc:  # noqa: BLE001 - the turn is done; log and go on
                log.warning(f"working memory extraction failed for thread {thread_id}: {exc}")
        if self.options.generate_title:
            try:
                await self._generate_title(resource_id, thread_id, messages, model)
            except Exception as exc:  # noqa: BLE001
                log.warning(f"title generation failed for thread {thread_id}: {exc}")

    async def _extract_working_memory(self, resource_id: str, thread_id: str, messages: list[Message],
                                      model: Any) -> None:
        from ..llm.base import ChatMessage

        wm = self.options.working_memory
        stored = await self.get_working_memory(thread_id, resource_id)  # type: ignore[attr-defined]
        template = wm.template or DEFAULT_TEMPLATE
        fields = working.template_fields(template) if wm.schema is None else []
        if fields:
            await self._extract_fields(resource_id, thread_id, messages, model, stored or template, fields)
            return
        if wm.schema is None:
            task = ("Rewrite the working memory with anything new the user said about themselves in the latest "
                    "exchange. Keep every heading of the template and everything already known that is still true. "
                    "Reply with the complete Markdown in the field memory.")
        else:
            task = ("Give only the fields of the working memory that the latest exchange adds or changes, in the "
                    "field memory (an empty object when nothing changed). Use null to forget a field.")
        prompt = (f"Current working memory:\n{working.display(wm, stored)}\n\nLatest exchange:\n"
                  f"{_transcript(messages)}")
        request = background_request(
            messages=[ChatMessage(role="system", content="You maintain notes about a user. " + task),
                      ChatMessage(role="user", content=prompt)],
            response_schema=working.extraction_schema(wm), temperature=0.0, max_tokens=400)
        result = await complete_in_background(model, request)
        data = json.loads(result.text)
        if not isinstance(data, dict) or "memory" not in data:
            raise ValueError("the model's reply has no memory field")
        if wm.schema is not None and not data["memory"]:
            return
        await self.update_working_memory(thread_id, resource_id, working_memory=data["memory"])  # type: ignore

    async def _extract_fields(self, resource_id: str, thread_id: str, messages: list[Message], model: Any,
                              current: str, fields: list[str]) -> None:
        """Template mode, field by field: the model fills a flat object of the template's labels from what the user
        said (an easy structured task even for a 135M model), and only values grounded in the user's own words
        replace the template's lines. Existing data is never overwritten by an empty answer."""
        from ..llm.base import ChatMessage

        said = " ".join(m.content for m in messages if m.role == "user" and m.type == "text")
        if not said.strip():
            return
        schema = {"type": "object", "properties": {f: {"type": "string"} for f in fields}, "required": fields}
        request = background_request(messages=[
            ChatMessage(role="system", content="Extract facts the user states about themselves. For each field, "
                                               "write the value the user gave, or an empty string if they did not "
                                               "say it."),
            ChatMessage(role="user", content=f"The user said: {' '.join(said.split())[:2000]}")],
            response_schema=schema, temperature=0.0, max_tokens=200)
        data = json.loads((await complete_in_background(model, request)).text)
        if not isinstance(data, dict):
            return
        updates = {f: " ".join(str(data[f]).split()) for f in fields
                   if isinstance(data.get(f), str) and data[f].strip() and working.grounded(data[f], said)}
        if not updates:
            return
        await self.update_working_memory(thread_id, resource_id,  # type: ignore[attr-defined]
                                         working_memory=working.fill_template(current, updates))

    async def _generate_title(self, resource_id: str, thread_id: str, messages: list[Message], model: Any) -> None:
        found = await records.get_thread(self.storage, thread_id)
        if found is None or found[0].title:
            return
        title = None
        if model is not None:
            from ..llm.base import ChatMessage

            request = background_request(messages=[
                ChatMessage(role="system", content="Give a short title (at most 8 words) for this conversation. "
                                                   "Reply with the title only."),
                ChatMessage(role="user", content=_transcript(messages, 1500))], max_tokens=24, temperature=0.0)
            text = (await complete_in_background(model, request)).text
            title = " ".join(text.replace('"', " ").split())[:TITLE_MAX_CHARS] or None
        title = title or fallback_title(messages)
        if title:
            await self.update_thread(thread_id, title=title)  # type: ignore[attr-defined]
