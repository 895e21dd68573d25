"""Working memory: what the assistant keeps about a caller (or a thread) between turns.

Template mode keeps Markdown: an update replaces the whole block, except that the empty template (or blank text)
never overwrites data. Schema mode keeps a JSON object: an update is deep-merged into it, ``null`` deletes a key,
lists are replaced whole, and the result is checked against the pydantic model when one was given.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .options import WorkingMemoryOptions
from .types import WorkingMemoryError

TOOL_NAME = "update-working-memory"
MAX_WORKING_MEMORY_CHARS = 20_000


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def is_empty_template(text: str, template: str | None) -> bool:
    """Blank text, or the template with nothing filled in."""
    return not text.strip() or (template is not None and _normalised(text) == _normalised(template))


def deep_merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``current``: objects merge recursively, None deletes, lists and scalars
    replace."""
    out = dict(current)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = deep_merge({}, value)
        else:
            out[key] = value
    return out


def _unwrap(value: Any, options: WorkingMemoryOptions) -> Any:
    """Accept the tool's arguments ({"memory": ...}) as well as the bare value."""
    if isinstance(value, dict) and set(value) == {"memory"}:
        properties = options.schema.json_schema.get("properties", {}) if options.schema is not None else {}
        if "memory" not in properties:
            return value["memory"]
    return value


