"""The routing agent's decisions, as pure functions: what the model is shown and how its answers are read.

Nothing here awaits anything. The loop (:mod:`.loop`) sends the messages built here with a ``response_schema``
(grammar-constrained on the local model, ``json_schema`` on OpenAI) and hands the text back to the parsers, which
either return a value or raise :class:`DecisionError` with a message that can be shown to the model on a retry.

Four model calls exist:

- routing: pick the next primitive, ``{primitive_id, primitive_type, prompt, selection_reason}``;
- input: turn the routing prompt into a workflow's or tool's input, against its input schema (skipped when the
  prompt already is valid JSON of that schema);
- completion: after a step, ``{is_complete, final_result, reason}``;
- final object: with ``structured_output``, the final answer as JSON of the caller's schema.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ..llm.base import ChatMessage
from ..runs.ports import is_tool, is_workflow
from ..runs.structured import strip_fences
from ..runs.values import describe_validation_error, to_jsonable

PrimitiveType = Literal["agent", "workflow", "tool"]
PRIMITIVE_TYPES: tuple[str, ...] = ("agent", "workflow", "tool")
NONE = "none"
MAX_DESCRIPTION_CHARS = 400
MAX_SCHEMA_CHARS = 1200
MAX_RESULT_CHARS = 4000  # one step's result as shown to the model
MAX_STEPS_SHOWN = 20  # older steps are summarised by count only
MAX_STEPS_CHARS = 12_000  # all the steps shown in one prompt (a small local model has a 2048-token context)

ROUTING_TITLE = "NetworkRoutingDecision"
COMPLETION_TITLE = "NetworkCompletionCheck"


class DecisionError(ValueError):
    """A model answer that cannot be used; the message says why (it is shown to the model on a retry)."""


@dataclass(frozen=True)
class Primitive:
    """Something the routing agent can pick: a sub-agent, a workflow or a tool of the network's agent."""

    id: str
    type: PrimitiveType
    description: str
    input_schema: dict[str, Any] | None  # JSON schema of the input (None: an agent, which takes text)
    target: Any = field(compare=False, repr=False)


@dataclass
class RoutingDecision:
    """The routing agent's choice. ``primitive_type`` "none" means: no primitive, ``prompt`` is the answer."""

    primitive_id: str
    primitive_type: str
    prompt: str
    selection_reason: str

    @property
    def is_none(self) -> bool:
        return self.primitive_type == NONE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompletionCheck:
    """The answer of the completion check after a step."""

    is_complete: bool
    final_result: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepRecord:
    """One executed step, as remembered by the run and shown to the routing agent."""

    iteration: int
    primitive_type: str
    primitive_id: str
    prompt: str
    result: str
    is_error: bool = False
    selection_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**{k: data[k] for k in ("iteration", "primitive_type", "primitive_id", "prompt", "result")},
                   is_error=bool(data.get("is_error")), selection_reason=str(data.get("selection_reason", "")))


# --- the primitives ------------------------------------------------------------------------------------------------


def list_primitives(agent: Any) -> list[Primitive]:
    """The agent's sub-agents, workflows and tools, keyed as registered (``agents={"researcher": ...}``)."""
    out: list[Primitive] = []
    for key, sub in (getattr(agent, "agents", None) or {}).items():
        about = _clip(getattr(sub, "description", "") or f"The {getattr(sub, 'name', key)} agent.")
        out.append(Primitive(key, "agent", about, None, sub))
    for key, wf in (getattr(agent, "workflows", None) or {}).items():
        if not is_workflow(wf):
            continue
        about = _clip(getattr(wf, "description", "") or f"The {key} workflow.")
        out.append(Primitive(key, "workflow", about, schema_of(getattr(wf, "input_schema", None)), wf))
    for key, tool in (getattr(agent, "tools", None) or {}).items():
        if is_tool(tool):
            out.append(Primitive(key, "tool", _clip(tool.description), tool.parameters_schema(), tool))
    return out


def find_primitive(primitives: list[Primitive], primitive_type: str, primitive_id: str) -> Primitive | None:
    return next((p for p in primitives if p.type == primitive_type and p.id == primitive_id), None)


