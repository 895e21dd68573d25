"""Turning a ChatRequest into the prompt text a local model reads (pure functions, no model needed).

The local model sees the conversation through the chat template stored in its GGUF file (SmolLM2's is ChatML). Three
things a small model's template does not know are folded into plain messages here:

- tools: described at the end of the system prompt, with the JSON reply format the grammar enforces;
- assistant tool calls: rendered as that same JSON (``{"tool": name, "arguments": {...}}``) so the model sees its own
  earlier decisions in the form it is asked to produce;
- tool results: a message with role ``tool`` (ChatML accepts any role name; SmolLM2 answers better from it than from a
  user message), falling back to a user message ``Result of tool <name>: ...`` for templates that reject the role.

The system prompt stays first and unchanged between turns, so llama.cpp's prompt cache can skip re-reading it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .base import ChatMessage, ToolSpec

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

NONE_TOOL = "none"  # the decision value meaning "answer without a tool"


def compact_schema(schema: Any) -> Any:
    """A JSON schema without titles (they cost prompt tokens and tell a small model nothing)."""
    if isinstance(schema, dict):
        return {k: compact_schema(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [compact_schema(v) for v in schema]
    return schema


def describe_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> str:
    """A short, example-like rendering of a JSON schema: ``{"location": string, "days": integer (optional)}``.

    A 135M model picks tools and fills arguments far better from this than from the raw JSON schema.
    """
    if not isinstance(schema, dict) or depth > 4:
        return "any"
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        return describe_schema(defs[ref.rsplit("/", 1)[-1]], defs, depth + 1)
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(describe_schema(s, defs, depth + 1) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(describe_schema({**schema, "type": k}, defs, depth + 1) for k in kind)
    if kind == "array":
        return f"[{describe_schema(schema.get('items', {}), defs, depth + 1)}, ...]"
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required", []))
        fields = [f"{json.dumps(name)}: {describe_schema(sub, defs, depth + 1)}" + ("" if name in required
                                                                                      else " (optional)")
                  for name, sub in schema.get("properties", {}).items()]
        return "{" + ", ".join(fields) + "}" if fields else "{...}"
    return str(kind) if kind else "any"


def tool_section(tools: list[ToolSpec], tool_choice: str) -> str:
    """The part of the system prompt that lists the tools and the reply format the grammar will enforce."""
    lines = ["You can call these tools:"]
    for tool in tools:
        params = describe_schema(tool.parameters or {"type": "object"})
        lines.append(f"- {tool.name}: {tool.description.strip()} Arguments: {params}")
    if tool_choice == "auto":
        lines.append('Reply with JSON only: {"tool": "<tool name>", "arguments": {...}} to call a tool, '
                     'or {"tool": "none"} if no tool is needed.')
    elif tool_choice == "required":
        lines.append('Reply with JSON only: {"tool": "<tool name>", "arguments": {...}} to call a tool.')
    else:
        lines.append(f'Reply with JSON only: {{"tool": "{tool_choice}", "arguments": {{...}}}} to call {tool_choice}.')
    return "\n".join(lines)


def schema_section(schema: dict[str, Any]) -> str:
    """The system prompt line announcing structured output."""
    return "Reply with JSON only, matching this JSON schema: " + json.dumps(compact_schema(schema))


def decision_json(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)


def to_template_messages(
    messages: list[ChatMessage],
    *,
    tools: list[ToolSpec] | None = None,
    tool_choice: str = "auto",
    response_schema: dict[str, Any] | None = None,
    tool_role: bool = True,
    fold_tool_results: bool = False,
) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` dicts for a chat template, with tools and schema folded into the system prompt.

    ``tool_role=False`` renders tool results as user messages (for templates that only know system/user/assistant).
    ``fold_tool_results=True`` (answering after tools, with no tools offered) drops the tool-call JSON and adds each
    result to the user message it answers: a small model then answers in words instead of imitating the JSON.
    """
    names: dict[str, str] = {}  # tool_call_id -> tool name, to label results
    out: list[dict[str, str]] = []
    folded: set[int] = set()  # indexes in `out` of user messages that received tool results
    for msg in messages:
        if msg.role == "assistant" and msg.tool_calls:
            for call in msg.tool_calls:
                names[call.id] = call.name
            if fold_tool_results:
                if msg.content:
                    out.append({"role": "assistant", "content": msg.content})
                continue
            parts = [msg.content] if msg.content else []
            parts += [decision_json(c.name, c.arguments) for c in msg.tool_calls]
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif msg.role == "tool":
            name = msg.name or names.get(msg.tool_call_id or "", "tool")
            content = msg.content or ""
            last_user = next((i for i in range(len(out) - 1, -1, -1) if out[i]["role"] == "user"), None)
            if fold_tool_results and last_user is not None:
                out[last_user] = {"role": "user",
                                  "content": f"{out[last_user]['content']}\n\nThe {name} tool returned: {content}"}
                folded.add(last_user)
            elif tool_role:
                out.append({"role": "tool", "content": content})
            else:
                out.append({"role": "user", "content": f"Result of tool {name}: {content}"})
        else:
            out.append({"role": msg.role, "content": msg.content or ""})
    for i in folded:
        out[i] = {"role": "user", "content": out[i]["content"] + "\nAnswer my question using this result."}

    extras = []
    if tools and tool_choice != "none":
        extras.append(tool_section(tools, tool_choice))
    if response_schema is not None:
        extras.append(schema_section(response_schema))
    if extras:
        extra = "\n\n".join(extras)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": (out[0]["content"].rstrip() + "\n\n" + extra).strip()}
        else:
            out.insert(0, {"role": "system", "content": extra})
    return out


