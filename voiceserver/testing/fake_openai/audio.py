"""The audio route group of the loopback OpenAI server: transcriptions and speech, in OpenAI's documented shapes.

    async with FakeOpenAI(audio_routes(transcripts=["hello there"]), api_key="test-key") as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test-key")

- ``POST /v1/audio/transcriptions``: a multipart form with ``file`` and ``model`` (plus optional ``language``,
  ``prompt``, ``response_format``, ``temperature``). Answers ``{"text": ...}`` for ``json`` (the default), the bare
  text for ``text``/``srt``/``vtt``, and a minimal ``verbose_json``. The transcript is the next of ``transcripts``
  (the last one repeats), or ``transcripts(audio_bytes, fields)`` if it is a callable; by default "" for silent audio
  and "hello world" otherwise.
- ``POST /v1/audio/speech``: a JSON body with ``model``, ``input``, ``voice`` (plus ``response_format``, ``speed``,
  ``instructions``). Streams a 440 Hz tone of ``ms_per_char`` per input character (divided by ``speed``): raw
  24 kHz pcm16 mono for ``pcm``, a WAV for ``wav``, MP3 for ``mp3`` (the default, as documented). The body is sent in
  ``chunk_bytes`` pieces (odd by default, so clients must keep 2-byte alignment) with ``chunk_delay_s`` between them.

Every request is recorded in ``request.app.state.fake.requests`` as ``(path, fields)`` before it is checked, so
tests can count retries. With ``FakeOpenAI(..., api_key=...)`` a wrong bearer token gets 401 with
``{"error": {"message", "type", "param", "code": "invalid_api_key"}}``. The first ``fail_first`` calls of each
endpoint get ``fail_status`` (500) with a ``server_error`` body; bad requests get 400 ``invalid_request_error``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ...audio import decode_audio, encode_audio, rms_dbfs, wav_header

SPEECH_RATE = 24000
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_INPUT_CHARS = 4096
SPEECH_FORMATS = {"pcm": "audio/pcm", "wav": "audio/wav", "mp3": "audio/mpeg"}
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")

Transcripts = list[str] | Callable[[bytes, dict[str, Any]], str] | None


def error_response(status: int, message: str, type_: str, code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    """OpenAI's documented error body."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


def _auth_error(request: Request) -> JSONResponse | None:
    expected = getattr(request.app.state.fake, "api_key", None)
    if expected is None:
        return None
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if given != expected:
        shown = (given[:3] + "*" * 4 + given[-2:]) if len(given) > 6 else "*" * len(given)
        return error_response(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                              code="invalid_api_key")
    return None