def schema_of(schema: Any) -> dict[str, Any] | None:
    """A JSON schema from a pydantic model class, a JSON schema dict, or None."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    return None


# --- routing -------------------------------------------------------------------------------------------------------


def routing_schema(primitives: list[Primitive]) -> dict[str, Any]:
    """The decision's JSON schema; ids and types are enums, so a grammar-constrained model can only name real ones."""
    ids = sorted({p.id for p in primitives}) + [NONE]
    types = [t for t in PRIMITIVE_TYPES if any(p.type == t for p in primitives)] + [NONE]
    return {
        "title": ROUTING_TITLE,
        "type": "object",
        "properties": {
            "primitive_id": {"type": "string", "enum": ids, "description": "The id of the primitive to run."},
            "primitive_type": {"type": "string", "enum": types, "description": "The kind of that primitive."},
            "prompt": {"type": "string", "description": "Text for an agent; JSON of the input schema for a "
                                                        "workflow or tool; with none, the answer to the user."},
            "selection_reason": {"type": "string", "description": "Why this primitive."},
        },
        "required": ["primitive_id", "primitive_type", "prompt", "selection_reason"],
        "additionalProperties": False,
    }


def routing_system_prompt(instructions: str, primitives: list[Primitive]) -> str:
    """The routing agent's system prompt: the agent's own instructions, then the primitives and the rules."""
    parts = [instructions.strip()] if instructions and instructions.strip() else []
    parts.append("You coordinate a network of agents, workflows and tools. For the user's task, pick ONE primitive "
                 "to run next, or \"none\" when the task is done or you can answer it yourself.")
    for kind, title, how in (("agent", "Agents", "prompt: a plain-text request"),
                             ("workflow", "Workflows", "prompt: its input as JSON matching the input schema"),
                             ("tool", "Tools", "prompt: its arguments as JSON matching the input schema")):
        group = [p for p in primitives if p.type == kind]
        if not group:
            continue
        lines = [f'{title} (primitive_type "{kind}"; {how}):']
        for p in group:
            line = f"- {p.id}: {p.description}"
            if p.input_schema is not None:
                line += f" Input schema: {compact_schema(p.input_schema)}"
            lines.append(line)
        parts.append("\n".join(lines))
    parts.append('Answer with one JSON object {"primitive_id", "primitive_type", "prompt", "selection_reason"}. '
                 'With primitive_id "none" and primitive_type "none", put your answer to the user in "prompt". '
                 "Do not run the same primitive with the same prompt again: use the results of the steps so far.")
    return "\n\n".join(parts)


def routing_user_prompt(task: str, steps: list[StepRecord], feedback: str | None = None) -> str:
    text = f"Task: {task}\n\n{format_steps(steps)}"
    if feedback:
        text += f"\n\nNot done yet: {feedback}"
    return text + "\n\nPick the next step."


def routing_messages(system: str, history: list[ChatMessage], task: str, steps: list[StepRecord],
                     feedback: str | None = None, recall: list[ChatMessage] | None = None) -> list[ChatMessage]:
    """System prompt, the earlier conversation (from memory), the recalled messages, then the task with the steps
    so far (what changes every turn comes last, after the prefix a prompt cache can keep)."""
    return [ChatMessage("system", system), *history, *(recall or []),
            ChatMessage("user", routing_user_prompt(task, steps, feedback))]


