"""The chat route group of the loopback OpenAI server: chat completions and the model list, as documented.

    routes = chat_routes(["Hello there.", {"tool_calls": [{"name": "weather", "arguments": {"location": "Paris"}}]}])
    async with FakeOpenAI(routes, api_key="test-key") as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test-key")
        ...
    routes.calls, routes.completed_streams, routes.aborted_streams   # what the server saw

- ``POST /v1/chat/completions``: a JSON body with ``model`` and ``messages``. Each successful call plays the next item
  of ``script`` (the last one repeats; by default it echoes the last user message). An item is a string (a text
  reply), a dict, or a callable ``(body) -> str | dict``. Dict keys: ``text``; ``tool_calls`` (a list of ``{"name",
  "arguments": dict or raw string, "id"?}``); ``finish_reason`` (default "tool_calls" with tool calls, else "stop");
  ``usage`` (``{"prompt_tokens", "completion_tokens"}``, default: word counts); ``status`` + ``message`` to answer
  with that HTTP error instead; ``first_delay_s`` and ``chunk_delay_s``; ``fragments`` (how many pieces each tool call's
  arguments are split into when streamed, default 3).
- With ``"stream": true`` the reply is Server-Sent Events: ``data: {chat.completion.chunk}`` lines, a first chunk
  with the role, text in word pieces, each tool call as a first fragment (id, type, name, empty arguments) followed
  by argument fragments, a last chunk with ``finish_reason``, a usage chunk (empty ``choices``) when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``. Without it, one ``chat.completion`` object.
- ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``.

Every request body is recorded in ``request.app.state.fake.requests`` as ``(path, body)`` before it is checked, so
tests can count retries. A wrong bearer token (``api_key`` here, else ``FakeOpenAI(api_key=...)``) gets 401 with
``{"error": {"message", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}``; the first
``fail_first`` calls get ``fail_status`` (500) with a ``server_error`` body; a malformed body gets 400.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

ScriptItem = str | dict[str, Any] | Callable[[dict[str, Any]], "str | dict[str, Any]"]


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    """OpenAI's documented error body."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


def _words(text: str) -> int:
    return len(text.split())


class ChatRoutes(list):  # a list[Route], so FakeOpenAI takes it as a route group
    """The chat route group plus what it observed: ``calls`` (answered requests, errors included),
    ``completed_streams`` and ``aborted_streams`` (streams the client closed before the end), ``stream_aborted``
    (an asyncio.Event set on the first abort)."""

    def __init__(self, routes: list[BaseRoute]):
        super().__init__(routes)
        self.calls = 0
        self.completed_streams = 0
        self.aborted_streams = 0
        self.stream_aborted = asyncio.Event()


def chat_routes(
    script: list[ScriptItem] | None = None,
    *,
    api_key: str | None = None,
    fail_first: int = 0,
    fail_status: int = 500,
    chunk_delay_s: float = 0.0,
    models: list[str] | None = None,
) -> ChatRoutes:
    """Routes for ``/v1/chat/completions`` and ``/v1/models`` (see the module docstring for the script format)."""
    items: list[ScriptItem] = list(script or [])
    state = {"served": 0, "failed": 0}
    model_ids = models or ["gpt-4o-mini", "gpt-4o"]
    holder: list[ChatRoutes] = []

    def auth_error(request: Request) -> JSONResponse | None:
        expected = api_key if api_key is not None else getattr(request.app.state.fake, "api_key", None)
        if expected is None:
            return None
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if given == expected:
            return None
        shown = (given[:3] + "*" * 4 + given[-2:]) if len(given) > 6 else "*" * len(given)
        return _error(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                      "https://platform.openai.com/account/api-keys.", "invalid_request_error", code="invalid_api_key")

    def next_reply(body: dict[str, Any]) -> dict[str, Any]:
        if items:
            item = items[min(state["served"], len(items) - 1)]
        else:
            last_user = next((m.get("content") for m in reversed(body["messages"])
                              if isinstance(m, dict) and m.get("role") == "user"), "")
            item = f"You said: {last_user}" if isinstance(last_user, str) else "Hello."
        state["served"] += 1
        if callable(item):
            item = item(body)
        return {"text": item} if isinstance(item, str) else dict(item)

    async def completions(request: Request) -> Response:
        routes = holder[0]
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        request.app.state.fake.requests.append(("/v1/chat/completions", body))
        routes.calls += 1
        if (denied := auth_error(request)) is not None:
            return denied
        if state["failed"] < fail_first:
            state["failed"] += 1
            return _error(fail_status, "The server had an error while processing your request.", "server_error")
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return _error(400, "you must provide a model parameter", "invalid_request_error", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", "invalid_request_error", param="messages")
        reply = next_reply(body)
        if reply.get("status"):
            kind = "server_error" if reply["status"] >= 500 else "invalid_request_error"
            return _error(int(reply["status"]), reply.get("message", "scripted error"), kind, code=reply.get("code"))
        if reply.get("first_delay_s"):
            await asyncio.sleep(reply["first_delay_s"])
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(routes, body, reply, include_usage, chunk_delay_s),
                                     media_type="text/event-stream", headers={"cache-control": "no-cache"})
        return JSONResponse(_completion(body, reply))

    async def list_models(request: Request) -> Response:
        request.app.state.fake.requests.append(("/v1/models", None))
        if (denied := auth_error(request)) is not None:
            return denied
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"} for m in model_ids]})

    routes = ChatRoutes([Route("/v1/chat/completions", completions, methods=["POST"]),
                         Route("/v1/models", list_models, methods=["GET"])])
    holder.append(routes)
    return routes


