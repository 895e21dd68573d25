"""OpenAI Realtime (ws /v1/realtime, GA names, server VAD), through the official openai SDK.

The question is resampled to 24 kHz pcm16 (``audio/pcm``) and appended in 20 ms events, real time, followed by a
second of silence so the server's VAD ends it; the client voice-to-voice runs from sending the event that holds the
end of the voice to the first ``response.output_audio.delta``. Realtime has no metrics event: the server-side
stage figures of this transport are the native run's (same server, same engines).
"""

from __future__ import annotations

import asyncio
import base64
import time

from openai import AsyncOpenAI

from voiceserver.audio import resample_pcm16

from . import TurnTiming

NAME = "realtime"
FRAME_MS = 20


async def ask(port: int, audio: bytes, end_ms: float, *, resource: str) -> TurnTiming:
    pcm = resample_pcm16(audio, 16000, 24000) + b"\x00\x00" * 24 * 1000
    client = AsyncOpenAI(api_key="bench", base_url=f"http://127.0.0.1:{port}/v1",
                         websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)
    timing = TurnTiming()
    sent: list[tuple[float, float]] = []  # (stream ms at the end of the event, wall clock)
    first_audio: float | None = None
    async with client.realtime.connect(model="voiceserver", extra_query={"resource": resource}) as conn:
        await conn.recv()  # session.created
        await conn.session.update(session={"type": "realtime",
                                           "audio": {"input": {"transcription": {"model": "whisper-1"}}}})

        async def send() -> None:
            step = 24 * 2 * FRAME_MS
            start = time.perf_counter()
            for i, offset in enumerate(range(0, len(pcm), step)):
                delay = start + i * FRAME_MS / 1000 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[offset:offset + step]).decode())
                sent.append(((i + 1) * FRAME_MS, time.perf_counter()))

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(120):
                async for event in conn:
                    if event.type == "response.output_audio.delta" and first_audio is None:
                        first_audio = time.perf_counter()
                    elif event.type == "conversation.item.input_audio_transcription.completed":
                        timing.transcript = event.transcript
                    elif event.type == "response.output_audio_transcript.delta":
                        timing.reply_text += event.delta
                    elif event.type == "error":
                        timing.errors.append(event.error.model_dump())
                    elif event.type == "response.done":
                        break
        finally:
            await sender
    voice_end = next((at for ms, at in sent if ms >= end_ms), None)
    if first_audio is not None and voice_end is not None:
        timing.client_voice_to_voice_ms = (first_audio - voice_end) * 1000
    return timing
