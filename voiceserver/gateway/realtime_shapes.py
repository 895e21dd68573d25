"""The values of the OpenAI Realtime protocol, in its two dialects (GA and beta), as plain data: the session
settings, conversation items and response parameters, parsed from client JSON and rendered back. Pure functions;
the event layer is realtime_codec.py.

The dialects differ in names and nesting, not in meaning: GA nests audio settings (``audio.input.format``
``{"type": "audio/pcm", "rate": 24000}``, ``audio.output.voice``) and says ``output_modalities`` and
``max_output_tokens``; beta has flat fields (``input_audio_format: "pcm16"``, ``voice``, ``modalities``,
``max_response_output_tokens``) and names assistant content ``text`` / ``audio`` where GA says ``output_text`` /
``output_audio``. Everything is parsed into one :class:`RealtimeSettings`; items are kept in the GA shape and
rendered per dialect.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..audio.format import AudioFormat
from ..ids import shown

Dialect = Literal["ga", "beta"]
PCM24 = AudioFormat("pcm16", 24000)
PCMU = AudioFormat("mulaw", 8000)
PCMA = AudioFormat("alaw", 8000)
GA_FORMATS = {"audio/pcm": PCM24, "audio/pcmu": PCMU, "audio/pcma": PCMA}
BETA_FORMATS = {"pcm16": PCM24, "g711_ulaw": PCMU, "g711_alaw": PCMA}
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
ITEM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TOOL_CHOICES = ("auto", "none", "required")
# semantic_vad has no silence setting: its eagerness picks one (documented in docs/protocol.md).
EAGERNESS_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}
MAX_CONTENT_PARTS = 64
MAX_ERROR_CHARS = 300
# Any error event: room for the list of supported event names in unknown_event, not for a quoted 64 KiB value.
MAX_EVENT_ERROR_CHARS = 600


def cut_message(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message no longer than ``limit`` (it may quote a client's value: never echo 5000 digits)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


MAX_PARAM_CHARS = 120


class ShapeError(ValueError):
    """A value the protocol does not allow: ``code`` and ``param`` go into the error event (both cut short: a
    client's 1 MiB event must not come back in its error)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(cut_message(message))
        self.param = param if param is None or len(param) <= MAX_PARAM_CHARS else param[:MAX_PARAM_CHARS - 3] + "..."
        self.code = code


@dataclass
class TurnDetection:
    type: str = "server_vad"  # or semantic_vad
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str = "auto"
    idle_timeout_ms: int | None = None


@dataclass
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


@dataclass
class RealtimeSettings:
    """One connection's session, whichever dialect set it."""

    model: str = "voiceserver"
    instructions: str = ""
    voice: str = "alloy"
    speed: float = 1.0
    audio_output: bool = True  # modalities: audio (with its transcript), or text only
    input_format: AudioFormat = PCM24
    output_format: AudioFormat = PCM24
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = None
    noise_reduction: Any = None  # accepted and echoed; the server does not denoise
    tools: list[FunctionTool] = field(default_factory=list)
    tool_choice: str = "auto"
    max_output_tokens: int | None = None  # None: "inf" (the server's own reply limits still apply)
    temperature: float | None = None


@dataclass
class ResponseParams:
    """What one ``response.create`` asks for; None fields fall back to the session's settings."""

    instructions: str | None = None
    audio_output: bool | None = None
    voice: str | None = None
    output_format: AudioFormat | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    out_of_band: bool = False  # conversation: "none"
    input: list[dict[str, Any]] | None = None  # items (or references) replacing the conversation as context
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Limits:
    max_tools: int = 64
    max_instructions_chars: int = 20000
    max_text_chars: int = 20000


# --- small validators ------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(value: Any, param: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ShapeError(f"Invalid type for '{param}': expected a string.", param, "invalid_type")
    if len(value) > max_chars:
        raise ShapeError(f"'{param}' is {len(value)} characters; the limit is {max_chars}.", param,
                         "string_above_max_length")
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise ShapeError(f"Invalid type for '{param}': expected a boolean.", param, "invalid_type")
    return value


def _ranged(value: Any, param: str, low: float, high: float, *, integer: bool = False) -> Any:
    if not (_is_int(value) if integer else _is_number(value)) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ShapeError(f"Invalid '{param}': expected {kind} from {low:g} to {high:g}, got {shown(value)}.", param)
    return value


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    return value


def _known(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 60 else unknown[0][:57] + "..."
        raise ShapeError(f"Unknown parameter: '{where}.{name}'.", f"{where}.{name}", "unknown_parameter")


def decode_base64(value: Any, param: str) -> bytes:
    """Base64 audio bytes, or a ShapeError (``invalid_base64``)."""
    if not isinstance(value, str):
        raise ShapeError(f"Invalid type for '{param}': expected a base64 string.", param, "invalid_type")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ShapeError(f"Invalid '{param}': not valid base64.", param, "invalid_base64") from None


# --- audio formats -------------------------------------------------------------------------------------------


def parse_format(value: Any, dialect: Dialect, param: str) -> AudioFormat:
    if dialect == "beta":
        if not isinstance(value, str) or value not in BETA_FORMATS:
            raise ShapeError(f"Invalid '{param}': {shown(value)}; supported: {', '.join(BETA_FORMATS)}.", param,
                             "invalid_audio_format")
        return BETA_FORMATS[value]
    fmt = _object(value, param)
    kind = fmt.get("type")
    if not isinstance(kind, str) or kind not in GA_FORMATS:
        raise ShapeError(f"Invalid '{param}.type': {shown(kind)}; supported: {', '.join(GA_FORMATS)}.",
                         f"{param}.type", "invalid_audio_format")
    rate = fmt.get("rate")
    if kind == "audio/pcm" and rate is not None and rate != 24000:
        raise ShapeError(f"Invalid '{param}.rate': {shown(rate)}; audio/pcm is 24000 Hz.", f"{param}.rate",
                         "invalid_audio_format")
    return GA_FORMATS[kind]


def render_format(fmt: AudioFormat, dialect: Dialect) -> Any:
    if dialect == "beta":
        return next(name for name, f in BETA_FORMATS.items() if f == fmt)
    name = next(name for name, f in GA_FORMATS.items() if f == fmt)
    return {"type": name, "rate": 24000} if name == "audio/pcm" else {"type": name}


# --- session ----------------------------------------------------------------------------------------------------

GA_SESSION_KEYS = frozenset({"type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
                             "max_output_tokens", "include", "tracing", "truncation", "prompt", "reasoning",
                             "parallel_tool_calls", "object", "id", "expires_at"})
BETA_SESSION_KEYS = frozenset({"model", "modalities", "instructions", "voice", "input_audio_format",
                               "output_audio_format", "input_audio_transcription", "turn_detection", "tools",
                               "tool_choice", "temperature", "max_response_output_tokens", "speed",
                               "input_audio_noise_reduction", "tracing", "client_secret", "include", "object", "id",
                               "expires_at"})


def apply_session(settings: RealtimeSettings, session: Any, dialect: Dialect, limits: Limits) -> RealtimeSettings:
    """The settings after a ``session.update``; raises ShapeError naming the first bad field (nothing applied)."""
    session = _object(session, "session")
    out = copy.deepcopy(settings)
    if dialect == "ga":
        _known(session, GA_SESSION_KEYS, "session")
        if session.get("type", "realtime") != "realtime":
            raise ShapeError("Only 'realtime' sessions are served here (no transcription sessions).",
                             "session.type")
        audio = _object(session.get("audio") or {}, "session.audio")
        _known(audio, frozenset({"input", "output"}), "session.audio")
        audio_in = _object(audio.get("input") or {}, "session.audio.input")
        _known(audio_in, frozenset({"format", "transcription", "turn_detection", "noise_reduction"}),
               "session.audio.input")
        audio_out = _object(audio.get("output") or {}, "session.audio.output")
        _known(audio_out, frozenset({"format", "voice", "speed"}), "session.audio.output")
        if "format" in audio_in:
            out.input_format = parse_format(audio_in["format"], dialect, "session.audio.input.format")
        if "format" in audio_out:
            out.output_format = parse_format(audio_out["format"], dialect, "session.audio.output.format")
        if "turn_detection" in audio_in:
            out.turn_detection = _turn_detection(audio_in["turn_detection"], "session.audio.input.turn_detection")
        if "transcription" in audio_in:
            out.transcription = _transcription(audio_in["transcription"], "session.audio.input.transcription")
        if "noise_reduction" in audio_in:
            out.noise_reduction = audio_in["noise_reduction"]
        if "voice" in audio_out:
            out.voice = parse_voice(audio_out["voice"], "session.audio.output.voice")
        if "speed" in audio_out:
            out.speed = float(_ranged(audio_out["speed"], "session.audio.output.speed", 0.25, 4.0))
        if "output_modalities" in session:
            out.audio_output = _modalities(session["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in session:
            out.max_output_tokens = _max_tokens(session["max_output_tokens"], "session.max_output_tokens")
    else:
        _known(session, BETA_SESSION_KEYS, "session")
        if "input_audio_format" in session:
            out.input_format = parse_format(session["input_audio_format"], dialect, "session.input_audio_format")
        if "output_audio_format" in session:
            out.output_format = parse_format(session["output_audio_format"], dialect, "session.output_audio_format")
        if "turn_detection" in session:
            out.turn_detection = _turn_detection(session["turn_detection"], "session.turn_detection")
        if "input_audio_transcription" in session:
            out.transcription = _transcription(session["input_audio_transcription"],
                                               "session.input_audio_transcription")
        if "input_audio_noise_reduction" in session:
            out.noise_reduction = session["input_audio_noise_reduction"]
        if "voice" in session:
            out.voice = parse_voice(session["voice"], "session.voice")
        if "speed" in session:
            out.speed = float(_ranged(session["speed"], "session.speed", 0.25, 4.0))
        if "modalities" in session:
            out.audio_output = _modalities(session["modalities"], "session.modalities")
        if "max_response_output_tokens" in session:
            out.max_output_tokens = _max_tokens(session["max_response_output_tokens"],
                                                "session.max_response_output_tokens")
        if "temperature" in session:
            out.temperature = float(_ranged(session["temperature"], "session.temperature", 0.0, 2.0))
    if "model" in session:
        out.model = _string(session["model"], "session.model", 128)
    if "instructions" in session:
        out.instructions = _string(session["instructions"], "session.instructions", limits.max_instructions_chars)
    if "tools" in session:
        out.tools = parse_tools(session["tools"], "session.tools", limits)
    if "tool_choice" in session:
        out.tool_choice = parse_tool_choice(session["tool_choice"], "session.tool_choice")
    _check_choice(out.tool_choice, out.tools, "session.tool_choice")
    return out


def _check_choice(choice: str | None, tools: list[FunctionTool], param: str) -> None:
    if choice is not None and choice not in TOOL_CHOICES and choice not in {t.name for t in tools}:
        raise ShapeError(f"Invalid '{param}': no function named {shown(choice)} is declared.", param)


def render_session(settings: RealtimeSettings, dialect: Dialect, session_id: str) -> dict[str, Any]:
    """The ``session`` object of session.created / session.updated."""
    tools = [{"type": "function", "name": t.name, "description": t.description,
              "parameters": t.parameters or {"type": "object", "properties": {}}} for t in settings.tools]
    max_tokens: Any = settings.max_output_tokens if settings.max_output_tokens is not None else "inf"
    turn = dataclasses.asdict(settings.turn_detection) if settings.turn_detection is not None else None
    if turn is not None and turn["type"] == "semantic_vad":
        turn = {k: turn[k] for k in ("type", "eagerness", "create_response", "interrupt_response")}
    elif turn is not None:
        turn.pop("eagerness")
    if dialect == "beta":
        if turn is not None:
            turn.pop("idle_timeout_ms", None)
        return {"id": session_id, "object": "realtime.session", "model": settings.model,
                "modalities": ["text", "audio"] if settings.audio_output else ["text"],
                "instructions": settings.instructions, "voice": settings.voice,
                "input_audio_format": render_format(settings.input_format, dialect),
                "output_audio_format": render_format(settings.output_format, dialect),
                "input_audio_transcription": settings.transcription, "turn_detection": turn,
                "input_audio_noise_reduction": settings.noise_reduction, "tools": tools,
                "tool_choice": settings.tool_choice,
                "temperature": 0.8 if settings.temperature is None else settings.temperature,  # 0 is a temperature
                "max_response_output_tokens": max_tokens, "speed": settings.speed, "tracing": None}
    return {"type": "realtime", "object": "realtime.session", "id": session_id, "model": settings.model,
            "output_modalities": ["audio"] if settings.audio_output else ["text"],
            "instructions": settings.instructions, "tools": tools, "tool_choice": settings.tool_choice,
            "max_output_tokens": max_tokens, "tracing": None, "truncation": "auto", "prompt": None,
            "expires_at": 0, "include": None,
            "audio": {"input": {"format": render_format(settings.input_format, dialect),
                                "transcription": settings.transcription, "noise_reduction": settings.noise_reduction,
                                "turn_detection": turn},
                      "output": {"format": render_format(settings.output_format, dialect), "voice": settings.voice,
                                 "speed": settings.speed}}}


def _turn_detection(value: Any, param: str) -> TurnDetection | None:
    if value is None:
        return None
    obj = _object(value, param)
    _known(obj, frozenset({"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                           "interrupt_response", "eagerness", "idle_timeout_ms"}), param)
    turn = TurnDetection(type=obj.get("type") or "server_vad")
    if turn.type not in ("server_vad", "semantic_vad"):
        raise ShapeError(f"Invalid '{param}.type': {shown(turn.type)}; supported: server_vad, semantic_vad.",
                         f"{param}.type")
    if obj.get("threshold") is not None:
        turn.threshold = float(_ranged(obj["threshold"], f"{param}.threshold", 0.0, 1.0))
    if obj.get("prefix_padding_ms") is not None:
        turn.prefix_padding_ms = _ranged(obj["prefix_padding_ms"], f"{param}.prefix_padding_ms", 0, 2000,
                                         integer=True)
    if obj.get("silence_duration_ms") is not None:
        turn.silence_duration_ms = _ranged(obj["silence_duration_ms"], f"{param}.silence_duration_ms", 100, 5000,
                                           integer=True)
    for name in ("create_response", "interrupt_response"):
        if obj.get(name) is not None:
            setattr(turn, name, _bool(obj[name], f"{param}.{name}"))
    if obj.get("eagerness") is not None:
        if not isinstance(obj["eagerness"], str) or obj["eagerness"] not in EAGERNESS_SILENCE_MS:
            raise ShapeError(f"Invalid '{param}.eagerness': {shown(obj['eagerness'])}.", f"{param}.eagerness")
        turn.eagerness = obj["eagerness"]
    if obj.get("idle_timeout_ms") is not None:
        turn.idle_timeout_ms = _ranged(obj["idle_timeout_ms"], f"{param}.idle_timeout_ms", 0, 600_000, integer=True)
    return turn


def _transcription(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, param)
    for key in ("model", "language", "prompt"):
        if obj.get(key) is not None:
            _string(obj[key], f"{param}.{key}", 4000)
    return dict(obj)


def parse_voice(value: Any, param: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        value = value["id"]
    voice = _string(value, param, 128)
    if not voice.strip():
        raise ShapeError(f"Invalid '{param}': empty voice.", param)
    return voice


def _modalities(value: Any, param: str) -> bool:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise ShapeError(f"Invalid '{param}': a list of 'text' and/or 'audio'.", param)
    return "audio" in value


def _max_tokens(value: Any, param: str) -> int | None:
    if value == "inf" or value is None:
        return None
    return _ranged(value, param, 1, 4096, integer=True)


def parse_tools(value: Any, param: str, limits: Limits) -> list[FunctionTool]:
    if not isinstance(value, list):
        raise ShapeError(f"Invalid type for '{param}': expected an array.", param, "invalid_type")
    if len(value) > limits.max_tools:
        raise ShapeError(f"'{param}' has {len(value)} tools; the limit is {limits.max_tools}.", param,
                         "array_above_max_length")
    tools, names = [], set()
    for i, raw in enumerate(value):
        where = f"{param}[{i}]"
        tool = _object(raw, where)
        if tool.get("type", "function") != "function":
            raise ShapeError(f"Invalid '{where}.type': only function tools are served here.", f"{where}.type")
        name = tool.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
            raise ShapeError(f"Invalid '{where}.name': 1-64 letters, digits, '_' or '-'.", f"{where}.name")
        if name in names:
            raise ShapeError(f"Two tools are named {name!r}.", f"{where}.name")
        names.add(name)
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ShapeError(f"Invalid '{where}.parameters': a JSON schema object.", f"{where}.parameters")
        description = tool.get("description") or ""
        tools.append(FunctionTool(name, _string(description, f"{where}.description", 4000), params))
    return tools


def parse_tool_choice(value: Any, param: str) -> str:
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return value["name"]
    if isinstance(value, str) and (value in TOOL_CHOICES or FUNCTION_NAME.fullmatch(value)):
        return value
    raise ShapeError(f"Invalid '{param}': auto, none, required or {{\"type\": \"function\", \"name\": ...}}.", param)


def render_tool_choice(choice: str, dialect: Dialect) -> Any:
    if dialect == "ga" and choice not in TOOL_CHOICES:
        return {"type": "function", "name": choice}
    return choice


# --- response.create ----------------------------------------------------------------------------------------------

GA_RESPONSE_KEYS = frozenset({"audio", "conversation", "input", "instructions", "max_output_tokens", "metadata",
                              "output_modalities", "prompt", "tool_choice", "tools", "parallel_tool_calls",
                              "reasoning"})
BETA_RESPONSE_KEYS = frozenset({"conversation", "input", "instructions", "max_response_output_tokens",
                                "max_output_tokens", "metadata", "modalities", "output_audio_format", "temperature",
                                "tool_choice", "tools", "voice"})


def parse_response(value: Any, dialect: Dialect, limits: Limits) -> ResponseParams:
    params = ResponseParams()
    if value is None:
        return params
    obj = _object(value, "response")
    _known(obj, GA_RESPONSE_KEYS if dialect == "ga" else BETA_RESPONSE_KEYS, "response")
    if dialect == "ga":
        output = _object(_object(obj.get("audio") or {}, "response.audio").get("output") or {},
                         "response.audio.output")
        if "format" in output:
            params.output_format = parse_format(output["format"], dialect, "response.audio.output.format")
        if "voice" in output:
            params.voice = parse_voice(output["voice"], "response.audio.output.voice")
        if "output_modalities" in obj:
            params.audio_output = _modalities(obj["output_modalities"], "response.output_modalities")
    else:
        if "output_audio_format" in obj:
            params.output_format = parse_format(obj["output_audio_format"], dialect, "response.output_audio_format")
        if "voice" in obj:
            params.voice = parse_voice(obj["voice"], "response.voice")
        if "modalities" in obj:
            params.audio_output = _modalities(obj["modalities"], "response.modalities")
        if "temperature" in obj:
            params.temperature = float(_ranged(obj["temperature"], "response.temperature", 0.0, 2.0))
    for key in ("max_output_tokens", "max_response_output_tokens"):
        if key in obj:
            params.max_output_tokens = _max_tokens(obj[key], f"response.{key}")
    if "instructions" in obj:
        params.instructions = _string(obj["instructions"], "response.instructions", limits.max_instructions_chars)
    if "tools" in obj:
        params.tools = parse_tools(obj["tools"], "response.tools", limits)
    if "tool_choice" in obj:
        params.tool_choice = parse_tool_choice(obj["tool_choice"], "response.tool_choice")
        if params.tools is not None:
            _check_choice(params.tool_choice, params.tools, "response.tool_choice")
    conversation = obj.get("conversation", "auto")
    if conversation not in ("auto", "none"):
        raise ShapeError("Invalid 'response.conversation': 'auto' or 'none'.", "response.conversation")
    params.out_of_band = conversation == "none"
    if obj.get("input") is not None:
        if not isinstance(obj["input"], list):
            raise ShapeError("Invalid type for 'response.input': expected an array.", "response.input",
                             "invalid_type")
        params.input = [item if _is_reference(item) else parse_item(item, dialect, limits, f"response.input[{i}]")
                        for i, item in enumerate(obj["input"])]
    if obj.get("metadata") is not None:
        params.metadata = _object(obj["metadata"], "response.metadata")
    return params


def _is_reference(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "item_reference" and isinstance(item.get("id"), str)


# --- conversation items ---------------------------------------------------------------------------------------

BETA_TO_GA_CONTENT = {"text": "output_text", "audio": "output_audio"}
GA_TO_BETA_CONTENT = {v: k for k, v in BETA_TO_GA_CONTENT.items()}
ROLE_CONTENT = {"user": ("input_text", "input_audio"), "system": ("input_text",),
                "assistant": ("output_text", "output_audio")}


def parse_item(value: Any, dialect: Dialect, limits: Limits, param: str = "item") -> dict[str, Any]:
    """A client item in the GA shape, audio decoded into ``_audio`` (bytes, removed before it is stored)."""
    obj = _object(value, param)
    kind = obj.get("type")
    item: dict[str, Any] = {"object": "realtime.item", "type": kind, "status": "completed"}
    if obj.get("id") is not None:
        if not isinstance(obj["id"], str) or not ITEM_ID.fullmatch(obj["id"]):
            raise ShapeError(f"Invalid '{param}.id': 1-64 letters, digits and _.:-.", f"{param}.id")
        item["id"] = obj["id"]
    if kind == "message":
        role = obj.get("role")
        if not isinstance(role, str) or role not in ROLE_CONTENT:
            raise ShapeError(f"Invalid '{param}.role': user, assistant or system.", f"{param}.role")
        content = obj.get("content")
        if not isinstance(content, list) or not content or len(content) > MAX_CONTENT_PARTS:
            raise ShapeError(f"Invalid '{param}.content': 1-{MAX_CONTENT_PARTS} content parts.", f"{param}.content")
        item["role"] = role
        item["content"] = [_content(part, role, dialect, limits, f"{param}.content[{i}]")
                           for i, part in enumerate(content)]
    elif kind == "function_call":
        item["name"] = obj.get("name")
        if not isinstance(item["name"], str) or not FUNCTION_NAME.fullmatch(item["name"]):
            raise ShapeError(f"Invalid '{param}.name'.", f"{param}.name")
        item["arguments"] = _string(obj.get("arguments", "{}"), f"{param}.arguments", limits.max_text_chars)
        item["call_id"] = _string(obj.get("call_id") or item.get("id") or "", f"{param}.call_id", 128)
    elif kind == "function_call_output":
        if not isinstance(obj.get("call_id"), str) or not obj["call_id"]:
            raise ShapeError(f"Missing required parameter: '{param}.call_id'.", f"{param}.call_id",
                             "missing_required_parameter")
        item["call_id"] = obj["call_id"]
        item["output"] = _string(obj.get("output", ""), f"{param}.output", limits.max_text_chars)
    else:
        raise ShapeError(f"Invalid '{param}.type': {shown(kind)}; supported: message, function_call, "
                         "function_call_output.", f"{param}.type")
    return item


def _content(value: Any, role: str, dialect: Dialect, limits: Limits, param: str) -> dict[str, Any]:
    part = _object(value, param)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise ShapeError(f"Invalid type for '{param}.type': expected a string.", f"{param}.type", "invalid_type")
    if dialect == "beta":
        kind = BETA_TO_GA_CONTENT.get(kind, kind)
    if role == "assistant" and kind in ("input_text", "text"):
        kind = "output_text"  # assistant history written with the user-side name
    if kind not in ROLE_CONTENT[role]:
        raise ShapeError(f"Invalid '{param}.type': {shown(part.get('type'))} for a {role} message; supported: "
                         f"{', '.join(ROLE_CONTENT[role])}.", f"{param}.type")
    if kind in ("input_text", "output_text"):
        return {"type": kind, "text": _string(part.get("text", ""), f"{param}.text", limits.max_text_chars)}
    out: dict[str, Any] = {"type": kind, "transcript": None}
    if part.get("transcript") is not None:
        out["transcript"] = _string(part["transcript"], f"{param}.transcript", limits.max_text_chars)
    if part.get("audio") is not None:
        out["_audio"] = decode_base64(part["audio"], f"{param}.audio")
    elif out["transcript"] is None:
        raise ShapeError(f"Missing required parameter: '{param}.audio' (or a transcript).", f"{param}.audio",
                         "missing_required_parameter")
    return out


def render_item(item: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """An item for the client (no audio bytes; beta content names)."""
    out = {k: v for k, v in item.items() if not k.startswith("_")}
    if "content" in out:
        parts = [{k: v for k, v in part.items() if not k.startswith("_")} for part in out["content"]]
        if dialect == "beta":
            for part in parts:
                part["type"] = GA_TO_BETA_CONTENT.get(part["type"], part["type"])
        out["content"] = parts
    return out


def item_text(item: dict[str, Any]) -> str:
    """What an item says (texts and transcripts joined), for the model's context."""
    if item.get("type") == "function_call_output":
        return str(item.get("output", ""))
    parts = []
    for part in item.get("content") or []:
        text = part.get("text") if part.get("type", "").endswith("_text") else part.get("transcript")
        if text:
            parts.append(text)
    return " ".join(parts).strip()
