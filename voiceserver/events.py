"""One event vocabulary shared by every stage and gateway.

Audio always travels with its format (:class:`AudioChunk`). Every event class says whether a barge-in flushes it
(``flushable``): reply text and reply audio are dropped when the caller interrupts; control events (errors,
cancellations, transcripts, metrics) always get through. Gateways translate these events to and from their wire
format; the session core never sees a wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Encoding = Literal["pcm16", "mulaw"]
ENCODINGS: tuple[str, ...] = ("pcm16", "mulaw")
PCM16_RATES: tuple[int, ...] = (8000, 16000, 24000, 48000)
MULAW_RATES: tuple[int, ...] = (8000,)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Encoding and sample rate of a mono stream."""

    encoding: Encoding = "pcm16"
    sample_rate: int = 16000
    channels: int = 1

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    def bytes_for_ms(self, ms: float) -> int:
        return int(self.sample_rate * ms / 1000) * self.bytes_per_sample * self.channels

    def ms_for_bytes(self, n: int) -> float:
        return n / (self.bytes_per_sample * self.channels) * 1000 / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate}


def validate_format(encoding: str, sample_rate: int) -> AudioFormat:
    """Return an AudioFormat or raise ValueError naming what is allowed."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; allowed: {', '.join(ENCODINGS)}")
    rates = PCM16_RATES if encoding == "pcm16" else MULAW_RATES
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate not in rates:
        allowed = ", ".join(map(str, rates))
        raise ValueError(f"unsupported sample_rate {sample_rate!r} for {encoding}; allowed: {allowed}")
    return AudioFormat(encoding, sample_rate)  # type: ignore[arg-type]


PCM16_16K = AudioFormat("pcm16", 16000)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of mono audio and its format (wyoming's AudioChunk shape)."""

    audio: bytes
    sample_rate: int = 16000
    encoding: Encoding = "pcm16"
    channels: int = 1

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate, self.channels)

    @property
    def duration_ms(self) -> float:
        return self.format.ms_for_bytes(len(self.audio))


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


@dataclass(slots=True)
class InputAudio:
    chunk: AudioChunk


@dataclass(slots=True)
class InputText:
    text: str


@dataclass(slots=True)
class InputCommit:
    pass


@dataclass(slots=True)
class CancelResponse:
    pass


@dataclass(slots=True)
class ResponsePlayed:
    turn_id: str
    played_ms: int


@dataclass(slots=True)
class ToolDecision:
    tool_call_id: str
    approve: bool
    reason: str | None = None


@dataclass(slots=True)
class EndSession:
    pass


@dataclass(slots=True)
class Ping:
    id: str | None = None


@dataclass(slots=True)
class StartSession:
    config: SessionConfig


InboundEvent = (
    InputAudio | InputText | InputCommit | CancelResponse | ResponsePlayed | ToolDecision | EndSession
    | StartSession | Ping
)
