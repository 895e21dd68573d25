"""Twilio Media Streams (/v1/twilio/voice + /v1/twilio/stream) through voiceserver.testing.fake_twilio: the call
webhook, then mu-law 8 kHz in 20 ms frames in real time, reply media played in real time with marks echoed.

Twilio's wire has no metrics message, so only the client's voice-to-voice is measured (the transcript is read back
from the caller's memory thread). The question is sent as a phone line carries it: 16 kHz -> 8 kHz mu-law.
"""

from __future__ import annotations

import hashlib

import httpx

from voiceserver.testing.fake_twilio import FakeTwilioCall, to_mulaw_8k

from . import TurnTiming

NAME = "twilio"


def caller_number(resource: str) -> str:
    """A distinct phone number per bench caller (the bridge names callers by their number)."""
    return "+1555" + str(int(hashlib.sha256(resource.encode()).hexdigest(), 16))[:7]


async def ask(port: int, audio: bytes, end_ms: float, *, resource: str) -> TurnTiming:
    base = f"http://127.0.0.1:{port}"
    number = caller_number(resource)
    voiced = int(end_ms * 16) * 2  # bytes of 16 kHz pcm16 up to the end of the voice
    errors: list[str] = []
    async with FakeTwilioCall.dial(base, from_number=number) as call:
        await call.say(to_mulaw_8k(audio[:voiced]))
        sent = call.last_speech_frame_at
        try:
            await call.wait_for(lambda c: c.record.marks_sent, timeout=120)
            await call.wait_until_played(quiet_s=1.0, timeout=120)
        except TimeoutError:
            errors.append("no reply within 120 s")
        first = call.record.first_media_at
    v2v = (first - sent) * 1000 if first and sent else None
    digits = number.lstrip("+")
    transcript, reply = None, ""
    async with httpx.AsyncClient(base_url=base) as http:
        answer = await http.get(f"/v1/memory/threads/tel:{digits}:phone/messages", params={"resource": f"tel:{digits}"})
        if answer.status_code == 200:
            said = [m for m in answer.json()["messages"] if m["type"] == "text"]
            transcript = next((m["content"] for m in said if m["role"] == "user"), None)
            reply = next((m["content"] for m in said if m["role"] == "assistant"), "")
    return TurnTiming(transcript=transcript, reply_text=reply, client_voice_to_voice_ms=v2v, errors=errors)
