"""Speech-to-text through OpenAI's transcription API (``whisper-1``, ``gpt-4o-transcribe``,
``gpt-4o-mini-transcribe``) or any server speaking it (``base_url``).

The utterance is sent as a 16 kHz mono WAV file. The SDK's own retries are off: the base class owns timeout, retries
and error mapping, so a 500 is retried once by policy and a 401 becomes ``provider_auth`` at once.
"""

from __future__ import annotations

from typing import Any

from ..audio import wav_bytes
from ..audio.format import AudioChunk
from ..engines import ProviderError
from ..metrics import Metrics
from ..openai_client import OPENAI_BASE_URL as OPENAI_BASE_URL  # re-exported: this provider's default endpoint
from ..openai_client import openai_client
from .base import SpeechToText, SttCapabilities, TranscriptResult

# The API rejects files over 25 MB; a 16 kHz pcm16 WAV reaches that after about 13 minutes.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024


class OpenAISTT(SpeechToText):
    """Transcribe with an OpenAI (or compatible) transcription endpoint.

    ``client`` may be an ``openai.AsyncOpenAI`` shared with other providers; otherwise one is built from
    ``api_key`` and ``base_url``. ``prompt`` biases the vocabulary (names, jargon).
    """

    provider = "openai-stt"
    capabilities = SttCapabilities(streaming=False, sample_rate=16000)

    def __init__(self, model: str = "whisper-1", *, api_key: str | None = None, base_url: str | None = None,
                 language: str | None = None, prompt: str | None = None, client: Any = None,
                 timeout_s: float = 30.0, retries: int = 1, metrics: Metrics | None = None):
        super().__init__(timeout_s=timeout_s, retries=retries, language=language, metrics=metrics)
        self.model = model
        self.prompt = prompt
        self.client = client if client is not None else openai_client(api_key, base_url, timeout_s)

    async def _transcribe(self, audio: bytes, language: str | None) -> TranscriptResult:
        duration_ms = len(audio) / 32
        if not audio:
            return TranscriptResult(text="", language=language, duration_ms=0.0)
        wav = wav_bytes(AudioChunk(audio, 16000))
        if len(wav) > MAX_UPLOAD_BYTES:
            raise ProviderError("stt_audio_too_long", f"utterance of {duration_ms / 1000:.0f} s is over the "
                                "25 MB upload limit", provider=self.provider)
        kwargs: dict[str, Any] = {"model": self.model, "file": ("audio.wav", wav, "audio/wav"),
                                  "response_format": "json"}
        if language:
            kwargs["language"] = language
        if self.prompt:
            kwargs["prompt"] = self.prompt
        result = await self.client.audio.transcriptions.create(**kwargs)
        text = result if isinstance(result, str) else getattr(result, "text", "")
        return TranscriptResult(text=text or "", language=language, duration_ms=duration_ms)

    async def close(self) -> None:
        await self.client.close()
