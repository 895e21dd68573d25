"""Twilio Media Streams (bidirectional, ``<Connect><Stream>``), sans-I/O: Twilio's JSON <-> stream events.

Twilio sends JSON text messages: ``connected``, then ``start`` (``start.streamSid``, ``callSid``, ``tracks``,
``customParameters``, ``mediaFormat`` = audio/x-mulaw, 8000 Hz, 1 channel), then ``media`` (base64 mu-law in
``media.payload`` with ``track``, ``chunk`` and ``timestamp``), ``dtmf`` (``dtmf.digit``), ``mark`` (``mark.name``,
echoed once the audio sent before it has played, or at once after a ``clear``) and ``stop``. Numbers such as
``sequenceNumber`` and ``timestamp`` are strings. The server sends ``media`` (``{"event":"media","streamSid":...,
"media":{"payload":...}}``), ``mark`` and ``clear``. Every message is a text frame: binary frames are refused.
docs/protocol.md ("Twilio Media Streams") documents what this gateway does with each.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from ..audio.format import AudioFormat
from ..ids import shown
from .telephony import (
    StreamAudio,
    StreamBadInput,
    StreamConnected,
    StreamDtmf,
    StreamEvent,
    StreamMark,
    StreamStart,
    StreamStop,
)

MULAW_8K = AudioFormat("mulaw", 8000)
EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")
INBOUND_TRACKS = ("inbound", "inbound_track")


class TwilioCodec:
    """One call's Twilio Media Stream: decode Twilio's messages, encode ours (see the module docstring)."""

    name = "twilio"
    audio_format = MULAW_8K
    frame_bytes = 160  # 20 ms of mu-law at 8 kHz
    silence = b"\xff"  # mu-law zero

    def __init__(self) -> None:
        self.stream_sid: str | None = None

    @property
    def started(self) -> bool:
        return self.stream_sid is not None

    # --- inbound --------------------------------------------------------------------------------------------------

    def decode(self, text: str) -> StreamEvent | None:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):  # ValueError: also a number over 4300 digits, which json refuses
            return StreamBadInput("invalid_json", "Twilio messages are JSON objects")
        if not isinstance(msg, dict):
            return StreamBadInput("invalid_message", "Twilio messages are JSON objects with an \"event\"")
        event = msg.get("event")
        if event == "media":  # the hot path: 50 a second
            return self._media(msg)
        if event == "connected":
            return StreamConnected(_str(msg.get("protocol")), _str(msg.get("version")))
        if event == "start":
            return self._start(msg)
        if event in ("dtmf", "mark", "stop") and not self.started:
            return StreamBadInput("event_before_start", f"{event} before the stream's start message")
        if event == "dtmf":
            digit = _field(msg, "dtmf", "digit")
            if not isinstance(digit, str) or len(digit) != 1:
                return StreamBadInput("invalid_message", "dtmf needs a one-character dtmf.digit")
            return StreamDtmf(digit)
        if event == "mark":
            name = _field(msg, "mark", "name")
            if not isinstance(name, str) or not name:
                return StreamBadInput("invalid_message", "mark needs a mark.name")
            return StreamMark(name)
        if event == "stop":
            return StreamStop()
        shown = event if isinstance(event, str) else json.dumps(event)
        return StreamBadInput("unknown_event",
                              f"unknown event {shown[:60]!r}; expected one of: {', '.join(EVENTS)}")

    def decode_binary(self, data: bytes) -> StreamBadInput:
        return StreamBadInput("binary_frame", f"a binary frame of {len(data)} bytes: Twilio Media Streams "
                                              "messages are JSON text frames")

    def _start(self, msg: dict[str, Any]) -> StreamEvent:
        if self.started:
            return StreamBadInput("duplicate_start", "a second start message on this stream")
        start = msg.get("start")
        if not isinstance(start, dict):
            return StreamBadInput("invalid_message", "start needs a start object")
        stream_sid = start.get("streamSid") or msg.get("streamSid")
        call_sid = start.get("callSid")
        if not isinstance(stream_sid, str) or not stream_sid or not isinstance(call_sid, str) or not call_sid:
            return StreamBadInput("invalid_message", "start needs start.streamSid and start.callSid")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            return StreamBadInput("invalid_message", "start.mediaFormat must be an object")
        encoding = media_format.get("encoding", "audio/x-mulaw")
        rate = _int(media_format.get("sampleRate", 8000))
        channels = _int(media_format.get("channels", 1))
        if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
            return StreamBadInput("unsupported_media_format",
                                  f"mediaFormat {shown(encoding)}/{shown(media_format.get('sampleRate'))}/"
                                  f"{shown(media_format.get('channels'))}: only audio/x-mulaw, 8000 Hz, 1 channel",
                                  fatal=True)
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            return StreamBadInput("invalid_message", "start.customParameters must be an object")
        tracks = start.get("tracks") if isinstance(start.get("tracks"), list) else []
        self.stream_sid = stream_sid
        return StreamStart(stream_id=stream_sid, call_id=call_sid,
                           parameters={k: v for k, v in params.items() if isinstance(k, str) and isinstance(v, str)},
                           account_id=_str(start.get("accountSid")),
                           tracks=tuple(t for t in tracks if isinstance(t, str)))

    def _media(self, msg: dict[str, Any]) -> StreamEvent | None:
        if not self.started:
            return StreamBadInput("media_before_start", "media before the stream's start message")
        media = msg.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            return StreamBadInput("invalid_message", "media needs a media.payload string")
        if media.get("track", "inbound") not in INBOUND_TRACKS:
            return None  # our own outbound audio echoed on a listening stream: never the caller's voice
        try:
            audio = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            return StreamBadInput("invalid_audio", "media.payload is not base64")
        if not audio:
            return None
        return StreamAudio(audio, _int(media.get("timestamp")))

    # --- outbound -------------------------------------------------------------------------------------------------

    def encode_audio(self, audio: bytes) -> str:
        payload = base64.b64encode(audio).decode("ascii")
        return json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}},
                          separators=(",", ":"))

    def encode_mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}},
                          separators=(",", ":"))

    def encode_clear(self) -> str:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid}, separators=(",", ":"))


def _field(msg: dict[str, Any], outer: str, inner: str) -> Any:
    value = msg.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def _int(value: Any) -> int | None:
    """Twilio writes numbers as strings ("8000", "160"); accept both."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    return None