class ChatTemplate:
    """A GGUF chat template (Jinja2, rendered the way Hugging Face does) with a ChatML fallback."""

    def __init__(self, template: str | None = None, *, bos_token: str = "", eos_token: str = ""):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # jinja2 comes with llama-cpp-python

        self.source = template or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(self.source, eos_token=eos_token, bos_token=bos_token,
                                              add_generation_prompt=True)
        self._tool_role: bool | None = None  # learnt on first use: does the template accept role "tool"?

    @classmethod
    def from_llama(cls, llm: Any) -> ChatTemplate:
        """The template stored in a loaded ``llama_cpp.Llama``'s metadata (ChatML if it has none)."""
        template = llm.metadata.get("tokenizer.chat_template")

        def token_text(token_id: int) -> str:
            try:
                return llm._model.token_get_text(token_id) if token_id >= 0 else ""
            except Exception:  # noqa: BLE001 - a vocabulary without that token
                return ""

        return cls(template, bos_token=token_text(llm.token_bos()), eos_token=token_text(llm.token_eos()))

    def render(self, messages: list[ChatMessage], **kwargs: Any) -> str:
        """The prompt text for ``messages``, ending where the assistant's reply starts."""
        if self._tool_role is not False:
            try:
                text = self._formatter(messages=to_template_messages(messages, tool_role=True, **kwargs)).prompt
                if any(m.role == "tool" for m in messages):
                    self._tool_role = True
                return text
            except Exception:  # the template rejects role "tool" (raise_exception); use user turns
                if not any(m.role == "tool" for m in messages):
                    raise
                self._tool_role = False
        return self._formatter(messages=to_template_messages(messages, tool_role=False, **kwargs)).prompt


@dataclass
class StopMatcher:
    """Cuts streamed text at the first stop string, holding back text that may be the start of one."""

    stops: list[str]
    _pending: str = ""
    stopped: bool = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit now; sets ``stopped`` when a stop string appears."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._pending + text
        cut = min((i for i in (buf.find(s) for s in self.stops if s) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return buf[:cut]
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        self._pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        """Text held back at the end of the stream (it was not a stop string after all)."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out
