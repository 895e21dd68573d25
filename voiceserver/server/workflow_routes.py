"""HTTP routes for workflow runs: start (JSON or server-sent events), status, resume, cancel, list.

    POST /v1/workflows/{id}/runs                    {"input_data", "run_id"?, "resource_id"?, "initial_state"?}
    GET  /v1/workflows/{id}/runs                    ?resource_id=&status=&limit=
    GET  /v1/workflows/{id}/runs/{run_id}
    POST /v1/workflows/{id}/runs/{run_id}/resume    {"step"?, "resume_data"}
    POST /v1/workflows/{id}/runs/{run_id}/cancel

``?stream=true`` on start and resume answers ``text/event-stream``: ``data: {event}\\n\\n`` per event, then
``data: [DONE]\\n\\n``. Errors are ``{"error": {"code", "message", "fields"?}}``: 404 unknown workflow or run,
400 malformed id or body, 409 wrong run state, 413 body too large, 422 input that does not fit a schema.

Who asks (server/auth.py, docs/security.md): a caller token starts runs for its own resource (``resource_id`` may be
left out; naming another is 403 ``forbidden_resource``), lists only its own runs, and reads, resumes or cancels only
its own: another caller's run, or one started for nobody, is 404 ``run_not_found``. An admin key (or an open server)
sees every run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voiceserver.ids import InvalidIdError, validate_id
from voiceserver.logs import get_logger
from voiceserver.server.auth import request_caller
from voiceserver.workflows import (
    RunStateError,
    SchemaValidationError,
    UnknownStepError,
    Workflow,
    WorkflowError,
    WorkflowStream,
)

log = get_logger("SERVER")

MAX_BODY_BYTES = 1 << 20
MAX_LIST_LIMIT = 1000
RUN_STATUSES = ("running", "success", "failed", "suspended", "canceled")


class HttpError(Exception):
    """An error answer: status, code, message and optional field list."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields is not None:
            error["fields"] = self.fields
        return JSONResponse({"error": error}, status_code=self.status)


def _invalid(e: SchemaValidationError, prefix: str) -> HttpError:
    """A 422 whose field paths are relative to the request body (``input_data.name``)."""
    fields = [{**f, "field": f"{prefix}.{f['field']}" if f["field"] else prefix} for f in e.fields]
    return HttpError(422, "invalid_input", str(e), fields)


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object body (``{}`` when empty), read with a size limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, a number over 4300 digits
        raise HttpError(400, "invalid_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_json", "request body must be a JSON object")
    return body


def _id(value: Any, what: str, field: str | None = None) -> str:
    try:
        return validate_id(value, what)
    except InvalidIdError as e:
        if field is not None:  # an id in the body is a field of the input
            raise HttpError(422, "invalid_input", str(e), [{"field": field, "message": str(e),
                                                            "type": "invalid_id"}]) from None
        raise HttpError(400, InvalidIdError.code, str(e)) from None


def _wants_stream(request: Request) -> bool:
    return request.query_params.get("stream", "").lower() in ("1", "true", "yes")