def _tool_calls(reply: dict[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(reply.get("tool_calls") or []):
        args = call.get("arguments", {})
        calls.append({"id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}", "name": call["name"],
                      "arguments": args if isinstance(args, str) else json.dumps(args), "index": i})
    return calls


def _usage(body: dict[str, Any], reply: dict[str, Any], pieces: int) -> dict[str, int]:
    given = reply.get("usage") or {}
    prompt = given.get("prompt_tokens", sum(_words(m.get("content") or "") for m in body["messages"]
                                            if isinstance(m, dict) and isinstance(m.get("content"), str)))
    completion = given.get("completion_tokens", pieces)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(reply: dict[str, Any]) -> str:
    return reply.get("finish_reason") or ("tool_calls" if reply.get("tool_calls") else "stop")


def _completion(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    text = reply.get("text") or ""
    calls = _tool_calls(reply)
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply)}],
            "usage": _usage(body, reply, _words(text) + len(calls))}


def _split(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` pieces (fewer if it is shorter)."""
    size = max(1, -(-len(text) // max(parts, 1)))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


async def _stream(routes: ChatRoutes, body: dict[str, Any], reply: dict[str, Any], include_usage: bool,
                  default_delay_s: float) -> AsyncIterator[bytes]:
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    delay = reply.get("chunk_delay_s", default_delay_s)

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                               "model": body["model"], "system_fingerprint": None, "choices": choices}
        if include_usage:
            obj["usage"] = usage  # null on every chunk but the last, as documented
        return f"data: {json.dumps(obj)}\n\n".encode()

    def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    completed = False
    try:
        yield chunk(delta({"role": "assistant", "content": "", "refusal": None}))
        pieces = re.findall(r"\S+\s*|\s+", reply.get("text") or "")
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            yield chunk(delta({"content": piece}))
        calls = _tool_calls(reply)
        for call in calls:
            if delay:
                await asyncio.sleep(delay)
            yield chunk(delta({"tool_calls": [{"index": call["index"], "id": call["id"], "type": "function",
                                               "function": {"name": call["name"], "arguments": ""}}]}))
            for fragment in _split(call["arguments"], int(reply.get("fragments", 3))):
                if delay:
                    await asyncio.sleep(delay)
                yield chunk(delta({"tool_calls": [{"index": call["index"], "function": {"arguments": fragment}}]}))
        yield chunk(delta({}, _finish_reason(reply)))
        if include_usage:
            yield chunk([], _usage(body, reply, len(pieces) + len(calls)))
        yield b"data: [DONE]\n\n"
        completed = True
        routes.completed_streams += 1
    finally:
        if not completed:
            routes.aborted_streams += 1
            routes.stream_aborted.set()
