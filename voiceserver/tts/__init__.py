"""Text-to-speech: the :class:`TextToSpeech` base, its providers and the phrase chunker.

Providers live in submodules so their heavy dependencies load only when used:
``voiceserver.tts.piper.PiperTTS`` (local, the ``local`` extra) and ``voiceserver.tts.openai.OpenAITTS``.
:class:`PhraseChunker` (``voiceserver.tts.phrases``) turns streamed LLM text into speakable phrases.
"""

from .base import TextToSpeech, TtsCapabilities
from .phrases import PhraseChunker, normalize_for_speech

__all__ = ["PhraseChunker", "TextToSpeech", "TtsCapabilities", "normalize_for_speech"]
