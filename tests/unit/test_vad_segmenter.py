"""The segmenter's rules driven through exact timelines by a scripted detector ('#' voiced, '.' not, 20 ms frames).

Each frame's samples hold the frame's index, so the tests can check exactly which frames an event's audio holds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voiceserver.vad import (
    ScriptedDetector,
    Segmenter,
    SegmenterConfig,
    SpeechEnd,
    SpeechPause,
    SpeechResume,
    SpeechStart,
)

FRAME = 640  # 20 ms at 16 kHz


def frames_audio(n: int, first: int = 0) -> bytes:
    """n frames whose samples all equal the frame index."""
    return np.repeat(np.arange(first, first + n, dtype="<i2"), FRAME // 2).tobytes()


def frame_indices(audio: bytes) -> list[int]:
    samples = np.frombuffer(audio, dtype="<i2")
    assert samples.size % (FRAME // 2) == 0
    return samples[:: FRAME // 2].tolist()


def run(script: str, config: SegmenterConfig | None = None, chunk: int = FRAME):
    script = script.replace(" ", "")
    segmenter = Segmenter(config or SegmenterConfig(), ScriptedDetector(script))
    data = frames_audio(len(script))
    events = []
    for i in range(0, len(data), chunk):
        events.extend(segmenter.feed(data[i : i + chunk]))
    return events, segmenter


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def test_silence_gives_no_events():
    events, segmenter = run("." * 200)
    assert events == []
    assert segmenter.position_ms == 4000 and not segmenter.in_speech


def test_one_utterance_timeline():
    # frames 0-19 silence, 20-49 voice (400-1000 ms), then silence.
    events, segmenter = run("." * 20 + "#" * 30 + "." * 40)
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechEnd"]
    start, pause, end = events
    # Confirmed after min_speech_ms (10 voiced frames: frames 20-29); starts prefix_ms (15 frames) before onset.
    assert (start.start_ms, start.confirmed_ms) == (100, 600)
    assert pause.at_ms == 1000 + 200
    assert frame_indices(pause.audio) == list(range(5, 60))
    assert (end.start_ms, end.end_ms, end.last_voiced_ms, end.reason) == (100, 1500, 1000, "silence")
    assert frame_indices(end.audio) == list(range(5, 75))  # pre-roll + voice + 500 ms of trailing silence
    assert segmenter.position_ms == 90 * 20 and not segmenter.in_speech


def test_a_click_is_not_a_turn():
    events, _ = run("." * 20 + "##" + "." * 100 + "#" + "." * 100)
    assert events == []


def test_min_speech_is_exact():
    assert run("." * 5 + "#" * 9 + "." * 60)[0] == []
    events, _ = run("." * 5 + "#" * 10 + "." * 60)
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechEnd"]
    assert events[0].confirmed_ms == 15 * 20


def test_onset_tolerates_short_gaps_but_not_sparse_noise():
    # 10 voiced frames with 5 gaps (100 ms of gaps = onset_tolerance_ms) inside 15 frames: confirmed.
    events, _ = run("." * 20 + "##.#.##.#.##.##" + "." * 40)
    assert kinds(events)[0] == "SpeechStart"
    assert events[0].start_ms == 20 * 20 - 300
    assert events[0].confirmed_ms == 35 * 20
    # One voiced frame in three, for seconds: too sparse to ever be speech (typing, ticking).
    assert run("#.." * 100)[0] == []


def test_prefix_never_reaches_before_stream_start():
    events, _ = run("..." + "#" * 12 + "." * 40)
    assert events[0].start_ms == 0
    assert frame_indices(events[-1].audio)[0] == 0


def test_prefix_never_reaches_into_the_previous_utterance():
    first_end_frame = 5 + 12 + 25  # ends after 25 silent frames
    script = "." * 5 + "#" * 12 + "." * 25 + "...." + "#" * 12 + "." * 40
    events, _ = run(script)
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechEnd"] * 2
    first_end, second_start, second_end = events[2], events[3], events[5]
    assert first_end.end_ms == first_end_frame * 20
    # Onset is 4 frames after the previous end; the 300 ms pre-roll is clipped at that end.
    assert second_start.start_ms == first_end.end_ms
    assert frame_indices(second_end.audio)[0] == first_end_frame


def test_pause_then_resume_then_end():
    script = "." * 20 + "#" * 30 + "." * 12 + "#" * 10 + "." * 40
    events, _ = run(script)
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechResume", "SpeechPause", "SpeechEnd"]
    _, pause1, resume, pause2, end = events
    assert pause1.at_ms == 1200
    # Resume needs resume_ms (3 frames) of voice: voice restarts at frame 62, confirmed at the end of frame 64.
    assert resume.at_ms == 65 * 20
    assert pause2.at_ms == 72 * 20 + 200
    assert (end.last_voiced_ms, end.end_ms) == (72 * 20, 72 * 20 + 500)
    # Every pause's audio is a prefix of the final audio, from the same start.
    assert end.audio.startswith(pause1.audio) and end.audio.startswith(pause2.audio)
    assert len(pause2.audio) == (pause2.at_ms - end.start_ms) * 32


def test_short_gaps_inside_speech_do_not_pause():
    # Once confirmed, gaps of 160 ms (under pause_ms) are part of the utterance: one pause, at the very end.
    events, _ = run("." * 20 + "#" * 12 + ("." * 8 + "#" * 8) * 5 + "." * 40)
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechEnd"]
    assert events[-1].last_voiced_ms == (20 + 12 + 16 * 5) * 20
    assert events[1].at_ms == events[-1].last_voiced_ms + 200


def test_isolated_voiced_frames_after_the_hold_time_do_not_extend_the_utterance():
    # After 200 ms of silence, single voiced frames (breath, noise) are not speech: the endpoint stays put.
    script = "." * 20 + "#" * 30 + "." * 12 + "#" + "...." + "#" + "." * 40
    events, _ = run(script)
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechEnd"]
    assert events[-1].last_voiced_ms == 1000 and events[-1].end_ms == 1500


def test_pause_events_can_be_disabled():
    events, _ = run("." * 20 + "#" * 30 + "." * 12 + "#" * 10 + "." * 40, SegmenterConfig(pause_ms=0))
    assert kinds(events) == ["SpeechStart", "SpeechEnd"]


def test_max_length_force_ends_and_a_new_utterance_follows():
    config = SegmenterConfig(max_utterance_ms=2000)
    events, _ = run("." * 10 + "#" * 250 + "." * 40, config)
    assert kinds(events)[:3] == ["SpeechStart", "SpeechEnd", "SpeechStart"]
    first_end = events[1]
    assert first_end.reason == "max_length"
    assert first_end.end_ms - first_end.start_ms == 2000 and len(first_end.audio) == 2000 * 32
    # Still talking: the next utterance is confirmed min_speech_ms later and starts where the last one ended.
    assert events[2].start_ms == first_end.end_ms
    assert events[2].confirmed_ms == first_end.end_ms + 200
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert all(len(e.audio) <= 2000 * 32 for e in ends)
    assert ends[-1].reason == "silence"


def test_commit_ends_speech_in_progress():
    events, segmenter = run("." * 20 + "#" * 30)
    assert kinds(events) == ["SpeechStart"] and segmenter.in_speech
    (end,) = segmenter.commit()
    assert (end.reason, end.start_ms, end.end_ms, end.last_voiced_ms) == ("commit", 100, 1000, 1000)
    assert frame_indices(end.audio) == list(range(5, 50))
    assert not segmenter.in_speech
    assert segmenter.commit() == []


def test_commit_ends_voiced_audio_not_yet_confirmed():
    events, segmenter = run("." * 20 + "####")
    assert events == []
    start, end = segmenter.commit()
    assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
    assert (start.start_ms, start.confirmed_ms) == (100, 480)
    assert (end.start_ms, end.end_ms, end.last_voiced_ms, end.reason) == (100, 480, 480, "commit")
    assert frame_indices(end.audio) == list(range(5, 24))


def test_commit_with_nothing_voiced_returns_nothing():
    _, segmenter = run("." * 50)
    assert segmenter.commit() == []
    # A click long gone is not "buffered voiced audio".
    _, segmenter = run("." * 5 + "#" + "." * 40)
    assert segmenter.commit() == []


@pytest.mark.parametrize("chunk", [1, 641, 999, 6400, 64 * 1024])
def test_any_chunking_gives_the_same_events(chunk):
    script = "." * 20 + "#" * 30 + "." * 12 + "#" * 10 + "." * 40 + "##.#.##.#.##.##" + "." * 40
    expected, _ = run(script)
    events, segmenter = run(script, chunk=chunk)
    assert events == expected
    assert segmenter.pending_bytes == 0


def test_odd_byte_is_carried_not_dropped():
    detector = ScriptedDetector("#" * 20)
    segmenter = Segmenter(SegmenterConfig(), detector)
    data = frames_audio(3)
    segmenter.feed(data[:641])
    assert segmenter.pending_bytes == 1 and detector.calls == 1
    segmenter.feed(data[641:1281])
    assert segmenter.pending_bytes == 1 and detector.calls == 2
    segmenter.feed(data[1281:])
    assert segmenter.pending_bytes == 0 and detector.calls == 3
    assert detector.last_frame_size == FRAME


@pytest.mark.parametrize(("frame_ms", "rate"), [(10, 16000), (30, 16000), (20, 8000), (30, 48000)])
def test_other_frame_sizes_and_rates(frame_ms, rate):
    config = SegmenterConfig(frame_ms=frame_ms, sample_rate=rate)
    detector = ScriptedDetector("." * 10 + "#" * 100, default=False)
    segmenter = Segmenter(config, detector)
    frame_bytes = rate * frame_ms // 1000 * 2
    assert segmenter.frame_bytes == frame_bytes
    events = segmenter.feed(bytes(frame_bytes * 200))
    assert detector.last_frame_size == frame_bytes
    assert kinds(events) == ["SpeechStart", "SpeechPause", "SpeechEnd"]
    end = events[-1]
    assert end.last_voiced_ms == 110 * frame_ms
    assert len(end.audio) == (end.end_ms - end.start_ms) * rate // 1000 * 2


def test_reset_starts_a_new_stream():
    events, segmenter = run("." * 20 + "#" * 30)
    assert segmenter.in_speech
    segmenter.reset()
    assert segmenter.position_ms == 0 and not segmenter.in_speech and segmenter.pending_bytes == 0
    assert segmenter.commit() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_ms": 25}, "frame_ms"),
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"sample_rate": 22050}, "sample_rate"),
        ({"silence_ms": -1}, "silence_ms"),
        ({"silence_ms": 5}, "silence_ms"),
        ({"max_utterance_ms": 300}, "max_utterance_ms"),
        ({"pause_ms": 1.5}, "pause_ms"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegmenterConfig(**kwargs)


@settings(max_examples=150, deadline=None)
@given(
    script=st.lists(st.sampled_from("#."), min_size=0, max_size=400).map("".join),
    chunks=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=10),
    commit_at_end=st.booleans(),
)
def test_event_invariants_on_random_timelines(script, chunks, commit_at_end):
    config = SegmenterConfig(max_utterance_ms=1500)
    reference, _ = run(script, config)
    segmenter = Segmenter(config, ScriptedDetector(script))
    data = frames_audio(len(script))
    events, pos, i = [], 0, 0
    while pos < len(data):
        size = chunks[i % len(chunks)]
        events.extend(segmenter.feed(data[pos : pos + size]))
        pos, i = pos + size, i + 1
    assert events == reference  # chunking never changes the outcome
    if commit_at_end:
        events.extend(segmenter.commit())
    open_start = None
    previous_end = 0
    for event in events:
        if isinstance(event, SpeechStart):
            assert open_start is None
            assert previous_end <= event.start_ms <= event.confirmed_ms
            open_start = event
        elif isinstance(event, (SpeechPause, SpeechResume)):
            assert open_start is not None
        else:
            assert open_start is not None and event.start_ms == open_start.start_ms
            assert event.start_ms <= event.last_voiced_ms <= event.end_ms <= len(script) * 20
            assert event.end_ms - event.start_ms <= 1500
            # The audio is exactly the frames from start to end.
            assert frame_indices(event.audio) == list(range(event.start_ms // 20, event.end_ms // 20))
            previous_end, open_start = event.end_ms, None
    assert (open_start is not None) == segmenter.in_speech