def _parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """Minimal multipart/form-data parser: text fields as str, file fields as {filename, content_type, data}."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise ValueError("expected a multipart/form-data body")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, Any] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        part = part[2:] if part.startswith(b"\r\n") else part
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart part")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = head.decode("latin-1")
        name = re.search(r'name="([^"]*)"', headers)
        if not name:
            continue
        filename = re.search(r'filename="([^"]*)"', headers)
        part_type = re.search(r"(?im)^content-type:\s*([^\r\n]+)", headers)
        if filename:
            fields[name.group(1)] = {"filename": filename.group(1), "data": content,
                                     "content_type": part_type.group(1).strip() if part_type else None}
        else:
            fields[name.group(1)] = content.decode("utf-8", "replace")
    return fields


def tone_pcm16(duration_s: float, rate: int = SPEECH_RATE, freq: float = 440.0) -> bytes:
    """A sine tone at a third of full scale: the fake's "speech"."""
    n = max(int(rate * duration_s), 0)
    t = np.arange(n, dtype=np.float64) / rate
    return (0.3 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2").tobytes()


def audio_routes(*, transcripts: Transcripts = None, fail_first: int = 0, fail_status: int = 500,
                 ms_per_char: float = 60.0, chunk_bytes: int = 4801, chunk_delay_s: float = 0.0,
                 first_delay_s: float = 0.0) -> list[Route]:
    """The two audio endpoints, with their own call counters (see the module docstring for the options)."""
    calls = {"transcriptions": 0, "speech": 0}

    def failing(endpoint: str) -> JSONResponse | None:
        calls[endpoint] += 1
        if calls[endpoint] <= fail_first:
            return error_response(fail_status, "The server had an error while processing your request. "
                                  "Sorry about that!", "server_error")
        return None

    def pick_transcript(audio: bytes, fields: dict[str, Any]) -> str:
        if callable(transcripts):
            return transcripts(audio, fields)
        if transcripts:
            ok_calls = calls["transcriptions"] - fail_first
            return transcripts[min(ok_calls - 1, len(transcripts) - 1)]
        try:
            decoded = decode_audio(audio)
        except ValueError:
            return ""
        return "" if rms_dbfs(decoded.audio) < -60 else "hello world"

    async def transcriptions(request: Request) -> Response:
        body = await request.body()
        fake = request.app.state.fake
        try:
            fields = _parse_multipart(body, request.headers.get("content-type", ""))
        except ValueError as exc:
            fake.requests.append((request.url.path, {"error": str(exc)}))
            return error_response(400, str(exc), "invalid_request_error")
        fake.requests.append((request.url.path, fields))
        if (denied := _auth_error(request)) is not None:
            return denied
        if (failure := failing("transcriptions")) is not None:
            return failure
        upload = fields.get("file")
        if not isinstance(upload, dict):
            return error_response(400, "1 validation error: file is required", "invalid_request_error", param="file")
        if not fields.get("model"):
            return error_response(400, "you must provide a model parameter", "invalid_request_error", param="model")
        if len(upload["data"]) > MAX_UPLOAD_BYTES:
            return error_response(413, "Maximum content size limit (26214400) exceeded", "invalid_request_error")
        response_format = fields.get("response_format", "json")
        if response_format not in TRANSCRIPT_FORMATS:
            return error_response(400, f"Invalid response_format {response_format!r}", "invalid_request_error",
                                  param="response_format")
        text = pick_transcript(upload["data"], fields)
        if response_format == "json":
            return JSONResponse({"text": text})
        if response_format == "verbose_json":
            return JSONResponse({"task": "transcribe", "language": fields.get("language") or "english",
                                 "duration": 0.0, "text": text, "segments": []})
        return PlainTextResponse(text + "\n")

    async def speech(request: Request) -> Response:
        fake = request.app.state.fake
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            fake.requests.append((request.url.path, {"error": str(exc)}))
            return error_response(400, f"We could not parse the JSON body of your request. ({exc})",
                                  "invalid_request_error")
        fake.requests.append((request.url.path, body))
        if (denied := _auth_error(request)) is not None:
            return denied
        if (failure := failing("speech")) is not None:
            return failure
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return error_response(400, f"Missing required parameter: '{name}'.", "invalid_request_error",
                                      code="missing_required_parameter", param=name)
        text = body["input"]
        if not isinstance(text, str) or len(text) > MAX_INPUT_CHARS:
            return error_response(400, f"'input' must be a string of at most {MAX_INPUT_CHARS} characters",
                                  "invalid_request_error", param="input")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return error_response(400, f"{speed!r} is not a valid speed: must be between 0.25 and 4.0",
                                  "invalid_request_error", param="speed")
        response_format = body.get("response_format", "mp3")
        if response_format not in SPEECH_FORMATS:
            return error_response(400, f"response_format {response_format!r} is not supported by this fake server; "
                                  f"use one of {', '.join(SPEECH_FORMATS)}", "invalid_request_error",
                                  param="response_format")
        pcm = tone_pcm16(len(text) * ms_per_char / 1000 / speed)
        if response_format == "wav":
            payload = wav_header(SPEECH_RATE, len(pcm)) + pcm
        elif response_format == "mp3":
            payload = encode_audio(pcm, SPEECH_RATE, "mp3")
        else:
            payload = pcm

        async def stream() -> AsyncIterator[bytes]:
            if first_delay_s:
                await asyncio.sleep(first_delay_s)
            for start in range(0, len(payload), chunk_bytes):
                if start and chunk_delay_s:
                    await asyncio.sleep(chunk_delay_s)
                yield payload[start:start + chunk_bytes]

        return StreamingResponse(stream(), media_type=SPEECH_FORMATS[response_format])

    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
    ]


__all__ = ["audio_routes", "error_response", "tone_pcm16"]
