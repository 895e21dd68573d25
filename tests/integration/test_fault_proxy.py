"""The fault-injecting proxy (voiceserver.testing.faults) between a real httpx client and a real uvicorn server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from voiceserver.testing.faults import Fault, FaultProxy, ProxyError
from voiceserver.testing.servers import serve_app

STREAM_PIECES = 40
PIECE = b"x" * 100


def upstream_app(seen: list[tuple[str, str, bytes]]) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append((request.method, request.url.path, body))
        return JSONResponse({"path": request.url.path, "bytes": len(body), "body": body.decode()})

    async def stream(request: Request) -> StreamingResponse:
        seen.append((request.method, request.url.path, b""))

        async def pieces():
            for _ in range(STREAM_PIECES):
                yield PIECE
                await asyncio.sleep(0)

        return StreamingResponse(pieces(), media_type="text/event-stream")

    return Starlette(routes=[Route("/echo", echo, methods=["GET", "POST", "PUT"]), Route("/stream", stream)])


@pytest.fixture
async def link():
    seen: list[tuple[str, str, bytes]] = []
    async with serve_app(upstream_app(seen), lifespan="off") as upstream, \
            FaultProxy(upstream.http_url, idle_timeout_s=10) as proxy, \
            httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        yield proxy, http, seen


async def test_requests_pass_through_unchanged(link):
    proxy, http, seen = link
    first = await http.post("/echo", content=b"hello")
    async def parts():
        for part in (b"one ", b"two ", b"three"):
            yield part

    chunked = await http.put("/echo", content=parts())  # no length: a chunked upload
    expected = await http.post("/echo", content=b"body", headers={"Expect": "100-continue"})
    streamed = await http.get("/stream")
    assert first.json() == {"path": "/echo", "bytes": 5, "body": "hello"}
    assert chunked.json()["body"] == "one two three"
    assert expected.json()["body"] == "body"
    assert streamed.content == PIECE * STREAM_PIECES
    assert first.headers["connection"] == "close"
    assert [s[:2] for s in seen] == [("POST", "/echo"), ("PUT", "/echo"), ("POST", "/echo"), ("GET", "/stream")]
    assert proxy.counts["forwarded"] == 4


async def test_an_error_fault_answers_without_forwarding_then_runs_out(link):
    proxy, http, seen = link
    proxy.inject(Fault.error(503, times=2, path="/echo"))
    codes = [(await http.get("/echo")).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert len(seen) == 1
    assert [outcome for _, _, outcome in proxy.log] == ["error", "error", "forwarded"]


async def test_a_fault_matches_its_method_and_path_only(link):
    proxy, http, _seen = link
    proxy.inject(Fault.error(500, method="POST", path="/stream"))
    assert (await http.post("/echo", content=b"a")).status_code == 200
    assert (await http.get("/stream")).status_code == 200
    assert (await http.post("/stream")).status_code == 500


async def test_a_reset_cuts_a_streamed_response_after_n_bytes(link):
    proxy, http, seen = link
    proxy.inject(Fault.reset(after_bytes=1000, path="/stream", times=1))
    received = bytearray()
    with pytest.raises(httpx.TransportError):
        async with http.stream("GET", "/stream") as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                received += chunk
    assert 0 < len(received) < 1000 < len(PIECE) * STREAM_PIECES
    assert seen == [("GET", "/stream", b"")], "the request reached the upstream; only its answer was cut"
    assert (await http.get("/stream")).content == PIECE * STREAM_PIECES  # times=1: the next one is whole


async def test_a_blackhole_holds_requests_until_it_is_removed(link):
    proxy, http, seen = link
    outage = proxy.blackhole()
    with pytest.raises(httpx.ReadTimeout):
        await http.get("/echo", timeout=0.3)
    held = asyncio.create_task(http.get("/echo", timeout=30))
    while proxy.counts["blackhole"] < 2:
        await asyncio.sleep(0.01)
    assert not held.done() and seen == []
    proxy.remove(outage)
    with pytest.raises(httpx.RemoteProtocolError):  # a held request is closed unanswered when the outage ends
        await held
    assert (await http.get("/echo")).status_code == 200


async def test_a_delay_holds_the_request_then_forwards_it(link):
    proxy, http, seen = link
    delay = proxy.inject(Fault.delay(60))
    pending = asyncio.create_task(http.post("/echo", content=b"late"))
    while proxy.counts["delay"] < 1:
        await asyncio.sleep(0.01)
    assert seen == [] and not pending.done()
    proxy.remove(delay)  # ends the wait early: the request goes on
    assert (await pending).json()["body"] == "late"


async def test_a_close_fault_drops_the_connection(link):
    proxy, http, seen = link
    proxy.inject(Fault.close(times=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get("/echo")
    assert seen == []


async def test_limits_loopback_only_and_connection_cap():
    with pytest.raises(ProxyError):
        FaultProxy("http://10.1.2.3:80")
    with pytest.raises(ProxyError):
        FaultProxy("https://127.0.0.1:443")
    with pytest.raises(ProxyError):
        Fault.error(200)
    seen: list = []
    async with serve_app(upstream_app(seen), lifespan="off") as upstream, \
            FaultProxy(upstream.http_url, max_connections=2) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
        proxy.blackhole()
        held = [asyncio.create_task(http.get("/echo", timeout=30)) for _ in range(2)]
        while proxy.counts["blackhole"] < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(httpx.TransportError):
            await http.get("/echo", timeout=5)
        assert proxy.counts["refused"] == 1
        proxy.clear()
        await asyncio.gather(*held, return_exceptions=True)
