"""Voice activity detection: a sans-I/O segmenter (feed audio, get speech start/pause/resume/end events) over a
frame classifier (webrtcvad by default; scripted and energy-based ones for tests)."""

from .detectors import EnergyDetector, ScriptedDetector, VoiceDetector
from .segmenter import (
    EndReason,
    Segmenter,
    SegmenterConfig,
    SegmentEvent,
    SpeechEnd,
    SpeechOnset,
    SpeechOnsetLost,
    SpeechPause,
    SpeechResume,
    SpeechStart,
)
from .webrtc import FRAME_MS, SAMPLE_RATES, WebRtcDetector, validate_vad_params

__all__ = [
    "FRAME_MS",
    "SAMPLE_RATES",
    "EndReason",
    "EnergyDetector",
    "ScriptedDetector",
    "SegmentEvent",
    "Segmenter",
    "SegmenterConfig",
    "SpeechEnd",
    "SpeechOnset",
    "SpeechOnsetLost",
    "SpeechPause",
    "SpeechResume",
    "SpeechStart",
    "VoiceDetector",
    "WebRtcDetector",
    "validate_vad_params",
]
