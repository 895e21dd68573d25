"""Memory REST routes for the app that embeds the server.

    GET    /v1/memory/threads?resource=R[&page=0&per_page=100&order_by=updated_at&direction=desc]
    GET    /v1/memory/threads/{id}/messages[?resource=R&page=0&per_page=50]
    DELETE /v1/memory/threads/{id}[?resource=R]
    GET    /v1/memory/working?resource=R[&thread=T]
    PUT    /v1/memory/working?resource=R[&thread=T]    body {"working_memory": "markdown" | {...}}

Responses are JSON. Errors are ``{"error": {"code", "message"}}``: 400 ``invalid_id`` / ``invalid_request`` /
``invalid_working_memory``, 403 ``thread_owner_mismatch`` / ``memory_read_only``, 404 ``thread_not_found``,
409 ``not_enabled``, 413 ``body_too_large``, 503 ``storage_unavailable``. When ``resource`` is given for a thread
route, the thread must belong to it (a thread's owner never changes).

Who asks (server/auth.py, docs/security.md): a caller token sees its own resource only. ``resource`` may be left
out (it is the token's); naming another is 403 ``forbidden_resource``; another caller's thread is 404
``thread_not_found``, as if it did not exist; a token bound to one thread sees that thread only. An admin key (or an
open server) may read any thread, with or without ``resource``: pass ``resource`` to have the owner checked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..ids import InvalidIdError, validate_id
from ..logs import get_logger
from ..memory import Memory, MemoryStoreError, ThreadNotFoundError, ThreadOwnerError
from .auth import request_caller

log = get_logger("SERVER")
MAX_BODY_BYTES = 64 * 1024
_STATUS = {"invalid_id": 400, "invalid_request": 400, "invalid_working_memory": 400, "missing_thread": 400,
           "invalid_message": 400, "thread_owner_mismatch": 403, "memory_read_only": 403, "thread_not_found": 404,
           "not_enabled": 409, "thread_exists": 409, "forbidden_resource": 403}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MemoryStoreError(f"{name} must be an integer", code="invalid_request") from None
    if not low <= value <= high:
        raise MemoryStoreError(f"{name} must be from {low} to {high}", code="invalid_request")
    return value


def _id(request: Request, name: str, what: str, *, required: bool) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        if required:
            raise MemoryStoreError(f"the query parameter {name} is required", code="invalid_request")
        return None
    return validate_id(value, what)


def _handled(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Map memory errors to JSON error responses; nothing else escapes as a 500 with a stack trace."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidIdError as exc:
            return _error(400, "invalid_id", str(exc))
        except ThreadOwnerError as exc:
            if request_caller(request).bound:  # another caller's thread: not even its existence is theirs to know
                return _error(404, "thread_not_found", f"no thread {exc.thread_id!r}")
            return _error(403, exc.code, str(exc))
        except MemoryStoreError as exc:
            status = _STATUS.get(exc.code)
            if status is None:
                log.warning(f"memory request failed: {exc}")
                return _error(503, "storage_unavailable", "memory storage is unavailable")
            return _error(status, exc.code, str(exc))

    return endpoint


def _scope(request: Request, *, resource_required: bool) -> tuple[str | None, str | None]:
    """The (resource, thread) a request may use: the query's, checked against a caller token and filled from it."""
    caller = request_caller(request)
    resource = _id(request, "resource", "resource", required=resource_required and not caller.bound)
    thread = _id(request, "thread", "thread", required=False)
    if not caller.bound:
        return resource, thread
    problem = caller.conflict(resource, thread)
    if problem is not None:
        raise MemoryStoreError(problem, code="forbidden_resource")
    return caller.resource, thread or caller.thread


