"""Frame classifier over the ``webrtcvad`` module (package webrtcvad-wheels): the WebRTC GMM voice detector.

What it says about signals other than speech (measured with webrtcvad-wheels 2.0.14, 16 kHz, 20 ms frames): a
steady tone at 440 Hz or above is classified as speech on every frame at every aggressiveness (it looks voiced);
a 100-200 Hz tone only for the first ~100 ms while the detector adapts; digital silence never; low-level white noise
often (aggressiveness 3 rejects most of it). The segmenter's onset rule is what keeps clicks from being turns; a
sustained tone is a turn.
"""

from __future__ import annotations

import webrtcvad

SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
FRAME_MS: tuple[int, ...] = (10, 20, 30)


def validate_vad_params(aggressiveness: int, sample_rate: int, frame_ms: int | None = None) -> None:
    """Raise ValueError naming what is allowed when a parameter is outside what webrtcvad accepts."""
    if not isinstance(aggressiveness, int) or isinstance(aggressiveness, bool) or not 0 <= aggressiveness <= 3:
        raise ValueError(f"aggressiveness must be an int from 0 to 3, got {aggressiveness!r}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"VAD sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, got {sample_rate!r}")
    if frame_ms is not None and frame_ms not in FRAME_MS:
        raise ValueError(f"VAD frame_ms must be one of {', '.join(map(str, FRAME_MS))}, got {frame_ms!r}")


class WebRtcDetector:
    """Classify one frame of mono pcm16 (10, 20 or 30 ms at ``sample_rate``) as speech or not.

    The underlying detector adapts its noise model over time, so use one instance per stream.
    """

    def __init__(self, aggressiveness: int = 2, sample_rate: int = 16000):
        validate_vad_params(aggressiveness, sample_rate)
        self.aggressiveness = aggressiveness
        self.sample_rate = sample_rate
        self._vad = webrtcvad.Vad(aggressiveness)
        # Accepted frame sizes in bytes -> samples, checked before calling into C.
        self._frame_samples = {sample_rate * ms // 1000 * 2: sample_rate * ms // 1000 for ms in FRAME_MS}

    def is_speech(self, frame: bytes) -> bool:
        """True if the frame contains speech. Raises ValueError on a frame that is not 10, 20 or 30 ms long."""
        samples = self._frame_samples.get(len(frame))
        if samples is None:
            allowed = ", ".join(f"{n} ({ms} ms)" for n, ms in zip(self._frame_samples, FRAME_MS, strict=True))
            raise ValueError(f"VAD frame must be {allowed} bytes at {self.sample_rate} Hz, got {len(frame)} bytes")
        return self._vad.is_speech(frame, self.sample_rate, samples)
