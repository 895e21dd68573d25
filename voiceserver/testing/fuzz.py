"""Fuzz inputs for every wire format the server speaks: a corpus of valid messages per protocol, and mutators that
turn them (or nothing) into hostile ones. Seeded ``random.Random`` only, so a failing input is reproduced from its
seed; the Hypothesis properties in tests/unit drive the same mutators with Hypothesis' own ``Random``, and
scripts/fuzz_live.py sends their output to a running server.

    rng = random.Random(7)
    text = fuzz_text(rng, NATIVE)          # a JSON text frame: valid, mutated, truncated or garbage
    body = mutate(rng, OFFER_BODY)         # one valid message with one to three values changed

Nothing here opens a socket.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import string
from typing import Any

# --- valid messages, one list per protocol -----------------------------------------------------------------------

NATIVE: list[dict[str, Any]] = [
    {"type": "session.start", "resource": "fuzz-caller", "thread": "fuzz-thread", "agent": "Assistant",
     "audio": {"encoding": "pcm16", "sample_rate": 16000}, "output_audio": {"encoding": "mulaw", "sample_rate": 8000},
     "vad": {"aggressiveness": 2, "silence_ms": 500, "prefix_ms": 300, "min_speech_ms": 200}},
    {"type": "input.text", "text": "What can you do?"},
    {"type": "input.commit"},
    {"type": "input.dtmf", "digit": "1"},
    {"type": "response.cancel"},
    {"type": "response.played", "turn_id": "turn_1", "played_ms": 1200},
    {"type": "tool.approve", "tool_call_id": "call_1"},
    {"type": "tool.decline", "tool_call_id": "call_1", "reason": "no"},
    {"type": "ping", "id": "p1"},
    {"type": "session.end"},
]

TWILIO: list[dict[str, Any]] = [
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    {"event": "start", "sequenceNumber": "1", "streamSid": "MZfuzz",
     "start": {"streamSid": "MZfuzz", "accountSid": "ACfuzz", "callSid": "CAfuzz", "tracks": ["inbound"],
               "customParameters": {"resource": "tel:15550001111", "thread": "tel:15550001111:phone"},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
    {"event": "media", "streamSid": "MZfuzz", "sequenceNumber": "2",
     "media": {"track": "inbound", "chunk": "1", "timestamp": "20",
               "payload": base64.b64encode(b"\xff" * 160).decode()}},
    {"event": "dtmf", "streamSid": "MZfuzz", "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "1"}},
    {"event": "mark", "streamSid": "MZfuzz", "sequenceNumber": "4", "mark": {"name": "turn_1:0:1"}},
    {"event": "stop", "streamSid": "MZfuzz", "sequenceNumber": "5",
     "stop": {"accountSid": "ACfuzz", "callSid": "CAfuzz"}},
]

_PCM24 = base64.b64encode(b"\x00\x00" * 480).decode()  # 20 ms of 24 kHz silence
REALTIME: list[dict[str, Any]] = [
    {"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                               "silence_duration_ms": 500, "create_response": True}},
                  "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy", "speed": 1.0}},
        "tools": [{"type": "function", "name": "lookup", "description": "Look up",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        "tool_choice": "auto", "max_output_tokens": 200}},
    {"type": "session.update", "session": {  # the beta dialect's shape
        "modalities": ["text", "audio"], "voice": "alloy", "input_audio_format": "pcm16",
        "output_audio_format": "g711_ulaw", "turn_detection": None, "temperature": 0.8,
        "max_response_output_tokens": "inf"}},
    {"type": "input_audio_buffer.append", "audio": _PCM24},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}},
    {"type": "conversation.item.create", "previous_item_id": "root", "item": {
        "id": "item_fuzz", "type": "message", "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Hi.", "audio": _PCM24}]}},
    {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1",
                                                  "output": "{\"ok\": true}"}},
    {"type": "conversation.item.truncate", "item_id": "item_fuzz", "content_index": 0, "audio_end_ms": 100},
    {"type": "conversation.item.delete", "item_id": "item_fuzz"},
    {"type": "conversation.item.retrieve", "item_id": "item_fuzz"},
    {"type": "response.create", "response": {
        "instructions": "Say hi.", "output_modalities": ["text"], "conversation": "none", "metadata": {"k": "v"},
        "input": [{"type": "item_reference", "id": "item_fuzz"},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}},
    {"type": "response.create"},
    {"type": "response.cancel"},
    {"type": "output_audio_buffer.clear"},
]

# session.start is the offer's; session.end would end a peer that is costly to set up before most of the fuzz ran.
WEBRTC_CHANNEL: list[dict[str, Any]] = [m for m in NATIVE if m["type"] not in ("session.start", "session.end")]

# A structurally valid offer (aiortc would still have to agree on DTLS and codecs).
OFFER_SDP = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1", "a=mid:0", "a=sendrecv", "a=rtpmap:111 opus/48000/2",
    "a=ice-ufrag:fuzz", "a=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 127.0.0.1", "a=mid:1", "a=sctp-port:5000",
    "a=ice-ufrag:fuzz", "a=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", ""])
OFFER_BODY: dict[str, Any] = {"sdp": OFFER_SDP, "type": "offer", "resource": "fuzz-caller", "thread": "fuzz-thread",
                              "agent": "Assistant", "vad": {"silence_ms": 500}, "token": "k"}

# REST bodies
WORKING_MEMORY_BODY: dict[str, Any] = {"working_memory": "# Caller\n- name: Sam"}
WORKFLOW_START_BODY: dict[str, Any] = {"input_data": {"name": "Sam"}, "run_id": "run-fuzz",
                                       "resource_id": "fuzz-caller", "initial_state": {}}
WORKFLOW_RESUME_BODY: dict[str, Any] = {"step": "ask", "resume_data": {"answer": "yes"}}
SPEECH_BODY: dict[str, Any] = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "speed": 1.0,
                               "response_format": "pcm"}
TRANSCRIPTION_FIELDS: dict[str, Any] = {"model": "whisper-1", "language": "en", "prompt": "",
                                        "response_format": "json"}
TWILIO_WEBHOOK_FORM: dict[str, str] = {"CallSid": "CAfuzz", "From": "+15550001111", "To": "+15559990000",
                                       "Direction": "inbound", "AccountSid": "ACfuzz"}

# --- random values ---------------------------------------------------------------------------------------------

NASTY_STRINGS = ["", " ", "\x00", "\u202e", "../../etc/passwd", "x' OR '1'='1", "a" * 200,
                 "\u00e9\u4e2d\U0001f600", "NaN", "-1", "1e309", "null", "{}", "[]", "%00", "\\", "\"", "\n" * 5,
                 "tel:+1 (415) 867-5309", "sess_" + "f" * 16, "turn_1", "item_fuzz", "call_1", "MZfuzz",
                 "\u00b2", "\u0661\u0662", "9" * 5000]  # digits str.isdigit() takes and int() refuses, or too many
NASTY_NUMBERS: list[Any] = [0, -1, 1, 2**31, -(2**63), 2**64, 10**30, 0.5, -0.0, 1e308, 1e-308,
                             float("inf"), float("-inf"), float("nan"), True, False]


def random_string(rng: random.Random, max_len: int = 40) -> str:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(NASTY_STRINGS)
    if roll < 0.7:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(max_len + 1)))
    # arbitrary code points, lone surrogates excluded (a JSON encoder would refuse them on our side, not theirs)
    return "".join(chr(rng.choice([rng.randrange(32, 0xD800), rng.randrange(0xE000, 0x110000)]))
                   for _ in range(rng.randrange(max_len + 1)))


def random_json(rng: random.Random, depth: int = 3) -> Any:
    """Any JSON value (NaN and infinities included: Python's json reads them), nested at most ``depth``."""
    kinds = ["null", "bool", "number", "string"] + (["list", "object"] * 2 if depth > 0 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "number":
        return rng.choice(NASTY_NUMBERS) if rng.random() < 0.5 else rng.choice(
            [rng.randrange(-10**6, 10**6), rng.uniform(-1e6, 1e6)])
    if kind == "string":
        return random_string(rng)
    if kind == "list":
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {random_string(rng, 12): random_json(rng, depth - 1) for _ in range(rng.randrange(4))}


# --- mutations -----------------------------------------------------------------------------------------------------

def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) into a JSON value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += json_paths(child, (*prefix, index))
    return out


def _get(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def mutate(rng: random.Random, message: Any, *, max_changes: int = 3) -> Any:
    """A deep copy of ``message`` with one to ``max_changes`` changes: a value replaced by any JSON value (or a
    same-kind neighbour: another string, a number off by a lot), a key dropped or added, a list emptied or grown."""
    out = copy.deepcopy(message)
    for _ in range(rng.randint(1, max_changes)):
        paths = json_paths(out)
        path = rng.choice(paths)
        if not path:  # the root itself
            if rng.random() < 0.3:
                out = random_json(rng)
            elif isinstance(out, dict):
                out[random_string(rng, 12)] = random_json(rng)
            continue
        parent, key = _get(out, path[:-1]), path[-1]
        current = parent[key]
        op = rng.random()
        if op < 0.15 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.25 and isinstance(parent, list):
            parent.insert(rng.randrange(len(parent) + 1), random_json(rng, 1))
        elif op < 0.35 and isinstance(parent, list):
            parent.extend(copy.deepcopy(parent) * rng.randint(1, 8))  # longer arrays, duplicates
        elif op < 0.5:
            parent[key] = _neighbour(rng, current)
        else:
            parent[key] = random_json(rng, 2)
    return out


def _neighbour(rng: random.Random, value: Any) -> Any:
    """A value of the same kind, often just outside what is allowed."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([value + 1, value - 1, -value, value * 1000, 0, -1, 2**63, str(value), float(value)])
    if isinstance(value, float):
        whole = int(value) if math.isfinite(value) else 0
        return rng.choice([value * 1e6, -value, float("nan"), float("inf"), whole, str(value)])
    if isinstance(value, str):
        return rng.choice([value * rng.randint(2, 300), value[: len(value) // 2], value.upper(), value + "\x00",
                           random_string(rng), "", value[::-1]])
    if isinstance(value, list):
        return [] if value else [random_json(rng, 1)]
    if isinstance(value, dict):
        return {} if value else {random_string(rng, 8): random_json(rng, 1)}
    return random_json(rng, 1)


def dumps(value: Any, *, ensure_ascii: bool = True) -> str:
    """JSON text as a client could send it (NaN and infinities written as Python's json does)."""
    return json.dumps(value, ensure_ascii=ensure_ascii)


def mutate_text(rng: random.Random, text: str) -> str:
    """Character-level damage to JSON text: cut it, flip characters, splice garbage, nest it deeply."""
    roll = rng.random()
    if roll < 0.25 and text:
        return text[: rng.randrange(len(text))]
    if roll < 0.5 and text:
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            chars[rng.randrange(len(chars))] = rng.choice('{}[]":,\\ 0aZ\x00\u00e9')
        return "".join(chars)
    if roll < 0.65:
        at = rng.randrange(len(text) + 1)
        return text[:at] + random_string(rng, 20) + text[at:]
    if roll < 0.75:
        depth = rng.choice([50, 500, 5000])
        return '{"type": ' + "[" * depth + "]" * depth + "}"
    if roll < 0.85:
        return random_string(rng, 200)
    return text * rng.randint(2, 50)


def fuzz_message(rng: random.Random, corpus: list[dict[str, Any]]) -> Any:
    """One message as a value: a valid one (a fifth of the time), a mutated one, or any JSON value."""
    roll = rng.random()
    if roll < 0.2:
        return copy.deepcopy(rng.choice(corpus))
    if roll < 0.9:
        return mutate(rng, rng.choice(corpus))
    return random_json(rng)


def fuzz_text(rng: random.Random, corpus: list[dict[str, Any]]) -> str:
    """One text frame: :func:`fuzz_message` as JSON, or (a quarter of the time) damaged JSON text."""
    text = dumps(fuzz_message(rng, corpus), ensure_ascii=rng.random() < 0.5)  # escaped, or raw UTF-8
    return mutate_text(rng, text) if rng.random() < 0.25 else text


def random_bytes(rng: random.Random, max_len: int = 4096) -> bytes:
    """Binary junk: empty, one byte, odd lengths, or a run of random bytes."""
    n = rng.choice([0, 1, 3, 320, 321, rng.randrange(max_len + 1)])
    return rng.randbytes(n)
