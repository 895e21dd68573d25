"""The kiosk client: a continuous voice conversation with a voiceserver from a microphone and speaker (or WAV files,
or a pipe), with barge-in, echo handling and reconnection. ``voiceserver talk --mic`` runs it from a terminal.

    from voiceserver.kiosk import Conversation, WavFileSource, WavFileSink
    await Conversation(url, source=WavFileSource("in.wav"), sink=WavFileSink("out.wav")).run()

The microphone and speaker (:class:`~voiceserver.kiosk.sounddevice_io.SoundDeviceAudio`) need the ``kiosk``
extra (sounddevice, and LiveKit's WebRTC audio processing for echo cancellation); nothing here imports them until
they are used.
"""

from .audio_io import (
    FRAME_BYTES,
    FRAME_MS,
    RATE,
    AudioSink,
    AudioSource,
    PacedSink,
    PipeSink,
    PipeSource,
    WavFileSink,
    WavFileSource,
)
from .conversation import Backoff, Conversation, ConversationError, ConversationEvent, Status
from .echo import EchoCanceller, EchoGate, aec_available

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "RATE",
    "AudioSink",
    "AudioSource",
    "Backoff",
    "Conversation",
    "ConversationError",
    "ConversationEvent",
    "EchoCanceller",
    "EchoGate",
    "PacedSink",
    "PipeSink",
    "PipeSource",
    "Status",
    "WavFileSink",
    "WavFileSource",
    "aec_available",
]
