"""Workflow REST routes on a real uvicorn server (127.0.0.1, port 0), with httpx; SSE included."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette

from voiceserver.runs.store import InMemoryRunStore
from voiceserver.server.workflow_routes import workflow_routes
from voiceserver.testing.servers import serve_app
from voiceserver.workflows import create_step, create_workflow


class In(BaseModel):
    input: str


class Out(BaseModel):
    output: str


class Day(BaseModel):
    day: str


def build_workflows(store: InMemoryRunStore, gate: asyncio.Event):
    async def greet(ctx):
        await ctx.writer.write({"type": "progress", "step": "greet"})
        return {"output": ctx.input_data.input + " + step-1"}

    async def ask(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"prompt": "Which day?"})
        return {"output": f"{ctx.input_data.output} on {ctx.resume_data.day}"}

    async def wait(ctx):
        await gate.wait()
        return {"output": "released"}

    greet_step = create_step(id="step-1", input_schema=In, output_schema=Out, execute=greet)
    simple = create_workflow(id="test-workflow", input_schema=In, output_schema=Out, storage=store)
    simple.then(greet_step).commit()
    booking = create_workflow(id="booking", input_schema=In, output_schema=Out, storage=store)
    booking.then(create_step(id="greet", input_schema=In, output_schema=Out, execute=greet)).then(
        create_step(id="ask-day", input_schema=Out, output_schema=Out, resume_schema=Day, execute=ask)).commit()
    slow = create_workflow(id="slow", storage=store).then(create_step(id="wait", execute=wait)).commit()
    return {w.id: w for w in (simple, booking, slow)}


@pytest.fixture
async def server():
    gate = asyncio.Event()
    workflows = build_workflows(InMemoryRunStore(), gate)
    app = Starlette(routes=workflow_routes(workflows.get))
    async with serve_app(app) as srv, httpx.AsyncClient(base_url=srv.http_url, timeout=10) as client:
        yield client, gate


async def read_sse(response: httpx.Response) -> list:
    """Parse a server-sent event body into JSON events, checking the exact framing and the [DONE] terminator."""
    assert response.headers["content-type"].startswith("text/event-stream")
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
    frames = body.decode().split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    events = []
    for frame in frames[:-2]:
        assert frame.startswith("data: ") and "\n" not in frame
        events.append(json.loads(frame[len("data: "):]))
    return events


async def test_start_returns_result_json_and_get_reads_it(server):
    client, _ = server
    r = await client.post("/v1/workflows/test-workflow/runs", json={"input_data": {"input": "London"},
                                                                    "run_id": "run-1", "resource_id": "caller-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["result"] == {"output": "London + step-1"}
    assert body["steps"]["step-1"]["status"] == "success" and body["run_id"] == "run-1"
    got = await client.get("/v1/workflows/test-workflow/runs/run-1")
    assert got.status_code == 200 and got.json()["result"] == {"output": "London + step-1"}
    assert got.json()["resource_id"] == "caller-1"
    again = await client.post("/v1/workflows/test-workflow/runs", json={"input_data": {"input": "x"},
                                                                        "run_id": "run-1"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_exists"
    listed = await client.get("/v1/workflows/test-workflow/runs", params={"resource_id": "caller-1"})
    assert [r["run_id"] for r in listed.json()["runs"]] == ["run-1"]


async def test_start_streaming_sse(server):
    client, _ = server
    async with client.stream("POST", "/v1/workflows/test-workflow/runs?stream=true",
                             json={"input_data": {"input": "Paris"}}) as response:
        assert response.status_code == 200
        run_id = response.headers["x-run-id"]
        events = await read_sse(response)
    assert [e["type"] for e in events] == ["workflow-start", "workflow-step-start", "progress",
                                           "workflow-step-result", "workflow-step-finish", "workflow-finish"]
    assert all(e["run_id"] == run_id for e in events)
    assert events[-1]["payload"] == {"status": "success", "result": {"output": "Paris + step-1"}}
    status = await client.get(f"/v1/workflows/test-workflow/runs/{run_id}")
    assert status.json()["status"] == "success"


async def test_suspend_then_resume_over_http_with_sse(server):
    client, _ = server
    r = await client.post("/v1/workflows/booking/runs", json={"input_data": {"input": "Ann"}, "run_id": "b-1"})
    body = r.json()
    assert body["status"] == "suspended" and body["suspended"] == [["ask-day"]]
    assert body["suspensions"][0]["payload"] == {"prompt": "Which day?"}
    bad = await client.post("/v1/workflows/booking/runs/b-1/resume", json={"step": "ask-day",
                                                                            "resume_data": {"dya": "Mon"}})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_input" and error["fields"][0]["field"] == "resume_data.day"
    unknown_step = await client.post("/v1/workflows/booking/runs/b-1/resume", json={"step": "nope",
                                                                                     "resume_data": {"day": "M"}})
    assert unknown_step.status_code == 422 and unknown_step.json()["error"]["fields"][0]["field"] == "step"
    assert (await client.get("/v1/workflows/booking/runs/b-1")).json()["status"] == "suspended"
    async with client.stream("POST", "/v1/workflows/booking/runs/b-1/resume?stream=true",
                             json={"step": "ask-day", "resume_data": {"day": "Monday"}}) as response:
        events = await read_sse(response)
    assert events[0]["type"] == "workflow-start" and events[0]["payload"]["resumed"]["path"] == ["ask-day"]
    assert events[-1]["payload"]["result"] == {"output": "Ann + step-1 on Monday"}
    done = await client.post("/v1/workflows/booking/runs/b-1/resume", json={"resume_data": {"day": "x"}})
    assert done.status_code == 409 and done.json()["error"]["code"] == "invalid_run_state"
    await client.post("/v1/workflows/booking/runs", json={"input_data": {"input": "Bo"}, "run_id": "b-2"})
    dropped = await client.post("/v1/workflows/booking/runs/b-2/cancel")
    assert dropped.status_code == 200 and dropped.json()["status"] == "canceled"
    assert dropped.json()["steps"]["ask-day"]["status"] == "suspended"  # it was waiting, not running
    assert (await client.get("/v1/workflows/booking/runs/b-2")).json()["status"] == "canceled"


async def test_cancel_a_running_run_over_http(server):
    client, gate = server
    start = asyncio.create_task(client.post("/v1/workflows/slow/runs", json={"run_id": "slow-1"}))
    for _ in range(500):
        status = await client.get("/v1/workflows/slow/runs/slow-1")
        if status.status_code == 200 and status.json()["steps"].get("wait"):
            break
        await asyncio.sleep(0.01)
    cancelled = await client.post("/v1/workflows/slow/runs/slow-1/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"
    assert cancelled.json()["steps"]["wait"]["status"] == "canceled"
    started = await start
    assert started.json()["status"] == "canceled"
    again = await client.post("/v1/workflows/slow/runs/slow-1/cancel")
    assert again.status_code == 409
    gate.set()


async def test_errors_404_422_400(server):
    client, _ = server
    r = await client.post("/v1/workflows/missing/runs", json={"input_data": {}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "workflow_not_found"
    r = await client.get("/v1/workflows/test-workflow/runs/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "run_not_found"
    r = await client.post("/v1/workflows/test-workflow/runs/nope/resume", json={})
    assert r.status_code == 404
    r = await client.post("/v1/workflows/test-workflow/runs/nope/cancel")
    assert r.status_code == 404
    r = await client.post("/v1/workflows/test-workflow/runs", json={"input_data": {"inptu": "x"}})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and [f["field"] for f in error["fields"]] == ["input_data.input"]
    r = await client.post("/v1/workflows/test-workflow/runs?stream=true", json={"input_data": {"input": 5}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "input_data.input"
    r = await client.post("/v1/workflows/test-workflow/runs", json={"input_data": {"input": "x"},
                                                                    "run_id": "x' OR '1'='1"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "run_id"
    r = await client.get("/v1/workflows/test-workflow/runs/bad%20id")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_id"
    r = await client.post("/v1/workflows/test-workflow/runs", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await client.post("/v1/workflows/test-workflow/runs", content=b"x" * (2 << 20))
    assert r.status_code == 413
    r = await client.get("/v1/workflows/test-workflow/runs", params={"status": "weird"})
    assert r.status_code == 400
