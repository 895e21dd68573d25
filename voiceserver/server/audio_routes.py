"""OpenAI-compatible audio REST: ``POST /v1/audio/transcriptions``, ``POST /v1/audio/speech`` (streamed as it is
synthesised), ``GET /v1/models``. The server's own engines answer (a fallback chain is one engine), so one
voiceserver can serve its speech models to others through their ``openai`` providers (``OPENAI_BASE_URL``).

Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``; the limits are
``settings.openai_endpoints`` (upload size, audio length, speech input length). Decoding, resampling, segmenting
and compressed encoding run in worker threads; the engines run in their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..audio import StreamConverter, decode_audio, to_pcm16_16k
from ..audio.format import AudioChunk
from ..audio.stream_mux import SPEECH_CONTENT_TYPES, SPEECH_FORMATS, speech_encoder
from ..engines import ProviderError
from ..gateway.realtime_port import speaking_voice
from ..gateway.realtime_shapes import PCM24
from ..ids import shown
from ..logs import get_logger
from ..session.agent_port import SpeakingVoice
from ..tts.openai import OPENAI_VOICES
from ..tts.phrases import PhraseChunker
from ..vad.segmenter import Segmenter, SegmenterConfig, SpeechEnd

if TYPE_CHECKING:
    from .composition import VoiceServer

log = get_logger("SERVER")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
STT_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
MAX_JSON_BYTES = 256 * 1024
ONE_CALL_S = 30.0  # up to this long a file is transcribed in one call (Whisper's window); longer ones by utterance
STARTED = int(time.time())


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": str(self), "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


def _provider_error(exc: ProviderError) -> ApiError:
    status = 504 if exc.code.endswith("_timeout") else 400 if exc.code in ("tts_invalid_voice",
                                                                            "tts_input_too_long") else 503
    return ApiError(status, exc.message, code=exc.code, kind="invalid_request_error" if status == 400
                    else "server_error")


def _server(request: Request) -> VoiceServer:
    return request.app.state.voice


class _TooLarge(Exception):
    pass


def _limited(request: Request, limit: int) -> Request:
    """The same request, with a body that stops at ``limit`` bytes (chunked uploads have no Content-Length)."""
    received = 0

    async def receive() -> Any:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _TooLarge
        return message

    return Request(request.scope, receive)


# --- transcriptions -----------------------------------------------------------------------------------------------


async def transcriptions(request: Request) -> Response:
    try:
        return await _transcriptions(request)
    except ApiError as exc:
        return exc.response()


async def _transcriptions(request: Request) -> Response:
    server = _server(request)
    limits = server.settings.openai_endpoints
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise ApiError(413, f"The file is over the {limits.max_upload_bytes} byte limit.", code="file_too_large")
    try:
        form = await _limited(request, limits.max_upload_bytes + 64 * 1024).form(max_files=1, max_fields=32)
    except _TooLarge:
        raise ApiError(413, f"The file is over the {limits.max_upload_bytes} byte limit.",
                       code="file_too_large") from None
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body is the client's error
        raise ApiError(400, f"Could not parse the multipart form: {exc}", code="invalid_request") from None
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(form.close)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "Missing required parameter: 'file'.", param="file",
                           code="missing_required_parameter")
        data = await upload.read()
        if len(data) > limits.max_upload_bytes:
            raise ApiError(413, f"The file is over the {limits.max_upload_bytes} byte limit.", code="file_too_large")
        if not isinstance(form.get("model"), str) or not form["model"]:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model",
                           code="missing_required_parameter")
        fmt = form.get("response_format") or "json"
        if fmt not in TRANSCRIPT_FORMATS:
            raise ApiError(400, f"Invalid value for 'response_format': {shown(fmt)}; supported: "
                           f"{', '.join(TRANSCRIPT_FORMATS)}.", param="response_format", code="invalid_value")
        language = form.get("language") or None
        if language is not None and (not isinstance(language, str) or len(language) > 16):
            raise ApiError(400, "Invalid value for 'language'.", param="language", code="invalid_value")
    try:
        pcm = await asyncio.to_thread(_decode_16k, data)
    except ValueError as exc:
        raise ApiError(400, f"Could not decode the audio file: {exc}", param="file", code="invalid_value") from None
    seconds = len(pcm) / 32000
    if seconds > limits.max_transcription_s:
        raise ApiError(400, f"The audio is {seconds:.0f} s long; the limit is {limits.max_transcription_s:g} s.",
                       param="file", code="audio_too_long")
    segments = [(0.0, seconds, pcm)]
    if fmt in ("verbose_json", "srt", "vtt") or seconds > ONE_CALL_S:
        segments = await asyncio.to_thread(_utterances, pcm)
    texts, detected = [], language
    try:
        for _, _, audio in segments:
            result = await server.stt.transcribe(AudioChunk(audio, 16000), language=language)
            texts.append(result.text.strip())
            detected = detected or result.language
    except ProviderError as exc:
        raise _provider_error(exc) from None
    parts = [(start, end, text) for (start, end, _), text in zip(segments, texts, strict=True) if text]
    return _render_transcript(fmt, parts, seconds, detected or "en")


def _decode_16k(data: bytes) -> bytes:
    return to_pcm16_16k(decode_audio(data))


def _utterances(pcm: bytes) -> list[tuple[float, float, bytes]]:
    """(start s, end s, audio) of each utterance the VAD finds (30 s at most each)."""
    segmenter = Segmenter(SegmenterConfig(pause_ms=0))
    ends = [e for e in segmenter.feed(pcm) + segmenter.commit() if isinstance(e, SpeechEnd)]
    return [(e.start_ms / 1000, e.end_ms / 1000, e.audio) for e in ends]


def _render_transcript(fmt: str, parts: list[tuple[float, float, str]], seconds: float, language: str) -> Response:
    text = " ".join(t for _, _, t in parts)
    usage = {"type": "duration", "seconds": round(seconds, 3)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    if fmt == "text":
        return PlainTextResponse(text)
    if fmt == "verbose_json":
        # Whisper's per-segment scores are not measured here: they are reported as 0 (documented).
        segments = [{"id": i, "seek": int(start * 100), "start": round(start, 3), "end": round(end, 3),
                     "text": t, "tokens": [], "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0,
                     "no_speech_prob": 0.0} for i, (start, end, t) in enumerate(parts)]
        return JSONResponse({"task": "transcribe", "language": language, "duration": round(seconds, 3),
                             "text": text, "segments": segments, "usage": usage})
    cues = []
    for i, (start, end, t) in enumerate(parts, 1):
        stamp = f"{_clock(start, fmt)} --> {_clock(end, fmt)}"
        cues.append(f"{i}\n{stamp}\n{t}\n" if fmt == "srt" else f"{stamp}\n{t}\n")
    body = "\n".join(cues)
    return PlainTextResponse(body if fmt == "srt" else "WEBVTT\n\n" + body,
                             media_type="text/plain" if fmt == "srt" else "text/vtt")


def _clock(seconds: float, fmt: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if fmt == 'srt' else '.'}{ms:03d}"


# --- speech -------------------------------------------------------------------------------------------------------


async def speech(request: Request) -> Response:
    try:
        return await _speech(request)
    except ApiError as exc:
        return exc.response()


async def _speech(request: Request) -> Response:
    server = _server(request)
    limits = server.settings.openai_endpoints
    try:
        raw = b""
        async for piece in _limited(request, MAX_JSON_BYTES).stream():
            raw += piece
        body = json.loads(raw or b"null")
    except _TooLarge:
        raise ApiError(413, f"The request body is over {MAX_JSON_BYTES} bytes.", code="body_too_large") from None
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a number over 4300 digits
        raise ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_request")
    for name in ("model", "input", "voice"):
        if body.get(name) in (None, ""):
            raise ApiError(400, f"Missing required parameter: '{name}'.", param=name,
                           code="missing_required_parameter")
    text, voice = body["input"], body["voice"]
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(text, str) or not isinstance(voice, str) or not isinstance(body["model"], str):
        raise ApiError(400, "'model', 'input' and 'voice' must be strings.", code="invalid_type")
    if len(text) > limits.max_speech_chars:
        raise ApiError(400, f"'input' is {len(text)} characters; the limit is {limits.max_speech_chars}.",
                       param="input", code="string_above_max_length")
    fmt = body.get("response_format") or "mp3"
    if fmt not in SPEECH_FORMATS:
        raise ApiError(400, f"Invalid value for 'response_format': {shown(fmt)}; supported: "
                       f"{', '.join(SPEECH_FORMATS)}.", param="response_format", code="invalid_value")
    if body.get("stream_format", "audio") != "audio":
        raise ApiError(400, "Only stream_format 'audio' is served here.", param="stream_format",
                       code="unsupported_value")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
        raise ApiError(400, "Invalid value for 'speed': a number from 0.25 to 4.0.", param="speed",
                       code="invalid_value")
    engines = server.tts.engines if hasattr(server.tts, "engines") else [server.tts]
    known = set(OPENAI_VOICES) | {v for engine in engines for v in engine.capabilities.voices}
    if voice not in known:
        raise ApiError(400, f"Invalid value for 'voice': {shown(voice)}; supported: {', '.join(sorted(known))}.",
                       param="voice", code="invalid_value")
    chosen = speaking_voice(SpeakingVoice(server.tts), voice, float(speed), True)
    chunker = PhraseChunker()
    phrases = chunker.feed(text) + chunker.flush()
    audio = _synthesised(chosen, phrases, fmt)
    try:
        first = await anext(audio)  # a failure before any audio is still an error response, not a cut stream
    except StopAsyncIteration:
        first = b""
    except ProviderError as exc:
        raise _provider_error(exc) from None

    async def body_stream() -> AsyncIterator[bytes]:
        if first:
            yield first
        try:
            async for piece in audio:
                yield piece
        except ProviderError as exc:  # the status line is sent: the stream ends early, the log says why
            log.warning(f"speech stream cut: {exc.code}: {exc.message}")

    return StreamingResponse(body_stream(), media_type=SPEECH_CONTENT_TYPES[fmt])


async def _synthesised(voice: SpeakingVoice, phrases: list[str], fmt: str) -> AsyncIterator[bytes]:
    """The encoded audio of ``phrases``, piece by piece as each is synthesised (24 kHz mono, like OpenAI's)."""
    encoder = speech_encoder(fmt, PCM24.sample_rate)
    compressed = fmt not in ("pcm", "wav")
    converter: StreamConverter | None = None
    for phrase in phrases:
        async with contextlib.aclosing(voice.tts.synthesize(phrase, voice.speaker, voice.speed)) as chunks:
            async for chunk in chunks:
                converter = converter or StreamConverter(chunk.format, PCM24)
                pcm = converter.convert(chunk.audio)
                out = await asyncio.to_thread(encoder.encode, pcm) if compressed else encoder.encode(pcm)
                if out:
                    yield out
    tail = converter.flush() if converter is not None else b""
    out = await asyncio.to_thread(lambda: encoder.encode(tail) + encoder.finish())
    if out:
        yield out


# --- models -------------------------------------------------------------------------------------------------------


def _models(server: VoiceServer) -> list[dict[str, Any]]:
    entries = [(name, "realtime", "agent") for name in server.agents]
    entries += [(server.stt.provider, "transcription", server.stt.provider)]
    entries += [(alias, "transcription", server.stt.provider) for alias in STT_ALIASES]
    entries += [(server.tts.provider, "speech", server.tts.provider)]
    entries += [(alias, "speech", server.tts.provider) for alias in TTS_ALIASES]
    seen: dict[str, dict[str, Any]] = {}
    for name, kind, engine in entries:
        seen.setdefault(name, {"id": name, "object": "model", "created": STARTED, "owned_by": "voiceserver",
                               "voiceserver": {"kind": kind, "engine": engine}})
    return list(seen.values())


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": _models(_server(request))})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    found = next((m for m in _models(_server(request)) if m["id"] == name), None)
    if found is None:
        return ApiError(404, f"The model '{name}' does not exist.", param="model", code="model_not_found").response()
    return JSONResponse(found)


def audio_routes() -> list[Route]:
    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]