def memory_routes(memory: Memory) -> list[Route]:
    """The memory REST routes over ``memory``, to mount in the server's Starlette app."""

    async def _thread_for(request: Request) -> tuple[str, str | None]:
        thread_id = validate_id(request.path_params["thread_id"], "thread")
        caller = request_caller(request)
        resource = _scope(request, resource_required=False)[0]
        if caller.thread is not None and thread_id != caller.thread:
            raise ThreadNotFoundError(thread_id)  # a token for one thread: every other one is out of sight
        thread = await memory.get_thread_by_id(thread_id)
        if thread is None:
            raise ThreadNotFoundError(thread_id)
        if resource is not None and thread.resource_id != resource:
            raise ThreadOwnerError(thread_id, thread.resource_id, resource)
        return thread_id, resource

    async def list_threads(request: Request) -> Response:
        resource, _ = _scope(request, resource_required=True)
        assert resource is not None
        order_by = request.query_params.get("order_by", "updated_at")
        direction = request.query_params.get("direction", "desc")
        page_number = _int(request, "page", 0, 0, 1_000_000)
        per_page = _int(request, "per_page", 100, 1, 1000)
        only = request_caller(request).thread
        if only is not None:  # a token for one thread lists that thread alone
            thread = await memory.get_thread_by_id(only)
            threads = [thread] if thread is not None and thread.resource_id == resource and page_number == 0 else []
            return JSONResponse({"threads": [t.to_dict() for t in threads], "total": len(threads),
                                 "page": page_number, "per_page": per_page, "has_more": False})
        page = await memory.list_threads(resource, page=page_number, per_page=per_page, order_by=order_by,
                                         direction=direction)
        return JSONResponse({"threads": [t.to_dict() for t in page.threads], "total": page.total,
                             "page": page.page, "per_page": page.per_page, "has_more": page.has_more})

    async def thread_messages(request: Request) -> Response:
        thread_id, resource = await _thread_for(request)
        result = await memory.recall(thread_id, resource, page=_int(request, "page", 0, 0, 1_000_000),
                                     per_page=_int(request, "per_page", 50, 1, 1000))
        return JSONResponse({"thread_id": thread_id, "messages": [m.to_dict() for m in result.messages],
                             "total": result.total, "page": result.page, "per_page": result.per_page,
                             "has_more": result.has_more})

    async def delete_thread(request: Request) -> Response:
        thread_id, _ = await _thread_for(request)
        await memory.delete_thread(thread_id)
        return JSONResponse({"deleted": True, "thread_id": thread_id})

    def _working_body(text: str | None) -> dict[str, Any]:
        options = memory.options.working_memory
        schema_mode = options.schema is not None
        return {"scope": options.scope, "format": "json" if schema_mode else "markdown", "working_memory": text,
                "data": json.loads(text) if schema_mode and text else None,
                "template": None if schema_mode else options.template}

    async def get_working(request: Request) -> Response:
        if not memory.options.working_memory.enabled:
            raise MemoryStoreError("working memory is not enabled", code="not_enabled")
        resource, thread = _scope(request, resource_required=True)
        text = await memory.get_working_memory(thread, resource)
        return JSONResponse({"resource": resource, "thread": thread, **_working_body(text)})

    async def put_working(request: Request) -> Response:
        resource, thread = _scope(request, resource_required=True)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:  # stop reading: never buffer an oversized body
                return _error(413, "body_too_large", f"the body is limited to {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a number over 4300 digits
            raise MemoryStoreError("the body must be JSON: {\"working_memory\": ...}", code="invalid_request") from None
        if not isinstance(body, dict) or "working_memory" not in body:
            raise MemoryStoreError("the body must be {\"working_memory\": ...}", code="invalid_request")
        await memory.update_working_memory(thread, resource, working_memory=body["working_memory"])
        text = await memory.get_working_memory(thread, resource)
        return JSONResponse({"resource": resource, "thread": thread, **_working_body(text)})

    return [
        Route("/v1/memory/threads", _handled(list_threads), methods=["GET"]),
        Route("/v1/memory/threads/{thread_id}/messages", _handled(thread_messages), methods=["GET"]),
        Route("/v1/memory/threads/{thread_id}", _handled(delete_thread), methods=["DELETE"]),
        Route("/v1/memory/working", _handled(get_working), methods=["GET"]),
        Route("/v1/memory/working", _handled(put_working), methods=["PUT"]),
    ]
