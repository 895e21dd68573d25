"""The endpoint senders of scripts/fuzz_live.py: one coroutine per endpoint family, each sending ``budget`` random
and mutated messages (voiceserver.testing.fuzz) to a server on 127.0.0.1 and counting how it answered.

An answer is counted by its code: the ``error.code`` of a JSON error, ``http <status> <code>`` for REST,
``close <code>`` for a WebSocket close. A crash is an answer no client should ever see: HTTP 500, a WebSocket closed
with 1011 (internal error) or dropped without a close frame (1006), a handshake refused with 5xx, or a request the
server never answered (timeout, reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voiceserver.audio.format import AudioChunk
from voiceserver.audio.wav import wav_bytes
from voiceserver.testing import fuzz

OK_CLOSES = {1000, 1001, 1008, 1009, 1013}
WS_TIMEOUT_S = 10.0


@dataclass
class EndpointStats:
    sent: int = 0
    answers: Counter = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)

    def crash(self, what: str) -> None:
        if len(self.crashes) < 50:  # the first few say enough
            self.crashes.append(what)
        self.answers["CRASH"] += 1


@dataclass
class Budget:
    """``messages`` per endpoint, and a wall-clock deadline shared by all."""

    messages: int
    deadline: float

    def left(self, stats: EndpointStats) -> bool:
        return stats.sent < self.messages and time.monotonic() < self.deadline


def hostile_query(rng: random.Random, keys: tuple[str, ...]) -> dict[str, str]:
    """URL parameters: usually valid ids, sometimes junk."""
    query = {}
    for key in keys:
        roll = rng.random()
        if roll < 0.5:
            query[key] = f"fuzz-{key}-{rng.randrange(5)}"
        elif roll < 0.7:
            query[key] = fuzz.random_string(rng, 60)
    return query


# --- WebSockets -----------------------------------------------------------------------------------------------

async def _reader(ws: Any, stats: EndpointStats, field_of: Any) -> None:
    """Count every JSON error the server sends until the socket closes."""
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            if isinstance(message, bytes):
                continue
            try:
                body = json.loads(message)
            except ValueError:
                stats.crash(f"a text frame that is not JSON: {message[:80]!r}")
                continue
            code = field_of(body)
            if code is not None:
                stats.answers[code] += 1


def _closed(ws: Any, stats: EndpointStats, what: str) -> None:
    code = ws.close_code
    if code is None or code == 1006 or code == 1011 or (code not in OK_CLOSES and code < 3000):
        stats.crash(f"{what}: closed with {code} ({ws.close_reason!r})")
    else:
        stats.answers[f"close {code}"] += 1


async def _session(url: str, stats: EndpointStats, frames: list[str | bytes], field_of: Any,
                   headers: dict[str, str] | None = None, what: str = "") -> None:
    """One connection: send ``frames`` (stop when the server closes), then close and count how it ended."""
    try:
        ws = await websockets.connect(url, max_size=None, additional_headers=headers or {}, open_timeout=WS_TIMEOUT_S,
                                      close_timeout=5)
    except InvalidStatus as exc:
        status = exc.response.status_code
        stats.sent += 1
        if status >= 500:
            stats.crash(f"{what}: handshake answered {status}")
        else:
            stats.answers[f"http {status}"] += 1
        return
    except (OSError, TimeoutError) as exc:
        stats.sent += 1
        stats.crash(f"{what}: could not connect: {exc!r}")
        return
    reader = asyncio.create_task(_reader(ws, stats, field_of))
    last = None
    try:
        for frame in frames:
            try:
                await ws.send(frame)
            except ConnectionClosed:
                break
            last = frame
            stats.sent += 1
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(ws.ping(), WS_TIMEOUT_S)  # everything sent so far was read
        if ws.close_code is None:
            await ws.close()
        await asyncio.wait_for(reader, WS_TIMEOUT_S)
    except TimeoutError:
        stats.crash(f"{what}: no close within {WS_TIMEOUT_S:g} s")
    finally:
        reader.cancel()
    _closed(ws, stats, f"{what} after {str(last)[:200]!r}")


def _native_error(body: dict[str, Any]) -> str | None:
    return body.get("code") if body.get("type") == "error" else None


def _realtime_error(body: dict[str, Any]) -> str | None:
    if body.get("type") != "error":
        return None
    error = body.get("error")
    return error.get("code") if isinstance(error, dict) else "error without an error object"


def _native_frames(rng: random.Random, corpus: list[dict[str, Any]], n: int, max_frame: int) -> list[str | bytes]:
    frames: list[str | bytes] = []
    if rng.random() < 0.7:
        frames.append(json.dumps(fuzz.NATIVE[0]))
    for _ in range(n):
        roll = rng.random()
        if roll < 0.25:
            frames.append(fuzz.random_bytes(rng, 8000))
        elif roll < 0.27:
            frames.append(rng.choice([b"\x00", "x"]) * (max_frame + 1))  # over the limit: close 1009
        else:
            frames.append(fuzz.fuzz_text(rng, corpus))
    return frames


async def fuzz_native(base: str, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    while budget.left(stats):
        query = hostile_query(rng, ("resource", "thread"))
        url = f"{base}/v1/voice?{httpx.QueryParams(query)}"
        await _session(url, stats, _native_frames(rng, fuzz.NATIVE, rng.randint(5, 60), 65536), _native_error,
                       what=f"native {query}")


async def fuzz_realtime(base: str, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    while budget.left(stats):
        query = hostile_query(rng, ("resource", "thread", "model"))
        headers = {"OpenAI-Beta": "realtime=v1"} if rng.random() < 0.4 else {}
        frames: list[str | bytes] = [fuzz.fuzz_text(rng, fuzz.REALTIME) for _ in range(rng.randint(5, 60))]
        if rng.random() < 0.05:
            frames.append("x" * ((1 << 20) + 1))  # over realtime_max_event_bytes: close 1009
        if rng.random() < 0.1:
            frames.append(fuzz.random_bytes(rng, 2000))
        await _session(f"{base}/v1/realtime?{httpx.QueryParams(query)}", stats, frames, _realtime_error, headers,
                       what=f"realtime {query} {headers}")


async def fuzz_twilio(base: str, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    """Twilio gets no error messages back (bad input is logged and counted): what is counted is how calls end."""
    while budget.left(stats):
        frames: list[str | bytes] = [json.dumps(fuzz.TWILIO[0])]
        start = fuzz.TWILIO[1] if rng.random() < 0.8 else fuzz.mutate(rng, fuzz.TWILIO[1])
        frames.append(json.dumps(start))
        for _ in range(rng.randint(5, 60)):
            frames.append(fuzz.random_bytes(rng, 500) if rng.random() < 0.05 else fuzz.fuzz_text(rng, fuzz.TWILIO))
        await _session(f"{base}/v1/twilio/stream", stats, frames, lambda body: None, what="twilio stream")


# --- HTTP -------------------------------------------------------------------------------------------------------

async def _request(http: httpx.AsyncClient, stats: EndpointStats, method: str, url: str, **kwargs: Any) -> Any:
    try:
        request = http.build_request(method, url, **kwargs)
    except (httpx.InvalidURL, UnicodeEncodeError, ValueError, TypeError):
        return None  # our own client cannot put it on the wire: nothing was sent
    stats.sent += 1
    try:
        response = await http.send(request)
        await response.aread()
    except httpx.HTTPError as exc:
        stats.crash(f"{method} {url[:120]}: {type(exc).__name__}: {exc}")
        return None
    code = ""
    if response.headers.get("content-type", "").startswith("application/json") and response.status_code >= 400:
        try:
            error = response.json().get("error")
            code = error.get("code") or error.get("type") if isinstance(error, dict) else ""
        except ValueError:
            code = "(not JSON)"
    stats.answers[f"http {response.status_code} {code}".strip()] += 1
    if response.status_code == 500 or (response.status_code >= 400 and code == "(not JSON)"):
        stats.crash(f"{method} {url[:120]} -> {response.status_code} {response.text[:200]!r}")
    return response


def _segment(value: str) -> str:
    """A path segment carrying any string (percent-encoded, so the server decodes exactly it)."""
    return quote(value, safe="")


def _body(rng: random.Random, valid: dict[str, Any]) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return fuzz.random_bytes(rng, 3000)
    return fuzz.fuzz_text(rng, [valid]).encode("utf-8", "surrogatepass")


async def fuzz_webrtc(http: httpx.AsyncClient, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    while budget.left(stats):
        roll = rng.random()
        if roll < 0.8:
            body = _body(rng, fuzz.OFFER_BODY)
            await _request(http, stats, "POST", "/v1/webrtc/offer", content=body,
                           headers={"content-type": rng.choice(["application/json", "text/plain", ""])})
        elif roll < 0.9:
            await _request(http, stats, "DELETE", f"/v1/webrtc/sessions/{fuzz.random_string(rng, 60)}")
        else:
            await _request(http, stats, "GET", "/v1/webrtc/config", params=hostile_query(rng, ("api_key",)))


async def fuzz_twilio_webhook(http: httpx.AsyncClient, rng: random.Random, budget: Budget,
                              stats: EndpointStats) -> None:
    while budget.left(stats):
        form = {k: v for k, v in fuzz.TWILIO_WEBHOOK_FORM.items() if rng.random() < 0.9}
        for _ in range(rng.randint(0, 3)):
            form[rng.choice([*fuzz.TWILIO_WEBHOOK_FORM, fuzz.random_string(rng, 10)])] = fuzz.random_string(rng)
        query = hostile_query(rng, ("agent",))
        if rng.random() < 0.2:
            await _request(http, stats, "POST", "/v1/twilio/voice", params=query, content=fuzz.random_bytes(rng),
                           headers={"content-type": "application/x-www-form-urlencoded"})
        else:
            await _request(http, stats, rng.choice(["POST", "POST", "GET"]), "/v1/twilio/voice", params=query,
                           data=form if rng.random() < 0.9 else None)


async def fuzz_memory(http: httpx.AsyncClient, rng: random.Random, budget: Budget, stats: EndpointStats,
                      threads: list[str]) -> None:
    ids = ["fuzz-caller", "fuzz-resource-0", *threads]
    while budget.left(stats):
        def some_id() -> str:
            return rng.choice(ids) if rng.random() < 0.6 else fuzz.random_string(rng, 60)
        query: dict[str, Any] = {k: some_id() for k in ("resource", "thread") if rng.random() < 0.7}
        for key in ("page", "per_page", "order_by", "direction"):
            if rng.random() < 0.3:
                query[key] = rng.choice([str(rng.randrange(-5, 2000)), fuzz.random_string(rng, 10), "created_at",
                                         "asc", "desc", "9" * 50])
        thread = _segment(some_id()) if rng.random() < 0.9 else "%ff%fe"
        roll = rng.random()
        if roll < 0.25:
            await _request(http, stats, "GET", "/v1/memory/threads", params=query)
        elif roll < 0.5:
            await _request(http, stats, "GET", f"/v1/memory/threads/{thread}/messages", params=query)
        elif roll < 0.55:
            await _request(http, stats, "DELETE", f"/v1/memory/threads/{thread}", params=query)
        elif roll < 0.75:
            await _request(http, stats, "GET", "/v1/memory/working", params=query)
        else:
            await _request(http, stats, "PUT", "/v1/memory/working", params=query,
                           content=_body(rng, fuzz.WORKING_MEMORY_BODY))


async def fuzz_workflows(http: httpx.AsyncClient, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    run_ids = ["run-fuzz"]
    while budget.left(stats):
        workflow = "booking" if rng.random() < 0.8 else fuzz.random_string(rng, 30)
        prefix = f"/v1/workflows/{_segment(workflow)}/runs"
        run = rng.choice(run_ids) if rng.random() < 0.7 else fuzz.random_string(rng, 40)
        stream = {"stream": "true"} if rng.random() < 0.3 else {}
        roll = rng.random()
        if roll < 0.35:
            response = await _request(http, stats, "POST", prefix, params=stream,
                                      content=_body(rng, fuzz.WORKFLOW_START_BODY))
            if response is not None and response.status_code == 200 and not stream:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    run_ids.append(response.json()["run_id"])
                    del run_ids[:-20]
        elif roll < 0.5:
            query = {k: fuzz.random_string(rng, 20) if rng.random() < 0.5 else v for k, v in
                     {"resource_id": "fuzz-caller", "status": "suspended", "limit": "10"}.items() if rng.random() < 0.6}
            await _request(http, stats, "GET", prefix, params=query)
        elif roll < 0.65:
            await _request(http, stats, "GET", f"{prefix}/{_segment(run)}")
        elif roll < 0.9:
            await _request(http, stats, "POST", f"{prefix}/{_segment(run)}/resume", params=stream,
                           content=_body(rng, fuzz.WORKFLOW_RESUME_BODY))
        else:
            await _request(http, stats, "POST", f"{prefix}/{_segment(run)}/cancel")


def _wav(rng: random.Random) -> bytes:
    ms = rng.choice([50, 500, 1500])
    return wav_bytes(AudioChunk(rng.randbytes(32 * ms) if rng.random() < 0.5 else b"\x00\x00" * 16 * ms, 16000))


async def fuzz_audio(http: httpx.AsyncClient, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    while budget.left(stats):
        roll = rng.random()
        if roll < 0.4:
            fields = fuzz.mutate(rng, fuzz.TRANSCRIPTION_FIELDS) if rng.random() < 0.7 else fuzz.TRANSCRIPTION_FIELDS
            data = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()} \
                if isinstance(fields, dict) else {}
            audio = _wav(rng) if rng.random() < 0.5 else fuzz.random_bytes(rng, 20000)
            if rng.random() < 0.3:  # a damaged WAV: a valid header, junk after it
                audio = audio[:44] + fuzz.random_bytes(rng, 2000)
            files = {"file": ("q.wav", audio, "audio/wav")} if rng.random() < 0.9 else None
            await _request(http, stats, "POST", "/v1/audio/transcriptions", data=data, files=files)
        elif roll < 0.45:
            boundary = quote(fuzz.random_string(rng, 20))
            await _request(http, stats, "POST", "/v1/audio/transcriptions", content=fuzz.random_bytes(rng),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        elif roll < 0.85:
            await _request(http, stats, "POST", "/v1/audio/speech", content=_body(rng, fuzz.SPEECH_BODY))
        else:
            name = rng.choice(["whisper-1", "tts-1", "Assistant", fuzz.random_string(rng, 40)])
            await _request(http, stats, "GET", f"/v1/models/{_segment(name)}")


async def fuzz_misc(http: httpx.AsyncClient, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    paths = ["/healthz", "/readyz", "/metrics", "/v1/agents", "/v1/models", "/", "/static/js/app.js",
             "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/v1/debug/stats", "/v1/nope"]
    while budget.left(stats):
        path = rng.choice(paths) if rng.random() < 0.8 else "/" + quote(fuzz.random_string(rng, 60), safe="/%")
        method = rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        with contextlib.suppress(httpx.InvalidURL):
            await _request(http, stats, method, path)


async def fuzz_webrtc_channel(http_url: str, rng: random.Random, budget: Budget, stats: EndpointStats) -> None:
    """Real aiortc peers: the ``events`` data channel gets the native fuzz (a few peers: each costs Opus work)."""
    from voiceserver.testing.webrtc_caller import WebRtcCaller, WebRtcCallerError

    while budget.left(stats):
        try:
            async with WebRtcCaller.connect(http_url, resource=f"fuzz-rtc-{rng.randrange(3)}") as caller:
                await _fuzz_channel(caller, rng, stats)
        except (WebRtcCallerError, OSError, TimeoutError, httpx.HTTPError) as exc:
            stats.sent += 1
            stats.crash(f"webrtc peer: {exc!r}")
            return


async def _fuzz_channel(caller: Any, rng: random.Random, stats: EndpointStats) -> None:
    from voiceserver.testing.webrtc_caller import WebRtcCallerError

    for frame in _native_frames(rng, fuzz.WEBRTC_CHANNEL, 200, 65536)[1:]:
        if len(frame) > 60000:  # SCTP's own message limit is the sender's business, not the server's
            continue
        if caller.channel.readyState != "open":  # a session.end among the frames ended the session
            break
        caller.channel.send(frame)
        stats.sent += 1
        await asyncio.sleep(0.002)  # let aiortc's SCTP sender drain
    if caller.channel.readyState != "open":
        stats.answers["closed client_end"] += 1
        return
    caller.channel.send(json.dumps({"type": "ping", "id": "fuzz-end"}))
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            event = await caller.next_event(timeout=max(0.1, deadline - time.monotonic()))
            if event.get("type") == "error":
                stats.answers[event.get("code")] += 1
            elif event.get("type") == "pong" and event.get("id") == "fuzz-end":
                return
            elif event.get("type") == "session.closed":
                stats.answers[f"closed {event.get('reason')}"] += 1
                return
    except (TimeoutError, WebRtcCallerError) as exc:
        stats.crash(f"webrtc channel: no pong after the fuzz ({exc!r})")
        return
    stats.crash("webrtc channel: no pong within 30 s of the fuzz")