def parse_routing_decision(text: str, primitives: list[Primitive]) -> RoutingDecision:
    """Read a routing answer. Accepts camelCase keys too; fixes a type that contradicts an unambiguous id."""
    data = _json_object(text, "routing decision")
    pid = str(_pick(data, "primitive_id", "primitiveId") or "").strip()
    ptype = str(_pick(data, "primitive_type", "primitiveType") or "").strip().lower()
    prompt = _pick(data, "prompt")
    prompt = prompt if isinstance(prompt, str) else json.dumps(to_jsonable(prompt)) if prompt is not None else ""
    reason = str(_pick(data, "selection_reason", "selectionReason") or "")
    if ptype == NONE or pid in ("", NONE):
        return RoutingDecision(NONE, NONE, prompt, reason)
    matches = [p for p in primitives if p.id == pid]
    if not matches:
        known = ", ".join(f"{p.type} {p.id}" for p in primitives) or "none"
        raise DecisionError(f"there is no primitive {pid!r}; available: {known}, or none")
    chosen = next((p for p in matches if p.type == ptype), None)
    if chosen is None:
        if len(matches) > 1:
            kinds = " or ".join(p.type for p in matches)
            raise DecisionError(f"{pid!r} is a {kinds}, not a {ptype or 'missing type'}: say which")
        chosen = matches[0]
    return RoutingDecision(chosen.id, chosen.type, prompt, reason)


# --- inputs of workflows and tools ---------------------------------------------------------------------------------


def validate_input(primitive: Primitive, data: Any) -> Any:
    """The input for a workflow or tool if ``data`` fits its schema (JSON form); ValueError naming the field."""
    if primitive.type == "tool":
        parsed = primitive.target.parse_args(data)
        return parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) else parsed
    schema = getattr(primitive.target, "input_schema", None)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc)) from None
    if isinstance(schema, dict):
        if schema.get("type") == "object" and not isinstance(data, dict):
            raise ValueError(f"input must be a JSON object, got {type(data).__name__}")
        missing = [k for k in schema.get("required", []) if isinstance(data, dict) and k not in data]
        if missing:
            raise ValueError("; ".join(f"{k}: Field required" for k in missing))
    return data


def needs_input(primitive: Primitive) -> bool:
    """False for a tool or workflow whose input is an empty object: no model call is needed to build it."""
    schema = primitive.input_schema
    return not (isinstance(schema, dict) and schema.get("type", "object") == "object" and not schema.get("properties")
                and not schema.get("required") and "anyOf" not in schema and "oneOf" not in schema)


def direct_input(primitive: Primitive, prompt: str) -> tuple[bool, Any]:
    """(True, input) when the routing prompt already is valid JSON of the primitive's input schema.

    A workflow without an input schema takes the prompt as it is (its JSON value when it parses)."""
    if not needs_input(primitive):
        return True, {}
    try:
        data = json.loads(strip_fences(prompt), strict=False)
    except (json.JSONDecodeError, TypeError):
        if primitive.input_schema is None:
            return True, prompt
        return False, None
    if primitive.input_schema is None:
        return True, data
    try:
        return True, validate_input(primitive, data)
    except ValueError:
        return False, None


def input_response_schema(primitive: Primitive) -> dict[str, Any]:
    schema = dict(primitive.input_schema or {"type": "object"})
    schema.setdefault("title", f"{primitive.id}-input")
    return schema


def input_messages(primitive: Primitive, task: str, prompt: str, error: str | None = None) -> list[ChatMessage]:
    """Ask for the input of a workflow or tool as JSON of its schema."""
    system = (f'You write the input for the {primitive.type} "{primitive.id}": {primitive.description}\n'
              f"Input schema: {compact_schema(primitive.input_schema or {'type': 'object'})}\n"
              "Answer with one JSON value that matches the input schema, and nothing else.")
    user = f"Task: {task}\nRequest: {prompt}"
    if error:
        user += f"\nYour previous answer was not valid: {error}"
    return [ChatMessage("system", system), ChatMessage("user", user)]


