"""The segmenter over the real webrtcvad detector on synthetic signals: silence, tones, clicks; detector checks.

What webrtcvad says (webrtcvad-wheels 2.0.14, 16 kHz, 20 ms frames), which these tests pin down:
- digital silence: never speech;
- a steady tone at 300 Hz and above: speech on every frame, at every aggressiveness, plus a hangover of about
  100-150 ms after it stops. So a sustained tone IS a turn: it starts at the tone onset minus the pre-roll and
  ends ``silence_ms`` after the tone plus the hangover;
- a tone at 100-200 Hz: speech only for a few frames while the detector adapts, so no turn;
- clicks (bursts of 5 to 80 ms of loud noise), single or repeated: at most a few voiced frames, never a turn.
"""

from __future__ import annotations

import numpy as np
import pytest

from voiceserver.audio import float32_to_pcm16
from voiceserver.vad import Segmenter, SegmenterConfig, SpeechEnd, SpeechStart, WebRtcDetector

RATE = 16000
FRAME = 640
SECOND_OF_SILENCE = bytes(2 * RATE)


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return float32_to_pcm16((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def noise_burst(ms: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return float32_to_pcm16(rng.uniform(-0.9, 0.9, RATE * ms // 1000).astype(np.float32))


def segment(pcm: bytes, aggressiveness: int = 2) -> list:
    segmenter = Segmenter(SegmenterConfig(aggressiveness=aggressiveness))
    events = []
    for i in range(0, len(pcm), FRAME):
        events.extend(segmenter.feed(pcm[i : i + FRAME]))
    return events


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_silence_gives_no_events(aggressiveness):
    assert segment(SECOND_OF_SILENCE * 5, aggressiveness) == []


@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
@pytest.mark.parametrize("freq", [440.0, 1000.0])
def test_a_sustained_tone_is_one_turn(aggressiveness, freq):
    events = segment(SECOND_OF_SILENCE + tone(freq, 2.0) + SECOND_OF_SILENCE * 2, aggressiveness)
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == 1 and len(ends) == 1
    # The tone runs from 1000 to 3000 ms. Onset is detected at its first frame.
    assert starts[0].start_ms == 1000 - 300
    assert starts[0].confirmed_ms == 1000 + 200
    end = ends[0]
    assert end.reason == "silence"
    assert 3000 <= end.last_voiced_ms <= 3000 + 200  # webrtcvad's hangover
    assert end.end_ms == end.last_voiced_ms + 500
    assert len(end.audio) == (end.end_ms - end.start_ms) * 32


@pytest.mark.parametrize("freq", [100.0, 200.0])
def test_a_low_tone_is_not_a_turn(freq):
    assert segment(SECOND_OF_SILENCE + tone(freq, 2.0) + SECOND_OF_SILENCE) == []


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
@pytest.mark.parametrize("ms", [5, 20, 80])
def test_a_click_is_not_a_turn(aggressiveness, ms):
    assert segment(SECOND_OF_SILENCE + noise_burst(ms) + SECOND_OF_SILENCE, aggressiveness) == []


def test_repeated_clicks_are_not_a_turn():
    gap = bytes(2 * RATE * 3 // 10)
    clicks = b"".join(noise_burst(5, seed) + gap for seed in range(10))
    for aggressiveness in range(4):
        assert segment(SECOND_OF_SILENCE + clicks + SECOND_OF_SILENCE, aggressiveness) == []


def test_detector_accepts_10_20_30_ms_frames_and_rejects_others():
    detector = WebRtcDetector(2, 16000)
    for ms in (10, 20, 30):
        assert detector.is_speech(bytes(32 * ms)) is False
    with pytest.raises(ValueError, match="640 \\(20 ms\\)"):
        detector.is_speech(bytes(600))
    detector8k = WebRtcDetector(0, 8000)
    assert detector8k.is_speech(bytes(320)) is False


@pytest.mark.parametrize(("aggressiveness", "rate"), [(4, 16000), (-1, 16000), (True, 16000), (2, 22050), (2, 0)])
def test_detector_validates_its_parameters(aggressiveness, rate):
    with pytest.raises(ValueError, match="aggressiveness|sample_rate"):
        WebRtcDetector(aggressiveness, rate)
