"""Speech-to-text: the :class:`SpeechToText` base and its providers.

Providers live in submodules so their heavy dependencies load only when used:
``voiceserver.stt.faster_whisper.FasterWhisperSTT`` (local, the ``local`` extra) and
``voiceserver.stt.openai.OpenAISTT`` (OpenAI's transcription API or any server speaking it).
"""

from .base import SpeechToText, SttCapabilities, TranscriptResult

__all__ = ["SpeechToText", "SttCapabilities", "TranscriptResult"]
