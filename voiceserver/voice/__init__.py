"""The Voice API: :class:`CompositeVoice` (listen / speak / get_speakers over STT and TTS providers, with fallback)."""

from .composite import NO_STT, NO_TTS, CompositeVoice

__all__ = ["NO_STT", "NO_TTS", "CompositeVoice"]
