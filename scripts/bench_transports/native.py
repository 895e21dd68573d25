"""The native WebSocket protocol (/v1/voice), through voiceserver.client.VoiceClient."""

from __future__ import annotations

from voiceserver.client import VoiceClient

from . import TurnTiming

NAME = "native"


async def ask(port: int, audio: bytes, end_ms: float, *, resource: str) -> TurnTiming:
    async with VoiceClient.connect(f"ws://127.0.0.1:{port}/v1/voice", resource=resource) as client:
        turn = await client.ask_audio(audio, realtime=True, timeout=120)
        sent = client.sent_at(end_ms)
    v2v = (turn.first_audio_at - sent) * 1000 if turn.first_audio_at and sent else None
    return TurnTiming(transcript=turn.transcript, reply_text=turn.reply_text, client_voice_to_voice_ms=v2v,
                      metrics=dict(turn.metrics), errors=list(turn.errors))