def apply_update(options: WorkingMemoryOptions, stored: str | None, update: Any) -> str | None:
    """The new stored text after ``update``, or None when the stored text must not change."""
    update = _unwrap(update, options)
    if options.schema is None:
        if not isinstance(update, str):
            raise WorkingMemoryError("working memory is in template mode: the update must be Markdown text")
        if len(update) > MAX_WORKING_MEMORY_CHARS:
            raise WorkingMemoryError(f"working memory is limited to {MAX_WORKING_MEMORY_CHARS} characters")
        if is_empty_template(update, options.template) and stored and not is_empty_template(stored, options.template):
            return None  # an empty template never wipes what we know
        return None if update == stored else update
    if isinstance(update, str):
        try:
            update = json.loads(update)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, or a number over 4300 digits
            raise WorkingMemoryError(f"working memory update is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(update, dict):
        raise WorkingMemoryError("working memory is in schema mode: the update must be a JSON object")
    current = json.loads(stored) if stored else {}
    merged = deep_merge(current, update)
    _validate(options, merged)
    text = json.dumps(merged, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_WORKING_MEMORY_CHARS:
        raise WorkingMemoryError(f"working memory is limited to {MAX_WORKING_MEMORY_CHARS} characters")
    return None if text == stored else text


def _validate(options: WorkingMemoryOptions, data: dict[str, Any]) -> None:
    """Check the merged object. Missing fields are fine (memory fills up over time); wrong types are not."""
    schema = options.schema
    if schema is None:
        return
    properties = schema.json_schema.get("properties")
    if isinstance(properties, dict) and schema.json_schema.get("additionalProperties") is False:
        unknown = set(data) - set(properties)
        if unknown:
            raise WorkingMemoryError(f"unknown working memory fields: {', '.join(sorted(unknown))}")
    if schema.model is None:
        return
    from pydantic import ValidationError

    try:
        schema.model.model_validate(data)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if e.get("type") != "missing"]
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise WorkingMemoryError(f"working memory field {where or '(root)'}: {first.get('msg')}") from exc


def tool_spec(options: WorkingMemoryOptions) -> dict[str, Any]:
    """The ``update-working-memory`` tool offered to the model: its arguments are ``{"memory": ...}``."""
    if options.schema is None:
        memory = {"type": "string",
                  "description": "The complete updated working memory as Markdown, following the template."}
        description = ("Replace your working memory about the user with the complete updated Markdown. Call it "
                       "whenever the user tells you something worth remembering.")
    else:
        memory = {k: v for k, v in options.schema.json_schema.items() if k not in ("required", "$defs", "title")}
        memory["description"] = ("Only the fields that changed; they are merged into the stored object. "
                                 "Set a field to null to forget it. Lists replace the stored list.")
        description = ("Update your working memory about the user (a JSON object, merged into what is stored). "
                       "Call it whenever the user tells you something worth remembering.")
    parameters: dict[str, Any] = {"type": "object", "properties": {"memory": memory}, "required": ["memory"]}
    if options.schema is not None and "$defs" in options.schema.json_schema:
        parameters["$defs"] = options.schema.json_schema["$defs"]  # pydantic's "#/$defs/..." refs resolve here
    return {"name": TOOL_NAME, "description": description, "parameters": parameters}


def display(options: WorkingMemoryOptions, stored: str | None) -> str:
    """What the model is shown: the stored data, or the template / an empty object when there is none yet."""
    if options.schema is not None:
        return stored or "{}"
    return stored if stored and stored.strip() else (options.template or "")


def system_block(options: WorkingMemoryOptions, stored: str | None, read_only: bool) -> str | None:
    """The working-memory part of the system message.

    With the tool on offer the model sees the whole template (it must send the complete update). Otherwise (memory
    filled by after-turn extraction, or read-only) it sees only what is known: the filled lines of the template, or
    the stored object; and nothing at all while nothing is known. A small model reads a short block of facts better
    than a template of empty fields, and the prompt stays shorter."""
    if read_only or not options.offers_tool:
        known = known_facts(options, stored)
        if not known:
            return None
        return ("## What you know about the user\nFrom earlier conversations. Use it when it helps; do not read it "
                f"out or mention that you keep notes.\n{known}")
    shown = display(options, stored)
    if options.schema is None:
        how = (f"This is what you know about the user. When they tell you something new or something changes, call "
               f"the {TOOL_NAME} tool with the complete updated Markdown (keep the template's headings, including "
               f"empty ones). Do not mention this memory to the user.")
    else:
        how = (f"This is what you know about the user, as JSON. When they tell you something new or something "
               f"changes, call the {TOOL_NAME} tool with only the changed fields (null forgets a field). Do not "
               f"mention this memory to the user.")
    return f"## Working memory\n{how}\n<working_memory>\n{shown.strip()}\n</working_memory>"


def known_facts(options: WorkingMemoryOptions, stored: str | None) -> str:
    """What is known, without the template's empty fields: filled "- Label: value" lines and other text lines
    (headings dropped), or the stored JSON object ("" for an empty one)."""
    if not stored or not stored.strip():
        return ""
    if options.schema is not None:
        return "" if stored.strip() in ("{}", "null") else stored.strip()
    lines = []
    for line in stored.splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            if match.group(3).strip():
                lines.append(f"- {match.group(2).strip()}: {match.group(3).strip()}")
        elif line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    return "\n".join(lines)


def extraction_schema(options: WorkingMemoryOptions) -> dict[str, Any]:
    """The response schema for after-turn extraction with structured output."""
    return tool_spec(options)["parameters"]


_FIELD_LINE = re.compile(r"^(\s*[-*]\s*)([^:\n]{1,40}):[ \t]*(.*)$")


def template_fields(template: str | None) -> list[str]:
    """The labels of a markdown template's "- Label:" lines (the fields a small model can fill one by one)."""
    if not template:
        return []
    labels = []
    for line in template.splitlines():
        match = _FIELD_LINE.match(line)
        if match and match.group(2).strip() not in labels:
            labels.append(match.group(2).strip())
    return labels


def fill_template(text: str, values: dict[str, str]) -> str:
    """Set the value of each "- Label:" line named in ``values``; every other line is kept as it is."""
    out = []
    for line in text.splitlines():
        match = _FIELD_LINE.match(line)
        if match and match.group(2).strip() in values:
            line = f"{match.group(1)}{match.group(2).strip()}: {values[match.group(2).strip()]}"
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def grounded(value: str, said: str) -> bool:
    """True when most words of ``value`` were actually said by the user (guards against a small model inventing,
    or copying the instructions into the notes)."""
    words = re.findall(r"[a-z0-9']+", value.lower())
    if not words or len(value) > 120:
        return False
    heard = set(re.findall(r"[a-z0-9']+", said.lower()))
    return sum(w in heard for w in words) * 2 >= len(words)