def parse_input(primitive: Primitive, text: str) -> Any:
    """The validated input from the model's answer; ValueError says what is wrong."""
    try:
        data = json.loads(strip_fences(text), strict=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    return validate_input(primitive, data)


# --- completion ----------------------------------------------------------------------------------------------------


def completion_schema() -> dict[str, Any]:
    """``final_result`` is listed as required so OpenAI's strict mode applies; the parser accepts it missing."""
    return {
        "title": COMPLETION_TITLE,
        "type": "object",
        "properties": {
            "is_complete": {"type": "boolean", "description": "True when the task is done."},
            "final_result": {"type": "string", "description": "When complete: the answer the user will see."},
            "reason": {"type": "string", "description": "Why the task is or is not complete."},
        },
        "required": ["is_complete", "final_result", "reason"],
        "additionalProperties": False,
    }


def completion_messages(instructions: str, history: list[ChatMessage], task: str, steps: list[StepRecord],
                        recall: list[ChatMessage] | None = None) -> list[ChatMessage]:
    """Ask whether the task is complete after the latest step."""
    system = (instructions.strip() + "\n\n" if instructions and instructions.strip() else "") + (
        "You check whether a task handled by a network of agents, workflows and tools is complete. The user sees "
        "only the final result, not the steps. Answer with one JSON object {\"is_complete\", \"final_result\", "
        "\"reason\"}; when complete, final_result is the full answer for the user.")
    latest = steps[-1] if steps else None
    user = f"Task: {task}\n\n{format_steps(steps)}"
    if latest is not None:
        user += f"\n\nThe {latest.primitive_type} {latest.primitive_id} has just run. Is the task complete?"
    return [ChatMessage("system", system), *history, *(recall or []), ChatMessage("user", user)]


def parse_completion(text: str) -> CompletionCheck:
    data = _json_object(text, "completion check")
    value = _pick(data, "is_complete", "isComplete")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise DecisionError("is_complete must be true or false")
    final = _pick(data, "final_result", "finalResult")
    if final is not None and not isinstance(final, str):
        final = json.dumps(to_jsonable(final), ensure_ascii=False)
    reason = _pick(data, "reason", "completion_reason", "completionReason")
    return CompletionCheck(value, final or None, str(reason or ""))


# --- the final structured object -----------------------------------------------------------------------------------


def final_object_messages(instructions: str, task: str, result: str, steps: list[StepRecord]) -> list[ChatMessage]:
    system = (instructions.strip() + "\n\n" if instructions and instructions.strip() else "") + (
        "Give the final answer to the task as one JSON value that matches the response schema, and nothing else.")
    user = f"Task: {task}\n\n{format_steps(steps)}\n\nFinal result: {clip_result(result)}"
    return [ChatMessage("system", system), ChatMessage("user", user)]


# --- formatting ----------------------------------------------------------------------------------------------------


def format_steps(steps: list[StepRecord]) -> str:
    """The steps as numbered lines, newest kept first when they do not all fit (MAX_STEPS_SHOWN, MAX_STEPS_CHARS)."""
    if not steps:
        return "Steps so far: none."
    lines: list[str] = []
    used = 0
    for s in reversed(steps[-MAX_STEPS_SHOWN:]):
        status = "failed" if s.is_error else "result"
        line = (f"{s.iteration}. {s.primitive_type} {s.primitive_id} (prompt: {_clip(s.prompt, 400)}) -> "
                f"{status}: {clip_result(s.result)}")
        if lines and used + len(line) > MAX_STEPS_CHARS:
            break
        lines.append(line)
        used += len(line)
    hidden = len(steps) - len(lines)
    head = ["Steps so far:"] + ([f"({hidden} earlier steps not shown)"] if hidden else [])
    return "\n".join(head + lines[::-1])


def result_text(value: Any) -> str:
    """A primitive's result as the text the routing agent, the completion check and the events carry."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def clip_result(text: str) -> str:
    return _clip(text, MAX_RESULT_CHARS)


def compact_schema(schema: dict[str, Any]) -> str:
    """A schema as short JSON for a prompt: titles dropped (they only repeat the names)."""
    text = json.dumps(_drop_titles(schema), separators=(",", ":"), ensure_ascii=False)
    return _clip(text, MAX_SCHEMA_CHARS)


def _drop_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_drop_titles(v) for v in node]
    return node


def _clip(text: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    text = " ".join(str(text).split()) if limit <= MAX_DESCRIPTION_CHARS else str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(strip_fences(text), strict=False)
    except json.JSONDecodeError as exc:
        raise DecisionError(f"the {what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(data, dict):
        raise DecisionError(f"the {what} must be a JSON object")
    return data


def _pick(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in data:
            return data[name]
    return None
