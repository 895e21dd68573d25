"""A spoken Realtime turn with the real speech models: a Piper-spoken question streamed to ws /v1/realtime (GA, server
VAD) is transcribed by faster-whisper, answered (a scripted model keeps the words fixed), and the reply's audio
deltas decode to speech that the same server's /v1/audio/transcriptions hears as the reply's words."""

from __future__ import annotations

import asyncio
import base64

import pytest
from openai import AsyncOpenAI

from voiceserver.agent import Agent
from voiceserver.audio import rms_dbfs, to_pcm16_16k, wav_bytes
from voiceserver.audio.format import AudioChunk
from voiceserver.settings import MemoryConfig, Settings
from voiceserver.testing.fake_llm import ScriptedChatModel
from voiceserver.testing.harness import voice_server
from voiceserver.testing.speech import speak

pytestmark = [pytest.mark.e2e]
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


async def test_ga_spoken_turn_transcribed_and_answered_with_speech(models_dir, tmp_path):
    settings = Settings(models_dir=models_dir, lancedb_uri=str(tmp_path / "memory"))
    settings.agent.memory = MemoryConfig(type="none")
    agent = Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel([ANSWER]))
    question = speak(models_dir, QUESTION, lead_silence_ms=300, rate=24000) + b"\x00\x00" * 24 * 1000
    async with voice_server(agent=agent, settings=settings, engines_from_settings=True) as vs:
        await vs.server.load_engines()
        client = AsyncOpenAI(api_key="sk-local", base_url=vs.http_url + "/v1",
                             websocket_base_url=vs.running.ws_url + "/v1", max_retries=0)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            step = 24 * 2 * 100  # 100 ms a message, faster than real time: the VAD runs on stream time
            for i in range(0, len(question), step):
                await conn.input_audio_buffer.append(audio=base64.b64encode(question[i:i + step]).decode())
            events = []
            async with asyncio.timeout(120):
                async for event in conn:
                    events.append(event)
                    if event.type == "response.done":
                        break
        transcript = next(e.transcript for e in events
                          if e.type == "conversation.item.input_audio_transcription.completed")
        assert {"capital", "france"} <= {w.strip("?.,").lower() for w in transcript.split()}, transcript
        reply = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        pcm16k = to_pcm16_16k(AudioChunk(reply, 24000))
        assert len(reply) / 48 > 1000 and rms_dbfs(pcm16k) > -35
        heard = await client.audio.transcriptions.create(model="whisper-1",
                                                         file=("reply.wav", wav_bytes(AudioChunk(pcm16k, 16000))))
    words = {w.strip(".,").lower() for w in heard.text.split()}
    assert {"capital", "paris"} <= words, heard.text
    assert events[-1].response.status == "completed"
