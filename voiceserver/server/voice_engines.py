"""Part of the composition root: the speech engines a server runs, built from the settings.

Names the vendors (faster-whisper, Piper, OpenAI). A provider setting may be a list (``["local", "openai"]``): the
engines are then one fallback chain (:class:`~voiceserver.stt.fallback.FallbackSTT`,
:class:`~voiceserver.tts.fallback.FallbackTTS`). Engines are built once per provider and shared: an agent whose
voice names another provider, voice or speed gets its own :class:`~voiceserver.voice.CompositeVoice` over the shared
engines (speaker and speed are per call), so several voices never load a model twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..metrics import Metrics
from ..settings import Provider, Settings, VoiceConfig
from ..stt.base import SpeechToText
from ..stt.fallback import FallbackSTT
from ..tts.base import TextToSpeech
from ..tts.fallback import FallbackTTS
from ..voice import CompositeVoice

# VOICE_QUALITY: what each level changes (documented in README).
QUALITY = {
    "low": {"beam_size": 1, "openai_stt": "whisper-1", "openai_tts": "tts-1"},
    "medium": {"beam_size": 1, "openai_stt": "whisper-1", "openai_tts": "tts-1"},
    "high": {"beam_size": 5, "openai_stt": "gpt-4o-transcribe", "openai_tts": "gpt-4o-mini-tts"},
}
LOCAL_VOICE = "en_US-joe-medium"


class VoiceConfigError(ValueError):
    """A voice the embedded engines cannot speak (reported as one start-up line)."""


class SpeechEngines:
    """Builds and caches the server's STT and TTS engines, one per provider."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self._stt: dict[str, SpeechToText] = {}
        self._tts: dict[str, TextToSpeech] = {}

    # --- the server's defaults ----------------------------------------------------------------------------------

    def stt(self) -> SpeechToText:
        """The server's speech-to-text: one engine, or a fallback chain."""
        return _one_stt([self._stt_engine(p) for p in self.settings.stt_chain], self.metrics)

    def tts(self) -> TextToSpeech:
        """The server's text-to-speech: one engine, or a fallback chain."""
        return _one_tts([self._tts_engine(p) for p in self.settings.tts_chain], self.metrics)

    def voice_for(self, config: VoiceConfig, stt: SpeechToText, tts: TextToSpeech) -> CompositeVoice:
        """An agent's voice: its own providers when it names them, else the server's engines; its speaker and
        speed either way."""
        output = tts
        if config.provider is not None:
            chain = config.provider if isinstance(config.provider, list) else [config.provider]
            output = _one_tts([self._tts_engine(p) for p in dict.fromkeys(chain)], self.metrics)
        speaker = config.voice or self.settings.tts.voice
        self._check_voice(output, speaker)
        return CompositeVoice(input=stt, output=output, metrics=self.metrics, speaker=speaker,
                              speed=config.speed if config.speed != 1.0 else None)

    def engines(self) -> list[Any]:
        """Every engine built so far (to load and close)."""
        return [*self._stt.values(), *self._tts.values()]

    # --- one engine per provider --------------------------------------------------------------------------------

    def _stt_engine(self, provider: Provider) -> SpeechToText:
        if provider not in self._stt:
            settings, cfg = self.settings, self.settings.stt
            quality = QUALITY[settings.voice_quality]
            if provider == "openai":
                from ..stt.openai import OpenAISTT

                self._stt[provider] = OpenAISTT(
                    model=cfg.model or quality["openai_stt"], api_key=_secret(settings.openai_api_key),
                    base_url=settings.openai_base_url, language=cfg.language, timeout_s=cfg.timeout_s,
                    retries=cfg.retries, metrics=self.metrics)
            else:
                from ..stt.faster_whisper import FasterWhisperSTT

                self._stt[provider] = FasterWhisperSTT(
                    Path(settings.models_dir) / "whisper-base", threads=cfg.threads, workers=cfg.workers,
                    beam_size=max(cfg.beam_size, quality["beam_size"]), language=cfg.language,
                    timeout_s=cfg.timeout_s, retries=cfg.retries, window=cfg.window,
                    window_padding_s=cfg.window_padding_s, min_window_s=cfg.min_window_s, metrics=self.metrics)
        return self._stt[provider]

    def _tts_engine(self, provider: Provider) -> TextToSpeech:
        if provider not in self._tts:
            settings, cfg = self.settings, self.settings.tts
            quality = QUALITY[settings.voice_quality]
            if provider == "openai":
                from ..tts.openai import OpenAITTS

                self._tts[provider] = OpenAITTS(
                    model=cfg.model if cfg.model != "tts-1" else quality["openai_tts"],
                    voice=_openai_voice(cfg.voice or settings.agent.voice.voice),
                    api_key=_secret(settings.openai_api_key), base_url=settings.openai_base_url,
                    speed=settings.agent.voice.speed, timeout_s=cfg.timeout_s, retries=cfg.retries,
                    metrics=self.metrics)
            else:
                from ..tts.piper import PiperTTS

                self._tts[provider] = PiperTTS(
                    Path(settings.models_dir) / "piper" / f"{LOCAL_VOICE}.onnx", speed=settings.agent.voice.speed,
                    concurrency=cfg.max_concurrency, timeout_s=cfg.timeout_s, retries=cfg.retries,
                    metrics=self.metrics)
        return self._tts[provider]

    @staticmethod
    def _check_voice(tts: TextToSpeech, speaker: str | None) -> None:
        engines = tts.engines if isinstance(tts, FallbackTTS) else [tts]
        if speaker and all(e.provider == "piper" for e in engines) and speaker != LOCAL_VOICE:
            raise VoiceConfigError(f"unknown local voice {speaker!r}; the embedded voice is {LOCAL_VOICE}")


def _one_stt(engines: list[SpeechToText], metrics: Metrics) -> SpeechToText:
    return engines[0] if len(engines) == 1 else FallbackSTT(engines, metrics=metrics)


def _one_tts(engines: list[TextToSpeech], metrics: Metrics) -> TextToSpeech:
    return engines[0] if len(engines) == 1 else FallbackTTS(engines, metrics=metrics)


def _openai_voice(voice: str | None) -> str:
    return voice if voice and voice != LOCAL_VOICE else "alloy"


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
