"""One event vocabulary shared by every stage and gateway.

Audio always travels with its format (:class:`AudioChunk`). Every event class says whether a barge-in flushes it
(``flushable``): reply text and reply audio are dropped when the caller interrupts; control events (errors,
cancellations, transcripts, metrics) always get through. Gateways translate these events to and from their wire
format; the session core never sees a wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..audio.format import PCM16_16K, AudioChunk, AudioFormat

# --- server -> client ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Event:
    """Base of everything the session emits. ``flushable`` events are dropped on barge-in."""

    flushable: ClassVar[bool] = False


@dataclass(slots=True)
class SessionStarted(Event):
    session_id: str
    resource: str | None
    thread: str | None
    input_format: AudioFormat
    output_format: AudioFormat
    agent: str | None = None


@dataclass(slots=True)
class SpeechStarted(Event):
    turn_id: str
    audio_ms: int  # stream time where the utterance starts (onset minus pre-roll)
    confirmed_ms: int | None = None  # stream time at which enough speech was heard to confirm it


@dataclass(slots=True)
class SpeechStopped(Event):
    turn_id: str
    audio_ms: int


@dataclass(slots=True)
class Transcript(Event):
    turn_id: str
    text: str
    role: str = "user"
    final: bool = True


@dataclass(slots=True)
class ResponseStarted(Event):
    turn_id: str


@dataclass(slots=True)
class ResponseTextDelta(Event):
    flushable: ClassVar[bool] = True
    turn_id: str
    delta: str


@dataclass(slots=True)
class ResponseAudioStarted(Event):
    flushable: ClassVar[bool] = True
    turn_id: str
    format: AudioFormat


@dataclass(slots=True)
class ResponseAudio(Event):
    """Reply audio already in the session's output format."""

    flushable: ClassVar[bool] = True
    turn_id: str
    chunk: AudioChunk
    phrase_index: int = 0


@dataclass(slots=True)
class ResponsePaused(Event):
    """Reply audio stops for a moment: the caller may be interrupting (a client may pause its own buffer too)."""

    turn_id: str


@dataclass(slots=True)
class ResponseResumed(Event):
    """It was only a cough or a "mm-hmm": the reply goes on where it paused."""

    turn_id: str


@dataclass(slots=True)
class ResponseDone(Event):
    turn_id: str
    text: str
    interrupted: bool = False


@dataclass(slots=True)
class ResponseCancelled(Event):
    turn_id: str
    heard_text: str
    reason: str = "barge_in"


@dataclass(slots=True)
class TurnMetrics(Event):
    turn_id: str
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    voice_to_voice_ms: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class ToolApprovalRequested(Event):
    turn_id: str
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    run_id: str | None = None


@dataclass(slots=True)
class WorkflowEvent(Event):
    run_id: str
    event: dict[str, Any]
    turn_id: str | None = None


@dataclass(slots=True)
class ErrorEvent(Event):
    code: str
    message: str
    turn_id: str | None = None
    fatal: bool = False


@dataclass(slots=True)
class Pong(Event):
    """Answer to a client ping, sent after every earlier inbound message was processed."""

    id: str | None = None


@dataclass(slots=True)
class SessionClosed(Event):
    reason: str = "ended"


# --- client -> server ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionConfig:
    """What a client may choose at session start (every field optional)."""

    resource: str | None = None
    thread: str | None = None
    agent: str | None = None
    input_format: AudioFormat = PCM16_16K
    output_format: AudioFormat = PCM16_16K
    vad_aggressiveness: int = 2
    vad_silence_ms: int = 500
    vad_prefix_ms: int = 300
    vad_min_speech_ms: int = 200
    keypad: bool = False  # the caller has a phone keypad (telephony gateways): questions mention the keys
    # Answer each utterance (False: transcribe it, send the Transcript, and leave answering to the client).
    auto_respond: bool = True
    # Speech confirmed during a reply interrupts it (False: the reply goes on; an utterance that ends meanwhile is
    # answered once the reply is over).
    barge_in: bool = True

    LIVE: ClassVar[tuple[str, ...]] = ("vad_aggressiveness", "vad_silence_ms", "vad_prefix_ms", "vad_min_speech_ms",
                                       "auto_respond", "barge_in")

    def update_live(self, other: SessionConfig) -> None:
        """Take the settings a running session may change (:class:`UpdateSession`) from ``other``."""
        for name in self.LIVE:
            setattr(self, name, getattr(other, name))


@dataclass(slots=True)
class StartSession:
    """Start the session with the client's choices (a session that gets another event first starts with defaults)."""

    config: SessionConfig


@dataclass(slots=True)
class InputAudio:
    """Caller audio in the session's input format (any length); ``arrived_at`` is the gateway's receive time on the
    session clock (used for the VAD lag metric and voice-to-voice)."""

    audio: bytes
    arrived_at: float | None = None


@dataclass(slots=True)
class InputText:
    """A typed user turn; it interrupts a reply in progress."""

    text: str


@dataclass(slots=True)
class InputCommit:
    """End the current utterance now (push-to-talk release)."""


@dataclass(slots=True)
class InputDtmf:
    """A key the caller pressed on a phone keypad (``0-9``, ``*``, ``#``, ``A-D``)."""

    digit: str


@dataclass(slots=True)
class CancelResponse:
    """Stop the current reply (same effect as a barge-in)."""


@dataclass(slots=True)
class ResponsePlayed:
    """How much of a reply's audio the client really played (keeps only heard text on an interruption)."""

    turn_id: str
    played_ms: int


@dataclass(slots=True)
class ToolDecision:
    """The client's answer to a ``tool.approval`` request."""

    tool_call_id: str
    approve: bool
    reason: str | None = None


@dataclass(slots=True)
class Ping:
    """Answered by :class:`Pong` once every earlier event of the session was handled."""

    id: str | None = None


@dataclass(slots=True)
class EndSession:
    """The client ends the session."""


@dataclass(slots=True)
class UpdateSession:
    """Change how a started session listens and answers: the ``vad_*`` values, ``auto_respond`` and ``barge_in`` of
    ``config`` are taken (its ids, agent and audio formats are not). New VAD values apply from the next utterance."""

    config: SessionConfig


@dataclass(slots=True)
class ClearInput:
    """Drop the caller audio that has not ended as an utterance yet (an utterance in progress is forgotten)."""


@dataclass(slots=True)
class InvalidInput:
    """A wire message the gateway's codec could not use: reported to the client as an error (code + message); the
    session carries on."""

    code: str
    message: str


InboundEvent = (
    StartSession | InputAudio | InputText | InputCommit | InputDtmf | CancelResponse | ResponsePlayed | ToolDecision
    | Ping | EndSession | InvalidInput | UpdateSession | ClearInput
)
