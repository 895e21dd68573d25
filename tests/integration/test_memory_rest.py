"""The memory REST routes on a real uvicorn server (127.0.0.1, port 0) with httpx."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from voiceserver.memory import LanceDBStore, Memory, Message
from voiceserver.server.memory_routes import memory_routes
from voiceserver.testing.servers import serve_app


@pytest.fixture
async def api(tmp_path):
    memory = Memory(LanceDBStore(tmp_path / "mem"), embedder=None,
                    options={"working_memory": {"enabled": True, "template": "# User\n- Name:\n"}})
    await memory.save_messages([Message("user", f"ada says {i}", "ada-call", "ada") for i in range(3)])
    await memory.save_messages([Message("user", "bob says hi", "bob-call", "bob")])
    async with serve_app(Starlette(routes=memory_routes(memory))) as server, \
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client, memory
    await memory.close()


async def test_list_threads_and_messages(api):
    client, _ = api
    response = await client.get("/v1/memory/threads", params={"resource": "ada"})
    assert response.status_code == 200
    body = response.json()
    assert [t["id"] for t in body["threads"]] == ["ada-call"] and body["total"] == 1 and not body["has_more"]
    assert body["threads"][0]["resource_id"] == "ada"
    response = await client.get("/v1/memory/threads/ada-call/messages", params={"resource": "ada", "per_page": 2})
    body = response.json()
    assert [m["content"] for m in body["messages"]] == ["ada says 0", "ada says 1"] and body["has_more"]
    page2 = (await client.get("/v1/memory/threads/ada-call/messages", params={"page": 1, "per_page": 2})).json()
    assert [m["content"] for m in page2["messages"]] == ["ada says 2"]


async def test_errors_have_codes(api):
    client, _ = api
    cases = [
        ("GET", "/v1/memory/threads", {"resource": "x' OR '1'='1"}, 400, "invalid_id"),
        ("GET", "/v1/memory/threads", {"resource": "a" * 10_000}, 400, "invalid_id"),
        ("GET", "/v1/memory/threads", {}, 400, "invalid_request"),
        ("GET", "/v1/memory/threads", {"resource": "ada", "per_page": "lots"}, 400, "invalid_request"),
        ("GET", "/v1/memory/threads/x'%20OR%20'1'='1/messages", {}, 400, "invalid_id"),
        ("GET", "/v1/memory/threads/..etc/messages", {}, 400, "invalid_id"),
        ("GET", "/v1/memory/threads/nope/messages", {}, 404, "thread_not_found"),
        ("GET", "/v1/memory/threads/ada-call/messages", {"resource": "bob"}, 403, "thread_owner_mismatch"),
        ("DELETE", "/v1/memory/threads/ada-call", {"resource": "bob"}, 403, "thread_owner_mismatch"),
        ("DELETE", "/v1/memory/threads/nope", {}, 404, "thread_not_found"),
        ("GET", "/v1/memory/working", {"resource": "ada", "thread": "bob-call"}, 403, "thread_owner_mismatch"),
    ]
    for method, path, params, status, code in cases:
        response = await client.request(method, path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
    # Non-UTF-8 bytes in the query string.
    response = await client.get("/v1/memory/threads?resource=%FF%FE")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_id"
    # Bob's data is untouched by all of that.
    assert (await client.get("/v1/memory/threads/bob-call/messages")).json()["total"] == 1


async def test_delete_thread(api):
    client, memory = api
    response = await client.delete("/v1/memory/threads/ada-call", params={"resource": "ada"})
    assert response.status_code == 200 and response.json() == {"deleted": True, "thread_id": "ada-call"}
    assert await memory.get_thread_by_id("ada-call") is None
    assert (await client.get("/v1/memory/threads", params={"resource": "ada"})).json()["total"] == 0


async def test_get_and_put_working_memory(api):
    client, memory = api
    body = (await client.get("/v1/memory/working", params={"resource": "ada", "thread": "ada-call"})).json()
    assert body["working_memory"] is None and body["format"] == "markdown" and body["template"] == "# User\n- Name:\n"
    response = await client.put("/v1/memory/working", params={"resource": "ada", "thread": "ada-call"},
                                json={"working_memory": "# User\n- Name: Ada\n"})
    assert response.status_code == 200 and response.json()["working_memory"] == "# User\n- Name: Ada\n"
    assert await memory.get_working_memory("ada-call", "ada") == "# User\n- Name: Ada\n"
    # Resource scope: readable without a thread; the empty template does not wipe it.
    await client.put("/v1/memory/working", params={"resource": "ada"}, json={"working_memory": "# User\n- Name:\n"})
    body = (await client.get("/v1/memory/working", params={"resource": "ada"})).json()
    assert body["working_memory"] == "# User\n- Name: Ada\n" and body["scope"] == "resource"
    bad = [(b"not json", 400, "invalid_request"), (b'{"memory": "x"}', 400, "invalid_request"),
           (b'{"working_memory": {"not": "markdown"}}', 400, "invalid_working_memory"),
           (b"x" * 70_000, 413, "body_too_large")]
    for raw, status, code in bad:
        response = await client.put("/v1/memory/working", params={"resource": "ada"}, content=raw)
        assert response.status_code == status and response.json()["error"]["code"] == code
    response = await client.put("/v1/memory/working", params={"resource": "bob", "thread": "ada-call"},
                                json={"working_memory": "# User\n- Name: Mallory\n"})
    assert response.status_code == 403
    assert await memory.get_working_memory(None, "bob") is None
