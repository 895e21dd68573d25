"""Spoken dialog around an agent turn: tool approval by voice, workflows that ask the caller, callback offers.

Pure helpers (yes/no, the spoken approval question, a workflow's prompt and result as speech) plus the one model call
that shapes a caller's free answer into a step's ``resume_schema`` with structured output. The session keeps the
pending state (one approval or one workflow question at a time) and decides what the next utterance means.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .llm.base import ChatMessage, ChatModel, ChatRequest

_YES = re.compile(r"\b(yes|yeah|yep|yup|sure|ok|okay|correct|right|please do|go ahead|do it|absolutely|"
                  r"definitely|of course|affirmative|sounds good|that's right|confirm)\b")
_NO = re.compile(r"\b(no|nope|nah|don't|do not|cancel|stop|never mind|nevermind|negative|not now|wait|"
                 r"decline|skip)\b")


def classify_yes_no(text: str) -> Literal["yes", "no"] | None:
    """"yes", "no", or None when the answer is neither (or both)."""
    words = " " + re.sub(r"[^a-z' ]+", " ", text.lower()) + " "
    yes, no = bool(_YES.search(words)), bool(_NO.search(words))
    if yes and not no:
        return "yes"
    if no and not yes:
        return "no"
    return None


def _humanize(name: str) -> str:
    return re.sub(r"[_\-]+", " ", name).strip()


def _render_args(args: dict[str, Any]) -> str:
    parts = []
    for key, value in args.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        parts.append(f"{_humanize(str(key))} {value}")
    return ", ".join(parts)


def approval_question(tool: Any, tool_name: str, args: dict[str, Any]) -> str:
    """What the caller hears when a tool needs approval.

    A tool may define ``approval_prompt``: a format string over its arguments ("Shall I book a table for {people}
    at {time}?") or a callable taking the arguments and returning the question.
    """
    custom = getattr(tool, "approval_prompt", None)
    if callable(custom):
        text = custom(args)
        if isinstance(text, str) and text.strip():
            return text.strip()
    elif isinstance(custom, str) and custom.strip():
        try:
            return custom.format(**args).strip()
        except (KeyError, IndexError, ValueError):
            pass
    rendered = _render_args(args)
    action = _humanize(tool_name)
    return f"Shall I {action}" + (f" with {rendered}" if rendered else "") + "? Please say yes or no."


def workflow_prompt(payload: Any) -> str | None:
    """The question a suspended step wants spoken (its payload's ``prompt``), if any."""
    if isinstance(payload, dict):
        prompt = payload.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            return prompt.strip()
    return None


def speakable_result(workflow_name: str, result: Any) -> str:
    """A workflow's result as a sentence: its ``message`` / ``text`` / ``summary`` field, else a short rendering."""
    if isinstance(result, str) and result.strip().startswith("{"):
        try:  # results that travelled as JSON text (an agent network's step result)
            result = json.loads(result)
        except json.JSONDecodeError:
            pass
    if isinstance(result, str) and result.strip():
        return result.strip()
    if isinstance(result, dict):
        for key in ("message", "text", "summary", "confirmation"):
            value = result.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        if result:
            return f"Done. {_humanize(workflow_name).capitalize()}: {_render_args(result)}."
    return f"Done. The {_humanize(workflow_name)} is complete."


def _schema_of(schema: Any) -> dict[str, Any] | None:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    return None


async def shape_answer(model: ChatModel, schema: Any, question: str, answer: str) -> dict[str, Any] | None:
    """Turn the caller's free answer into JSON of ``schema`` (structured output); None when it does not fit.

    Without a schema the answer is passed as ``{"answer": text}``.
    """
    json_schema = _schema_of(schema)
    if json_schema is None:
        return {"answer": answer}
    request = ChatRequest(
        messages=[
            ChatMessage("system", "Extract the caller's answer to the question as JSON matching the schema. "
                                  "Use only what the caller said."),
            ChatMessage("user", f"Question: {question}\nCaller's answer: {answer}"),
        ],
        response_schema=json_schema, max_tokens=200, temperature=0.0)
    result = await model.complete(request)
    try:
        data = json.loads(result.text)
    except (json.JSONDecodeError, TypeError):
        return None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(data).model_dump(mode="json")
        except ValidationError:
            return None
    return data if isinstance(data, dict) else None


@dataclass
class PendingApproval:
    """A tool call waiting for the caller's yes or no (``network``: inside an agent-network run)."""

    agent: Any
    run_id: str
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    question: str
    asked: int = 1
    network: bool = False


@dataclass
class PendingWorkflow:
    """A workflow run waiting for the caller: a step's question, or an offer to continue an earlier run."""

    workflow: Any
    run_id: str
    step: list[str]
    prompt: str
    resume_schema: Any = None
    offer: bool = False  # True: we asked "shall we continue?" and wait for yes/no
    asked: int = 1
    network_run_id: str | None = None  # the workflow runs inside an agent-network run: resume that run


MAX_REASKS = 2
