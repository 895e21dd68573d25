"""The session's ear: the client's VAD choices mapped to the segmenter, and the arrival clock."""

from __future__ import annotations

import pytest

from voiceserver.metrics import Metrics
from voiceserver.session.events import SessionConfig
from voiceserver.session.listening import Listener, segmenter_config
from voiceserver.settings import LimitsConfig, TurnConfig


def test_segmenter_config_maps_the_clients_vad_choices_and_the_server_limits():
    session = SessionConfig(vad_aggressiveness=3, vad_silence_ms=700, vad_prefix_ms=200, vad_min_speech_ms=100)
    config = segmenter_config(session, LimitsConfig(max_utterance_s=12), TurnConfig(pause_ms=150))
    assert (config.aggressiveness, config.silence_ms, config.prefix_ms, config.min_speech_ms, config.pause_ms,
            config.max_utterance_ms) == (3, 700, 200, 100, 150, 12000)
    assert segmenter_config(session, LimitsConfig(), TurnConfig(speculative_stt=False)).pause_ms == 0
    with pytest.raises(ValueError, match="aggressiveness"):
        segmenter_config(SessionConfig(vad_aggressiveness=9), LimitsConfig(), TurnConfig())


def test_arrival_clock_maps_stream_positions_to_when_they_arrived():
    ticks = iter([10.0, 10.02, 10.04, 10.5])
    listener = Listener(SessionConfig(), LimitsConfig(), TurnConfig(), clock=lambda: next(ticks),
                        metrics=Metrics.null())
    frame = b"\x00\x00" * 320  # 20 ms of silence at 16 kHz
    listener.feed(frame, 1.0)
    listener.feed(frame, 1.02)
    listener.feed(frame, 1.04)
    assert listener.arrival_of(20) == 1.0
    assert listener.arrival_of(30) == 1.02
    assert listener.arrival_of(60) == 1.04
    assert listener.arrival_of(500) == 1.04  # past the end: the last arrival


def test_a_transcript_reads_as_complete_or_trailing():
    from voiceserver.session.speech_text import utterance_complete

    for text in ("What time is it?", "Book a table for two.", "I think so.", "What about this?", "Stop!"):
        assert utterance_complete(text) is True, text
    for text in ("I want to go to the", "Book a table for two and", "So, um,", "Well...", "My name is,"):
        assert utterance_complete(text) is False, text
    for text in ("", "   ", "what is the weather"):
        assert utterance_complete(text) is None, text


def test_the_endpoint_can_be_moved_for_the_current_utterance():
    from voiceserver.session.listening import segmenter_config
    from voiceserver.testing.session_probe import silence, tone
    from voiceserver.vad.segmenter import Segmenter, SpeechEnd

    seg = Segmenter(segmenter_config(SessionConfig(), LimitsConfig(), TurnConfig()))
    seg.feed(tone(600))
    assert not [e for e in seg.feed(silence(400)) if isinstance(e, SpeechEnd)]
    assert seg.trailing_silence_ms >= 250  # webrtcvad's hangover counts the first frames of silence as voice
    (end,) = seg.set_endpoint(seg.trailing_silence_ms)  # already that much silence: the utterance ends now
    assert isinstance(end, SpeechEnd) and end.reason == "silence"
    seg.feed(tone(600))
    assert seg.set_endpoint(1000) == []
    events = seg.feed(silence(800))
    assert not [e for e in events if isinstance(e, SpeechEnd)]  # 800 ms is not enough any more
    assert [e for e in seg.feed(silence(400)) if isinstance(e, SpeechEnd)]
