"""The telephony playout on values: 20 ms frames, a mark after each phrase, pacing within the lead, what the caller
heard from echoed marks and the playback clock, and clears."""

import pytest

from voiceserver.gateway.telephony import OutFrame, OutMark, Playout


def frames(items):
    return [i for i in items if isinstance(i, OutFrame)]


def marks(items):
    return [i for i in items if isinstance(i, OutMark)]


def test_audio_is_cut_into_frames_with_a_mark_after_each_phrase():
    p = Playout(lead_ms=10_000)
    p.push("t1", 0, b"\x01" * 400)  # 2.5 frames
    p.push("t1", 1, b"\x02" * 160)  # a new phrase closes the first: its half frame is padded with silence
    p.end_turn("t1")
    sent = p.take_due(0.0)
    assert [len(f.audio) for f in frames(sent)] == [160, 160, 160, 160]
    assert frames(sent)[2].audio == b"\x01" * 80 + b"\xff" * 80
    kinds = ["mark" if isinstance(i, OutMark) else "frame" for i in sent]
    assert kinds == ["frame", "frame", "frame", "mark", "frame", "mark"]
    assert [m.turn_id for m in marks(sent)] == ["t1", "t1"] and len({m.name for m in marks(sent)}) == 2


def test_sending_stays_within_the_lead_of_playback():
    p = Playout(lead_ms=100)
    p.push("t1", 0, b"\x01" * 160 * 50)  # one second
    first = p.take_due(0.0)
    assert len(frames(first)) == 6, "the first frame plus 100 ms ahead of it"
    assert p.take_due(0.0) == []
    assert abs(p.next_send_in(0.0) - 0.02) < 1e-9
    assert len(frames(p.take_due(0.1))) == 5, "100 ms later: 100 ms more (5 frames)"
    assert p.queued_ms == (50 - 11) * 20


def test_heard_by_clock_and_by_echoed_marks():
    p = Playout(lead_ms=10_000)
    p.push("t1", 0, b"\x01" * 160 * 10)  # 200 ms
    p.push("t1", 1, b"\x01" * 160 * 10)
    p.end_turn("t1")
    sent = p.take_due(0.0)
    assert p.position_ms == 400
    assert p.played_ms("t1", 0.1) == pytest.approx(100), "by the playback clock"
    assert p.playing_turn(0.1) == "t1"
    first_mark = marks(sent)[0]
    # Twilio is late: the first phrase's mark comes back at 0.25 s, not 0.2 s. Playback is re-anchored on it.
    assert p.mark_echoed(first_mark.name, 0.25) == ("t1", 200)
    assert p.played_ms("t1", 0.3) == pytest.approx(250)
    assert p.mark_echoed(first_mark.name, 0.3) is None, "a mark is echoed once"
    assert p.played_ms("t1", 1.0) == 400 and p.playing_turn(1.0) is None and not p.has_unplayed(1.0)


def test_clear_drops_what_was_not_heard():
    p = Playout(lead_ms=300)
    p.push("t1", 0, b"\x01" * 160 * 10)
    p.push("t1", 1, b"\x01" * 160 * 40)
    sent = p.take_due(0.0)
    assert len(frames(sent)) == 16 and len(marks(sent)) == 1
    mark = marks(sent)[0]
    assert p.has_unplayed(0.1)
    assert p.clear(0.1)
    assert p.played_ms("t1", 5.0) == pytest.approx(100), "heard stays where the clear cut it"
    assert p.mark_echoed(mark.name, 0.12) is None and p.is_discarded(mark.name), "its echo after a clear means nothing"
    assert not p.push("t1", 1, b"\x01" * 160), "late audio of a cleared turn is dropped"
    assert p.take_due(0.2) == [] and not p.has_unplayed(0.2)
    assert not p.clear(0.3), "nothing left to clear"
    p.push("t2", 0, b"\x02" * 320)
    p.end_turn("t2")
    next_turn = p.take_due(0.4)
    assert len(frames(next_turn)) == 2 and p.played_ms("t2", 0.42) == pytest.approx(20)


def test_a_gap_between_phrases_is_silence_not_debt():
    p = Playout(lead_ms=40)
    p.push("t1", 0, b"\x01" * 160)
    p.take_due(0.0)
    p.push("t1", 1, b"\x01" * 160 * 5)
    later = p.take_due(1.0)  # playback ran dry at 0.02 s; the next phrase starts at 1.0 s
    assert len(frames(later)) == 3, "the first frame plus the 40 ms lead"
    assert p.played_ms("t1", 1.02) == pytest.approx(40)


def test_a_paused_reply_sends_nothing_until_it_resumes():
    p = Playout(lead_ms=40)
    p.push("t1", 0, b"\x01" * 160 * 10)
    assert len(frames(p.take_due(0.0))) == 3
    p.pause()
    assert p.take_due(0.5) == [] and p.next_send_in(0.5) is None
    assert p.played_ms("t1", 0.5) == pytest.approx(60), "the provider played what it had"
    p.resume()
    assert len(frames(p.take_due(0.5))) == 3 and p.played_ms("t1", 0.52) == pytest.approx(80)
    p.pause()
    p.clear(0.6)
    assert not p.paused, "a clear ends the pause: the next reply plays"
