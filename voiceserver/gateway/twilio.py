"""The Twilio gateway: the call webhook (``POST /v1/twilio/voice``, answered with TwiML) and the Media Stream
(``WS /v1/twilio/stream``), one session per call.

The webhook answers ``<Response><Connect><Stream url="wss://HOST/v1/twilio/stream">`` with ``<Parameter>``
elements naming the caller's resource, thread and agent, plus a token binding them to the call (see
gateway/twilio_auth.py). With ``twilio.auth_token`` set, X-Twilio-Signature is checked on the webhook (a bad one is
a 403) and on the stream's upgrade. The stream is the shared telephony loop (gateway/telephony_ws.py) over the
Twilio codec (gateway/twilio_codec.py); sessions are opened with mu-law 8 kHz both ways and ``keypad=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..ids import InvalidIdError, validate_id
from ..logs import get_logger
from ..session.events import SessionConfig
from .hub import SessionHub
from .telephony import StreamBadInput, StreamStart
from .telephony_ws import MediaStreamCall, StreamOptions
from .twilio_auth import (
    caller_resource,
    public_base_url,
    signature_valid,
    stream_token,
    stream_token_valid,
    websocket_url,
)
from .twilio_codec import MULAW_8K, TwilioCodec

if TYPE_CHECKING:
    from ..settings import TwilioConfig

log = get_logger("GATEWAY")

WEBHOOK_PATH = "/v1/twilio/voice"
STREAM_PATH = "/v1/twilio/stream"
IDENTITY_KEYS = ("resource", "thread", "agent")


def twilio_routes() -> list[BaseRoute]:
    return [Route(WEBHOOK_PATH, twilio_voice_webhook, methods=["GET", "POST"]),
            WebSocketRoute(STREAM_PATH, twilio_stream_endpoint)]


def _config(app_state: object) -> TwilioConfig:
    return app_state.voice.settings.twilio  # type: ignore[attr-defined]


def _auth_token(config: TwilioConfig) -> str | None:
    return config.auth_token.get_secret_value() if config.auth_token else None


def stream_secret(config: TwilioConfig, hub: SessionHub) -> str | None:
    """What stream tokens are signed with: the auth token, else the first API key, else the caller-token secret;
    None on an open server."""
    secrets = [*hub.api_keys, *hub.authenticator.token_secrets[:1]]
    return _auth_token(config) or (secrets[0] if secrets else None)


# --- the webhook ------------------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _form(request: Request, limit: int) -> list[tuple[str, str]] | JSONResponse:
    if request.method == "GET":
        return []
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        return _error(415, "unsupported_media_type", "Twilio posts webhooks as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _error(413, "body_too_large", f"the webhook body is over {limit} bytes")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return _error(400, "invalid_request", "the webhook body is not UTF-8")


def call_identity(params: Mapping[str, str], config: TwilioConfig, agent: str | None) -> dict[str, str]:
    """Resource, thread and agent for a call, from the webhook's parameters (see the module docstrings)."""
    outbound = params.get("Direction", "inbound").startswith("outbound")
    number = params.get("To") if outbound else params.get("From")
    identity: dict[str, str] = {}
    resource = caller_resource(number) if config.identify_callers else None
    if resource:
        identity["resource"] = resource
        identity["thread"] = (f"{resource}:phone" if config.thread_per == "caller"
                              else f"call:{params.get('CallSid', '')}")
    if agent:
        identity["agent"] = agent
    return identity


def _attr(value: str) -> str:
    return '"' + escape(value, {'"': "&quot;"}) + '"'


def render_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    elements = "".join(f"<Parameter name={_attr(k)} value={_attr(v)}/>" for k, v in parameters.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f"<Response><Connect><Stream url={_attr(stream_url)}>{elements}</Stream></Connect></Response>")


