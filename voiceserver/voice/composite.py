"""CompositeVoice: one object for listening and speaking, over any speech-to-text and text-to-speech providers.

    voice = CompositeVoice(input=[FasterWhisperSTT(...), OpenAISTT(...)], output=PiperTTS(...))
    text = await voice.listen("question.wav")
    async for data in voice.speak("Hello there.", filetype="mp3"):
        ...

``input`` and ``output`` take one provider or a list tried in order (fallback, through the FallbackSTT / FallbackTTS
adapters): when a provider raises or times out (for speaking: before it produced any audio of the phrase), the next
one is used, the switch is logged and counted (``voiceserver_provider_fallbacks_total{operation="stt"|"tts"}``).
``speaker`` and ``speed`` are the defaults for speaking (a voice session speaks with them too).
``realtime`` stores a realtime
speech-to-speech provider; no such provider ships yet, so it is only used as a delegate: when ``input`` (or
``output``) is not given and the realtime object has ``listen`` (or ``speak`` / ``get_speakers``), the call goes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ..audio import ContainerEncoder, Resampler, check_filetype, decode_audio, read_wav
from ..audio.format import AudioChunk
from ..engines import NotConfiguredError, ProviderError
from ..logs import get_logger
from ..metrics import Metrics
from ..stt.base import SpeechToText, TranscriptResult
from ..stt.fallback import FallbackSTT
from ..tts.base import TextToSpeech
from ..tts.fallback import FallbackTTS
from ..tts.phrases import PhraseChunker

log = get_logger("VOICE")

NO_STT = "No speech-to-text provider configured"
NO_TTS = "No text-to-speech provider configured"
# File types whose encoding costs real CPU time: encoded in a worker thread, off the event loop.
_HEAVY_FILETYPES = ("mp3", "m4a")
MAX_SPEAK_CHARS = 100_000

AudioInput = AudioChunk | bytes | bytearray | memoryview | str | os.PathLike


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]


class CompositeVoice:
    """Listen with the ``input`` providers and speak with the ``output`` providers, falling back in list order.

    ``first_audio_timeout_s`` (optional) bounds how long a speaking provider may take to produce the first audio of
    a phrase before the next provider is tried; without it each provider's own ``timeout_s`` applies.
    """

    def __init__(self, input: SpeechToText | Sequence[SpeechToText] | None = None,  # Mastra's parameter name
                 output: TextToSpeech | Sequence[TextToSpeech] | None = None, realtime: Any = None, *,
                 metrics: Metrics | None = None, first_audio_timeout_s: float | None = None,
                 speaker: str | None = None, speed: float | None = None):
        self.inputs: list[SpeechToText] = _as_list(input)
        self.outputs: list[TextToSpeech] = _as_list(output)
        for stt in self.inputs:
            if not isinstance(stt, SpeechToText):
                raise TypeError(f"input providers must be SpeechToText, got {type(stt).__name__}")
        for tts in self.outputs:
            if not isinstance(tts, TextToSpeech):
                raise TypeError(f"output providers must be TextToSpeech, got {type(tts).__name__}")
        self.realtime = realtime
        self.metrics = metrics or Metrics.null()
        self.first_audio_timeout_s = first_audio_timeout_s
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4.0, got {speed}")
        self.speaker = speaker
        self.speed = speed
        self._listener: SpeechToText | None = (
            None if not self.inputs else self.inputs[0] if len(self.inputs) == 1
            else FallbackSTT(self.inputs, metrics=self.metrics))
        self._talker: TextToSpeech | None = (
            None if not self.outputs
            else self.outputs[0] if len(self.outputs) == 1 and first_audio_timeout_s is None
            else FallbackTTS(self.outputs, first_audio_timeout_s=first_audio_timeout_s, metrics=self.metrics))

    def listener(self) -> SpeechToText | None:
        """The input providers as one speech-to-text engine (a fallback chain when there are several)."""
        return self._listener

    def talker(self) -> TextToSpeech | None:
        """The output providers as one text-to-speech engine (a fallback chain when there are several)."""
        return self._talker

    # --- properties -------------------------------------------------------------------------------------------------

    @property
    def output_sample_rate(self) -> int | None:
        """Sample rate of ``speak(..., filetype="pcm")`` output: the first output provider's rate (fallback audio is
        resampled to it). None when there is no output provider."""
        return self.outputs[0].sample_rate if self.outputs else getattr(self.realtime, "output_sample_rate", None)

    # --- listening --------------------------------------------------------------------------------------------------

    async def listen(self, audio: AudioInput, *, language: str | None = None) -> str:
        """Transcribe one utterance: an AudioChunk, the bytes of a WAV (or another container PyAV reads), or a path.

        Raises NotConfiguredError without a provider, ProviderError("invalid_audio") for unreadable audio, and the
        last provider's ProviderError when every provider failed.
        """
        return (await self.transcribe(audio, language=language)).text

    async def transcribe(self, audio: AudioInput, *, language: str | None = None) -> TranscriptResult:
        """Like :meth:`listen` but returns the whole TranscriptResult (language, duration, engine details)."""
        if not self.inputs:
            if self.realtime is not None and hasattr(self.realtime, "listen"):
                return TranscriptResult(text=await self.realtime.listen(audio))
            raise NotConfiguredError(NO_STT)
        chunk = await _load_audio(audio)
        assert self._listener is not None
        return await self._listener.transcribe(chunk, language)

    # --- speaking ---------------------------------------------------------------------------------------------------

    def speak(self, text: str, speaker: str | None = None, speed: float | None = None,
              filetype: str = "wav") -> AsyncIterator[bytes]:
        """Speak ``text``: an async iterator of bytes in ``filetype`` (pcm, wav, mp3 or m4a), streamed as produced.

        ``pcm`` is raw 16-bit mono little-endian at :attr:`output_sample_rate`; ``wav`` streams a header of unknown
        length first; ``m4a`` comes in one piece at the end (MP4 needs its index). Bad arguments raise at once.
        """
        filetype = check_filetype(filetype)
        if not isinstance(text, str):
            raise TypeError("text must be a str")
        if len(text) > MAX_SPEAK_CHARS:
            raise ValueError(f"text is over {MAX_SPEAK_CHARS} characters")
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4.0, got {speed}")
        if not self.outputs:
            if self.realtime is not None and hasattr(self.realtime, "speak"):
                return self.realtime.speak(text, speaker=speaker, speed=speed, filetype=filetype)
            raise NotConfiguredError(NO_TTS)
        self._check_speaker(speaker)
        return self._speak(text, speaker or self.speaker, speed or self.speed, filetype)

    async def _speak(self, text: str, speaker: str | None, speed: float | None, filetype: str
                     ) -> AsyncIterator[bytes]:
        rate = self.outputs[0].sample_rate
        encoder = ContainerEncoder(filetype, rate)
        heavy = filetype in _HEAVY_FILETYPES
        resampler: Resampler | None = None

        async def encode(pcm: bytes) -> bytes:
            return await asyncio.to_thread(encoder.encode, pcm) if heavy else encoder.encode(pcm)

        async with contextlib.aclosing(self.synthesize(text, speaker, speed)) as chunks:
            async for chunk in chunks:
                if resampler is None or resampler.in_rate != chunk.sample_rate:
                    tail = resampler.flush() if resampler is not None else b""
                    resampler = Resampler(chunk.sample_rate, rate)
                    if tail and (data := await encode(tail)):
                        yield data
                if data := await encode(resampler.process(chunk.audio[: len(chunk.audio) // 2 * 2])):
                    yield data
        if resampler is not None and (tail := resampler.flush()) and (data := await encode(tail)):
            yield data
        data = await asyncio.to_thread(encoder.finish) if heavy else encoder.finish()
        if data:
            yield data

    async def synthesize(self, text: str, speaker: str | None = None, speed: float | None = None
                         ) -> AsyncIterator[AudioChunk]:
        """Stream AudioChunks (each at its provider's own rate) phrase by phrase, with fallback per phrase.

        The text is cut into phrases (markdown removed, the first phrase short); a provider that fails before any
        audio of a phrase is replaced by the next one for that phrase and the rest of the text.
        """
        if self._talker is None:
            raise NotConfiguredError(NO_TTS)
        chunker = PhraseChunker()
        for phrase in chunker.feed(text) + chunker.flush():
            stream = self._talker.synthesize(phrase, speaker or self.speaker, speed or self.speed)
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    yield chunk

    async def get_speakers(self) -> list[dict[str, Any]]:
        """The voices of every output provider: [{"voice_id", "name", "provider"}], primary provider first."""
        if not self.outputs:
            if self.realtime is not None and hasattr(self.realtime, "get_speakers"):
                return await self.realtime.get_speakers()
            raise NotConfiguredError(NO_TTS)
        speakers: list[dict[str, Any]] = []
        for tts in self.outputs:
            for entry in await tts.get_speakers():
                speakers.append({**entry, "provider": tts.provider})
        return speakers

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Load every provider (weights, clients) before the first call."""
        await asyncio.gather(*(p.load() for p in [*self.inputs, *self.outputs]))

    async def close(self) -> None:
        for provider in [*self.inputs, *self.outputs]:
            with contextlib.suppress(Exception):
                await provider.close()

    # --- internals --------------------------------------------------------------------------------------------------

    def _check_speaker(self, speaker: str | None) -> None:
        if speaker is None:
            return
        known = [tts.capabilities.voices for tts in self.outputs]
        if all(voices and speaker not in voices for voices in known):
            available = sorted({v for voices in known for v in voices})
            raise ProviderError("tts_invalid_voice", f"no output provider has the voice {speaker!r}; "
                                f"available: {', '.join(available)}")


async def _load_audio(audio: AudioInput) -> AudioChunk:
    """An AudioChunk from a chunk, container bytes, or a file path; ProviderError("invalid_audio") if unreadable."""
    if isinstance(audio, AudioChunk):
        return audio
    try:
        if isinstance(audio, (str, os.PathLike)):
            data = await asyncio.to_thread(Path(audio).read_bytes)
        elif isinstance(audio, (bytes, bytearray, memoryview)):
            data = bytes(audio)
        else:
            raise ValueError(f"audio must be an AudioChunk, bytes or a path, got {type(audio).__name__}")
        if data[:4] == b"RIFF":
            return read_wav(data)
        # Not a WAV: let PyAV try (mp3, m4a, ogg, flac ...), off the loop since it decodes the whole file.
        return await asyncio.to_thread(decode_audio, data)
    except OSError as exc:
        raise ProviderError("invalid_audio", f"cannot read audio file: {exc}") from exc
    except ValueError as exc:
        raise ProviderError("invalid_audio", f"cannot read audio: {exc}") from exc
