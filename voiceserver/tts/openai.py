"""Text-to-speech through OpenAI's speech API (``tts-1``, ``tts-1-hd``, ``gpt-4o-mini-tts``) or any server speaking
it (``base_url``).

The request asks for ``response_format="pcm"`` (raw 24 kHz 16-bit mono little-endian) and the response body is
streamed: audio is yielded as it arrives, so the first sound plays before the whole phrase is synthesised. Network
chunks can split a sample, so an odd byte is carried to the next chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..audio.format import AudioChunk
from ..engines import ProviderError
from ..metrics import Metrics
from ..openai_client import OPENAI_BASE_URL as OPENAI_BASE_URL  # re-exported: this provider's default endpoint
from ..openai_client import openai_client
from .base import TextToSpeech, TtsCapabilities

SAMPLE_RATE = 24000  # OpenAI's documented rate for response_format="pcm"
# The documented built-in voices (tts-1 and tts-1-hd support a subset; the API rejects the others for them).
OPENAI_VOICES: tuple[str, ...] = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                                  "shimmer", "verse", "marin", "cedar")
MAX_INPUT_CHARS = 4096  # the documented limit of one request
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# Network reads are coalesced to at least this much audio (50 ms) so downstream stages see few tiny chunks.
MIN_CHUNK_BYTES = SAMPLE_RATE * 2 // 20


class OpenAITTS(TextToSpeech):
    """Speak with an OpenAI (or compatible) speech endpoint, streamed as 24 kHz pcm16.

    ``instructions`` (tone, accent) works with ``gpt-4o-mini-tts`` only. ``client`` may be a shared
    ``openai.AsyncOpenAI``; otherwise one is built from ``api_key`` and ``base_url``.
    """

    provider = "openai-tts"
    capabilities = TtsCapabilities(streaming=True, sample_rate=SAMPLE_RATE, voices=OPENAI_VOICES)

    def __init__(self, model: str = "tts-1", voice: str = "alloy", *, api_key: str | None = None,
                 base_url: str | None = None, speed: float = 1.0, instructions: str | None = None,
                 client: Any = None, timeout_s: float = 30.0, retries: int = 1, metrics: Metrics | None = None):
        super().__init__(voice=voice, speed=speed, timeout_s=timeout_s, retries=retries, metrics=metrics)
        self.model = model
        self.instructions = instructions
        self.client = client if client is not None else openai_client(api_key, base_url, timeout_s)

    async def _synthesize(self, text: str, voice: str | None, speed: float) -> AsyncIterator[AudioChunk]:
        if len(text) > MAX_INPUT_CHARS:
            raise ProviderError("tts_input_too_long", f"text of {len(text)} characters is over the "
                                f"{MAX_INPUT_CHARS}-character limit", provider=self.provider)
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ProviderError("tts_invalid_speed", f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}",
                                provider=self.provider)
        kwargs: dict[str, Any] = {"model": self.model, "voice": voice or "alloy", "input": text,
                                  "response_format": "pcm", "speed": speed}
        if self.instructions:
            kwargs["instructions"] = self.instructions
        pending = b""
        async with self.client.audio.speech.with_streaming_response.create(**kwargs) as response:
            async for data in response.iter_bytes():
                pending += data
                if len(pending) >= MIN_CHUNK_BYTES:
                    usable = len(pending) - len(pending) % 2
                    chunk, pending = pending[:usable], pending[usable:]
                    yield AudioChunk(chunk, SAMPLE_RATE)
        usable = len(pending) - len(pending) % 2
        if usable:
            yield AudioChunk(pending[:usable], SAMPLE_RATE)

    async def close(self) -> None:
        await self.client.close()
