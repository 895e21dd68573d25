"""Structured logging: JSON lines (or a pretty form), components, per-session context, secret scrubbing.

Every record carries ``time``, ``level``, ``component`` and ``message``, plus ``session_id`` / ``turn_id`` /
``run_id`` when the code that logs runs inside :func:`log_context`. Extra key/values passed as ``fields=`` are
added to the object. Secrets registered with :func:`configure_logging` (API keys, tokens) are replaced by
``[redacted]`` wherever they appear, and anything that looks like a bearer token or ``sk-`` key is masked too.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COMPONENTS = ("SERVER", "GATEWAY", "SESSION", "VAD", "STT", "TTS", "LLM", "AGENT", "MEMORY", "WORKFLOW", "NETWORK",
              "MODELS", "VOICE")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
          "silent": logging.CRITICAL + 10}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
                logging.CRITICAL: "error"}
_ROOT = "voiceserver"

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("voiceserver_log_context", default={})  # noqa: B039
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|authorization|password|secret)[\"']?\s*[:=]\s*[\"']?)"
               r"(?!bearer\s)(?!\[redacted)[^\s\"',&]{4,}"),
]


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Attach session_id / turn_id / run_id (or any id) to every record logged inside the block (task-local)."""
    merged = {**_context.get(), **{k: v for k, v in ids.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind_context(**ids: str | None) -> None:
    """Set ids for the rest of the current task (use inside a task created for one session)."""
    _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})


class ComponentLogger(logging.LoggerAdapter):
    """A logger for one component. ``log.info("msg", fields={...})`` adds key/values to the record."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = kwargs.pop("fields", None)
        extra = kwargs.setdefault("extra", {})
        extra["component"] = self.extra["component"]
        if fields:
            extra["fields"] = fields
        return msg, kwargs


def get_logger(component: str) -> ComponentLogger:
    """The logger for a component such as "STT" or "GATEWAY"."""
    component = component.upper()
    return ComponentLogger(logging.getLogger(f"{_ROOT}.{component.lower()}"), {"component": component})


class _Scrubber:
    def __init__(self, secrets: list[str]):
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, scrub: _Scrubber):
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": _LEVEL_NAMES.get(record.levelno, "info"),
            "component": getattr(record, "component", record.name.rsplit(".", 1)[-1].upper()),
            "message": record.getMessage(),
        }
        obj.update(_context.get())
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                obj.setdefault(key, value)
        if record.exc_info:
            obj["error"] = self.formatException(record.exc_info)
        return self.scrub(json.dumps(obj, default=str, ensure_ascii=False))


class PrettyFormatter(logging.Formatter):
    """A readable single line for a terminal."""

    def __init__(self, scrub: _Scrubber):
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        level = _LEVEL_NAMES.get(record.levelno, "info").upper()
        component = getattr(record, "component", record.name.rsplit(".", 1)[-1].upper())
        ids = " ".join(f"{k}={v}" for k, v in _context.get().items())
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {level:<5} [{component}] {record.getMessage()}"
        if ids or extra:
            line += "  " + " ".join(x for x in (ids, extra) if x)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.scrub(line)


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    log_file: str | Path | None = None,
    secrets: list[str] | None = None,
    stream: Any = None,
) -> None:
    """Route all voiceserver (and uvicorn) records to stderr and optionally a file, in JSON or pretty form."""
    scrub = _Scrubber(secrets or [])
    formatter: logging.Formatter = JsonFormatter(scrub) if fmt == "json" else PrettyFormatter(scrub)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    numeric = LEVELS[level]
    for name in (_ROOT, *(name for name, _, _ in _THIRD_PARTY), "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = False
    root = logging.getLogger(_ROOT)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(numeric)
    # Third-party loggers go through the same handlers under a GATEWAY/SERVER component, but only warnings:
    # their info chatter (per-request access lines, ICE candidates) is noise at our default level.
    for name, component, floor in _THIRD_PARTY:
        logger = logging.getLogger(name)
        logger.setLevel(max(numeric, floor) if numeric < LEVELS["silent"] else numeric)
        for handler in handlers:
            logger.addHandler(_ComponentHandler(handler, component))
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)  # a RuntimeWarning ("coroutine ... was never awaited") is a JSON line too


# (logger, component, lowest level shown). asyncio: "Task exception was never retrieved"; py.warnings: Python's
# warnings; python_multipart warns before raising on a malformed upload, which the route already answers with a 400.
_THIRD_PARTY = (("uvicorn", "SERVER", logging.WARNING), ("aiortc", "GATEWAY", logging.WARNING),
                ("aioice", "GATEWAY", logging.WARNING), ("faster_whisper", "STT", logging.WARNING),
                ("piper", "TTS", logging.WARNING), ("lancedb", "MEMORY", logging.WARNING),
                ("asyncio", "SERVER", logging.WARNING), ("py.warnings", "SERVER", logging.WARNING),
                ("python_multipart", "SERVER", logging.ERROR))


class _ComponentHandler(logging.Handler):
    """Tags third-party records with a component, then hands them to a real handler."""

    def __init__(self, inner: logging.Handler, component: str):
        super().__init__()
        self.inner = inner
        self.component = component

    def emit(self, record: logging.LogRecord) -> None:
        record.component = self.component
        self.inner.handle(record)
