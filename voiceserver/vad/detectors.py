"""The frame classifier interface the segmenter uses, and two simple implementations besides webrtcvad.

- :class:`ScriptedDetector` answers from a script (a string like ``"..###..."`` or booleans), so tests can drive
  the segmenter through an exact timeline without real audio.
- :class:`EnergyDetector` calls a frame speech when its RMS level is above a threshold: deterministic for
  synthetic audio (tones, silence) and cheaper than webrtcvad, for load tests with scripted engines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..audio.pcm import rms_dbfs


@runtime_checkable
class VoiceDetector(Protocol):
    """Classifies one fixed-size frame of mono pcm16 as speech (True) or not."""

    def is_speech(self, frame: bytes) -> bool: ...


class ScriptedDetector:
    """Returns scripted answers, one per frame: ``"#"``/``"1"``/True is speech, ``"."``/``"0"``/False is not.

    Spaces in a string script are ignored (use them to group frames). After the script runs out it answers
    ``default``. ``calls`` counts the frames seen and ``last_frame_size`` is the size of the latest, for assertions.
    """

    def __init__(self, script: str | Iterable[bool], default: bool = False):
        if isinstance(script, str):
            unknown = set(script) - set("#1.0 ")
            if unknown:
                raise ValueError(f"script characters must be '#', '1', '.', '0' or ' ', got {sorted(unknown)}")
            self._answers = [c in "#1" for c in script if c != " "]
        else:
            self._answers = [bool(v) for v in script]
        self.default = default
        self.calls = 0
        self.last_frame_size: int | None = None

    def is_speech(self, frame: bytes) -> bool:
        index = self.calls
        self.calls += 1
        self.last_frame_size = len(frame)
        return self._answers[index] if index < len(self._answers) else self.default


class EnergyDetector:
    """Speech when the frame's RMS level is at or above ``threshold_dbfs`` (default -45 dBFS)."""

    def __init__(self, threshold_dbfs: float = -45.0):
        self.threshold_dbfs = threshold_dbfs

    def is_speech(self, frame: bytes) -> bool:
        return rms_dbfs(frame) >= self.threshold_dbfs