async def twilio_voice_webhook(request: Request) -> Response:
    config = _config(request.app.state)
    hub: SessionHub = request.app.state.hub
    form = await _form(request, config.max_webhook_bytes)
    if isinstance(form, JSONResponse):
        return form
    base = public_base_url(config.public_url, request.headers, request.url.scheme)
    token = _auth_token(config)
    if token is not None:
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not signature_valid(token, request.headers.get("x-twilio-signature"), url, form):
            hub.deps.metrics.errors.labels("invalid_signature").inc()
            log.warning("twilio webhook with a bad signature", fields={"url": url})
            return _error(403, "invalid_signature", "X-Twilio-Signature does not match this request")
    params = dict(form) if form else dict(request.query_params)
    call_sid = params.get("CallSid", "")
    if not call_sid:
        return _error(400, "invalid_request", "the webhook needs Twilio's CallSid parameter")
    agent = request.query_params.get("agent") or config.agent
    if agent and agent not in hub.deps.agents:
        log.warning("twilio webhook names an unknown agent; the default answers",
                    fields={"agent": agent[:60], "known": sorted(hub.deps.agents)})
        agent = None
    identity = call_identity(params, config, agent)
    parameters = dict(identity)
    secret = stream_secret(config, hub)
    if secret is not None:
        parameters["token"] = stream_token(secret, call_sid, identity)
    twiml = render_twiml(websocket_url(base, STREAM_PATH), parameters)
    log.info("twilio call answered", fields={"call": call_sid[:64], "resource": identity.get("resource"),
                                             "agent": identity.get("agent")})
    return Response(twiml, media_type="text/xml")


# --- the media stream -------------------------------------------------------------------------------------------


def admit_call(start: StreamStart, config: TwilioConfig, hub: SessionHub) -> SessionConfig | StreamBadInput:
    """The session defaults of a stream's start, if it may be served: on a server with a secret (auth token or
    API keys, or a caller-token secret) the start must carry the webhook's token for this call, or an admin API key
    (a caller token is not enough: the call's identity is the webhook's to choose)."""
    params = start.parameters
    identity = {k: params[k] for k in IDENTITY_KEYS if params.get(k)}
    if "resource" not in identity and config.identify_callers:  # hand-written TwiML may name only the caller
        resource = caller_resource(params.get("caller"))
        if resource:
            identity["resource"] = resource
    secret = stream_secret(config, hub)
    if secret is not None:
        presented = params.get("token")
        admin = hub.authorize(presented) if hub.api_keys else None
        if not (stream_token_valid(secret, presented, start.call_id, identity)
                or (admin is not None and admin.role == "admin")):
            return StreamBadInput("unauthorized", "the stream's start carries no valid token for this call",
                                  fatal=True)
    try:
        resource = validate_id(identity["resource"], "resource") if "resource" in identity else None
        thread = validate_id(identity["thread"], "thread") if "thread" in identity else None
    except InvalidIdError as exc:
        return StreamBadInput("invalid_id", str(exc), fatal=True)
    return SessionConfig(resource=resource, thread=thread, agent=identity.get("agent"), input_format=MULAW_8K,
                         output_format=MULAW_8K, keypad=True)


def stream_options(config: TwilioConfig) -> StreamOptions:
    return StreamOptions(lead_ms=config.outbound_lead_ms, max_buffered_ms=config.max_buffered_ms,
                         max_message_bytes=config.max_message_bytes, start_timeout_s=config.start_timeout_s,
                         max_log_per_code=config.max_log_per_code)


async def twilio_stream_endpoint(ws: WebSocket) -> None:
    hub: SessionHub = ws.app.state.hub
    config = _config(ws.app.state)
    token = _auth_token(config)
    if token is not None:
        base = public_base_url(config.public_url, ws.headers, ws.url.scheme)
        url = websocket_url(base, ws.url.path)
        if not signature_valid(token, ws.headers.get("x-twilio-signature"), url):
            hub.deps.metrics.errors.labels("invalid_signature").inc()
            log.warning("twilio stream with a bad signature", fields={"url": url})
            await ws.close(code=1008)  # before accept: the upgrade is answered 403
            return
    await ws.accept()
    call = MediaStreamCall(ws, hub, TwilioCodec(), stream_options(config))
    await call.run(lambda start: admit_call(start, config, hub))