async def _sse(stream: WorkflowStream) -> AsyncIterator[bytes]:
    async for event in stream:
        yield b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _sse_response(stream: WorkflowStream, run_id: str) -> StreamingResponse:
    return StreamingResponse(_sse(stream), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-Id": run_id})


def workflow_routes(get_workflow: Callable[[str], Workflow | None]) -> list[Route]:
    """The workflow REST routes; ``get_workflow(id)`` returns the registered workflow or None."""

    def find(request: Request) -> Workflow:
        workflow_id = _id(request.path_params["workflow_id"], "workflow")
        workflow = get_workflow(workflow_id)
        if workflow is None:
            raise HttpError(404, "workflow_not_found", f"no workflow {workflow_id!r}")
        return workflow

    async def visible_run(request: Request, workflow: Workflow) -> Any:
        """The run's result if the caller may see it (an admin: any; a token: its resource's), else a 404."""
        run_id = _id(request.path_params["run_id"], "run")
        result = await workflow.get_run(run_id)
        if result is None or not request_caller(request).owns(result.resource_id):
            raise HttpError(404, "run_not_found", f"no run {run_id!r} of workflow {workflow.id!r}")
        return result

    async def find_run(request: Request, workflow: Workflow) -> Any:
        result = await visible_run(request, workflow)
        return await workflow.create_run(run_id=result.run_id)

    def resource_for(request: Request, asked: str | None) -> str | None:
        """The resource a request acts for: the one it names, checked against a caller token and filled from it."""
        caller = request_caller(request)
        if not caller.bound:
            return asked
        problem = caller.conflict(asked)
        if problem is not None:
            raise HttpError(403, "forbidden_resource", problem)
        return caller.resource

    def handler(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except HttpError as e:
                return e.response()
            except SchemaValidationError as e:
                return _invalid(e, "input").response()
            except InvalidIdError as e:
                return HttpError(400, InvalidIdError.code, str(e)).response()
            except UnknownStepError as e:
                return HttpError(422, e.code, str(e), [{"field": "step", "message": str(e),
                                                        "type": "unknown_step"}]).response()
            except RunStateError as e:
                return HttpError(409, e.code, str(e)).response()
            except WorkflowError as e:
                return HttpError(409, e.code, str(e)).response()

        return endpoint

    async def start(request: Request) -> Response:
        workflow = find(request)
        body = await _body(request)
        run_id = _id(body["run_id"], "run", "run_id") if body.get("run_id") is not None else None
        resource_id = resource_for(request, _id(body["resource_id"], "resource", "resource_id")
                                   if body.get("resource_id") is not None else None)
        state = body.get("initial_state")
        if state is not None and not isinstance(state, dict):  # the caller's field, not a broken workflow (409)
            raise HttpError(422, "invalid_input", "initial_state must be an object",
                            [{"field": "initial_state", "message": "expected an object", "type": "dict_type"}])
        if run_id is not None and await workflow.get_run(run_id) is not None:
            raise HttpError(409, "run_exists", f"run {run_id!r} already exists; resume or read it instead")
        run = await workflow.create_run(run_id=run_id, resource_id=resource_id)
        if run.status != "pending":
            raise HttpError(409, "run_exists", f"run {run.run_id!r} already exists")
        try:
            if _wants_stream(request):
                stream = run.stream(body.get("input_data"), initial_state=body.get("initial_state"))
                return _sse_response(stream, run.run_id)
            result = await run.start(body.get("input_data"), initial_state=body.get("initial_state"))
        except SchemaValidationError as e:
            raise _invalid(e, "initial_state" if e.what.startswith("initial state") else "input_data") from None
        return JSONResponse(result.to_dict())

    async def list_runs(request: Request) -> Response:
        workflow = find(request)
        query = request.query_params
        resource_id = resource_for(request, _id(query["resource_id"], "resource") if "resource_id" in query else None)
        status = query.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise HttpError(400, "invalid_status", f"status must be one of {', '.join(RUN_STATUSES)}")
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            raise HttpError(400, "invalid_limit", "limit must be an integer") from None
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise HttpError(400, "invalid_limit", f"limit must be 1..{MAX_LIST_LIMIT}")
        runs = await workflow.list_runs(resource_id=resource_id, status=status, limit=limit)
        return JSONResponse({"runs": [r.to_dict() for r in runs]})

    async def get_run(request: Request) -> Response:
        result = await visible_run(request, find(request))
        return JSONResponse(result.to_dict())

    async def resume(request: Request) -> Response:
        workflow = find(request)
        run = await find_run(request, workflow)
        body = await _body(request)
        step = body.get("step")
        if step is not None and not (isinstance(step, str) or (
                isinstance(step, list) and step and all(isinstance(s, str) for s in step))):
            raise HttpError(422, "invalid_input", "step must be a step id or a list of step ids",
                            [{"field": "step", "message": "expected a string or a list of strings",
                              "type": "string_type"}])
        try:
            if _wants_stream(request):
                return _sse_response(run.resume_stream(step=step, resume_data=body.get("resume_data")), run.run_id)
            result = await run.resume(step=step, resume_data=body.get("resume_data"))
        except SchemaValidationError as e:
            raise _invalid(e, "resume_data") from None
        return JSONResponse(result.to_dict())

    async def cancel(request: Request) -> Response:
        workflow = find(request)
        run = await find_run(request, workflow)
        if run.status in ("success", "failed", "canceled"):
            raise HttpError(409, "run_finished", f"run {run.run_id!r} has already finished ({run.status})")
        result = await run.cancel()
        return JSONResponse(result.to_dict())

    prefix = "/v1/workflows/{workflow_id}/runs"
    return [
        Route(prefix, handler(start), methods=["POST"]),
        Route(prefix, handler(list_runs), methods=["GET"]),
        Route(prefix + "/{run_id}", handler(get_run), methods=["GET"]),
        Route(prefix + "/{run_id}/resume", handler(resume), methods=["POST"]),
        Route(prefix + "/{run_id}/cancel", handler(cancel), methods=["POST"]),
    ]
