"""A fault-injecting HTTP proxy for tests: put it between a client and a loopback server (the fake OpenAI server,
moto S3) and make the link fail on purpose.

    async with FaultProxy("http://127.0.0.1:9000") as proxy:      # clients use proxy.url instead
        proxy.inject(Fault.reset(after_bytes=600, path="/v1/chat/completions"))  # cut the next stream halfway
        proxy.inject(Fault.error(503, times=2))                  # the next two requests get a 503
        proxy.inject(Fault.delay(2.0))                           # every request waits 2 s before it is forwarded
        outage = proxy.inject(Fault.blackhole())                 # accept, never answer: storage is unreachable
        proxy.remove(outage)                                     # ...and back (held requests are closed)

Faults (each one matches requests by ``method`` and ``path`` prefix and applies ``times`` times, None: until removed;
the first matching fault applies, the others wait for later requests):

- ``delay(seconds)``: hold the request that long, then forward it.
- ``error(status)``: answer with that HTTP status and a small JSON body (OpenAI's error shape) without forwarding.
- ``reset(after_bytes)``: forward, pass on the first ``after_bytes`` bytes of the response (head included), then
  reset the client's connection (TCP RST): a stream cut halfway.
- ``blackhole()``: read the request and never answer; the connection is held until the fault is removed or the
  proxy closes (the client's own timeout decides what it sees).
- ``close()``: close the connection at once without answering.

The proxy is HTTP-aware so that a fault hits exactly one request: each request goes upstream on a connection of its
own, and both sides are told ``Connection: close``. Bounds: it listens on 127.0.0.1 and forwards to loopback only;
at most ``max_connections`` connections are open at once (more are closed when accepted); a request head is at most
64 KiB and a body at most ``max_body_bytes``; a client or upstream that sends nothing for ``idle_timeout_s`` is cut
off. ``proxy.log`` keeps the last 10,000 requests as ``(method, path, outcome)``; ``proxy.counts`` counts outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
LOG_SIZE = 10_000
RELAY_CHUNK = 16 * 1024


class ProxyError(Exception):
    """A misuse of the proxy (a non-loopback address, a bad fault)."""


@dataclass(eq=False)
class Fault:
    """One fault rule (build it with the class methods)."""

    kind: str
    seconds: float = 0.0
    status: int = 503
    after_bytes: int = 0
    method: str | None = None
    path: str = ""
    times: int | None = None
    applied: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @classmethod
    def delay(cls, seconds: float, **match: Any) -> Fault:
        return cls("delay", seconds=float(seconds), **match)

    @classmethod
    def error(cls, status: int = 503, **match: Any) -> Fault:
        if not 400 <= status <= 599:
            raise ProxyError(f"an error fault answers 4xx or 5xx, not {status}")
        return cls("error", status=status, **match)

    @classmethod
    def reset(cls, after_bytes: int = 0, **match: Any) -> Fault:
        return cls("reset", after_bytes=max(0, int(after_bytes)), **match)

    @classmethod
    def blackhole(cls, **match: Any) -> Fault:
        return cls("blackhole", **match)

    @classmethod
    def close(cls, **match: Any) -> Fault:
        return cls("close", **match)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.applied >= self.times:
            return False
        return (self.method is None or self.method.upper() == method) and path.startswith(self.path)


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or "/"

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (``http://127.0.0.1:PORT``); see the module notes."""

    def __init__(self, upstream: str, *, max_connections: int = 256, max_body_bytes: int = 64 * 1024 * 1024,
                 idle_timeout_s: float = 60.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ProxyError(f"upstream must be http://host:port, not {upstream!r}")
        if not _loopback(parts.hostname):
            raise ProxyError(f"the fault proxy forwards to loopback addresses only, not {parts.hostname!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.max_connections = max_connections
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.faults: list[Fault] = []
        self.log: deque[tuple[str, str, str]] = deque(maxlen=LOG_SIZE)
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- faults ---------------------------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        """Add a fault (applied to later requests, in the order faults were added)."""
        self.faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Remove a fault; requests it holds (blackhole, delay) are let go."""
        if fault in self.faults:
            self.faults.remove(fault)
        fault.released.set()

    def clear(self) -> None:
        """Remove every fault: the link works again."""
        for fault in list(self.faults):
            self.remove(fault)

    def blackhole(self, **match: Any) -> Fault:
        """Shorthand: make the upstream unreachable until the returned fault is removed."""
        return self.inject(Fault.blackhole(**match))

    def _pick(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.applied += 1
                return fault
        return None

    # --- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._closing.set()
        self.clear()
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- one connection -------------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            self.counts["refused"] += 1
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError, ValueError):
            self.counts["client_error"] += 1
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await self._read_request(reader, writer)
        if request is None:
            return
        fault = self._pick(request.method, request.path)
        outcome = fault.kind if fault is not None else "forwarded"
        self.log.append((request.method, request.path, outcome))
        self.counts[outcome] += 1
        if fault is None:
            await self._forward(request, writer, None)
        elif fault.kind == "delay":
            await self._hold(fault, fault.seconds)
            await self._forward(request, writer, None)
        elif fault.kind == "error":
            body = json.dumps({"error": {"message": f"injected fault: HTTP {fault.status}", "type": "server_error",
                                         "param": None, "code": None}}).encode()
            writer.write(f"HTTP/1.1 {fault.status} Injected Fault\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        elif fault.kind == "reset":
            await self._forward(request, writer, fault.after_bytes)
        elif fault.kind == "blackhole":
            await self._hold(fault, None)
        # "close": nothing is answered; the connection closes on return

    async def _hold(self, fault: Fault, seconds: float | None) -> None:
        """Wait ``seconds`` (None: forever), or until the fault is removed or the proxy closes."""
        waits = [asyncio.ensure_future(fault.released.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout_s)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None  # the client closed an idle connection
            raise
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line)]
        request = _Request(method.upper(), target, version, headers, b"")
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if "chunked" in (request.header("transfer-encoding") or "").lower():
            request.body = await self._read_chunked(reader)
        else:
            length = int(request.header("content-length") or 0)
            if length > self.max_body_bytes:
                raise ValueError(f"request body of {length} bytes is over the proxy's limit")
            request.body = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout_s)
        return request

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        """The raw chunked body (forwarded as it came)."""
        raw = bytearray()
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), self.idle_timeout_s)
            raw += size_line
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if len(raw) + size > self.max_body_bytes:
                raise ValueError("chunked request body is over the proxy's limit")
            if size == 0:
                while (line := await asyncio.wait_for(reader.readuntil(b"\r\n"), self.idle_timeout_s)) != b"\r\n":
                    raw += line
                raw += b"\r\n"
                return bytes(raw)
            raw += await asyncio.wait_for(reader.readexactly(size + 2), self.idle_timeout_s)

    async def _forward(self, request: _Request, writer: asyncio.StreamWriter, reset_after: int | None) -> None:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(self.upstream_host, self.upstream_port, limit=MAX_HEAD_BYTES),
            self.idle_timeout_s)
        try:
            headers = [(k, v) for k, v in request.headers if k.lower() not in ("connection", "expect")]
            head = f"{request.method} {request.target} {request.version}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers) + "Connection: close\r\n\r\n"
            up_writer.write(head.encode("latin-1") + request.body)
            await up_writer.drain()
            response_head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), self.idle_timeout_s)
            status_line, *rest = response_head.decode("latin-1").split("\r\n")
            kept = [line for line in rest if line and not line.lower().startswith("connection:")]
            out = ("\r\n".join([status_line, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")
            sent = 0
            while out:
                if reset_after is not None and sent + len(out) >= reset_after:
                    writer.write(out[:max(0, reset_after - sent)])
                    await writer.drain()
                    _reset(writer)
                    return
                writer.write(out)
                await writer.drain()
                sent += len(out)
                out = await asyncio.wait_for(up_reader.read(RELAY_CHUNK), self.idle_timeout_s)
            if reset_after is not None:  # the response was shorter than the cut: cut at its end
                _reset(writer)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of an orderly FIN: the peer sees 'connection reset'."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
