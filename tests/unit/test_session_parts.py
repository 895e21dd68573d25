"""Pure parts of the session: the flushable outbox and the playback tracker (heard text on barge-in)."""

import asyncio

import pytest

from voiceserver.audio.format import AudioChunk
from voiceserver.session.events import ErrorEvent, ResponseAudio, ResponseTextDelta, Transcript
from voiceserver.session.outbox import Outbox, OutboxClosed
from voiceserver.session.playback import PlaybackTracker


async def test_outbox_flush_keeps_control_events_in_order():
    box = Outbox(10)
    await box.put(Transcript("t", "hi"))
    await box.put(ResponseTextDelta("t", "Hello"))
    await box.put(ResponseAudio("t", AudioChunk(b"\0\0")))
    await box.put(ErrorEvent("x", "y"))
    assert box.flush() == 2
    assert isinstance(await box.get(), Transcript)
    assert isinstance(await box.get(), ErrorEvent)
    assert len(box) == 0


async def test_outbox_is_bounded_and_applies_backpressure():
    box = Outbox(2)
    await box.put(ResponseTextDelta("t", "a"))
    await box.put(ResponseTextDelta("t", "b"))
    blocked = asyncio.create_task(box.put(ResponseTextDelta("t", "c")))
    await asyncio.sleep(0.01)
    assert not blocked.done() and len(box) == 2
    assert not box.put_nowait(ResponseTextDelta("t", "d")), "non-forced puts are refused when full"
    await box.get()
    await asyncio.wait_for(blocked, 1)
    assert len(box) == 2


async def test_outbox_close_drains_then_raises():
    box = Outbox(5)
    await box.put(Transcript("t", "x"))
    box.close()
    assert not box.put_nowait(Transcript("t", "late"), force=True)
    assert isinstance(await box.get(), Transcript)
    with pytest.raises(OutboxClosed):
        await box.get()


def test_heard_text_without_client_report_is_phrases_fully_sent():
    p = PlaybackTracker()
    p.begin_phrase("Hello there,")
    p.add_audio(800, now=0.0)
    p.end_phrase()
    p.begin_phrase("the weather today is sunny.")
    p.add_audio(300, now=0.9)
    assert p.heard_text() == "Hello there,"


def test_heard_text_uses_played_ms_and_cuts_partial_phrase_by_words():
    p = PlaybackTracker()
    p.begin_phrase("one two three four")
    p.add_audio(1000, now=0.0)
    p.end_phrase()
    p.begin_phrase("five six seven eight")
    p.add_audio(1000, now=1.0)
    p.end_phrase()
    p.report_played(1500)
    assert p.heard_text() == "one two three four five six"
    p.report_played(400)  # reports never go backwards
    assert p.heard_text() == "one two three four five six"
    p.report_played(99999)  # capped at what was sent
    assert p.reported_played_ms == 2000 and p.heard_text() == "one two three four five six seven eight"


def test_nothing_heard_before_audio():
    p = PlaybackTracker()
    p.begin_phrase("Hello")
    assert p.heard_text() == ""
    p.report_played(0)
    assert p.heard_text() == ""


def test_pacing_clock():
    p = PlaybackTracker()
    assert p.ahead_ms(5.0) == 0.0
    p.add_audio(1000, now=10.0)
    assert p.ahead_ms(10.0) == pytest.approx(1000)
    assert p.ahead_ms(10.5) == pytest.approx(500)
    assert p.elapsed_ms(20.0) == 1000


def test_heard_text_of_a_phrase_still_being_sent_counts_its_whole_length():
    from voiceserver.session.playback import PlaybackTracker

    tracker = PlaybackTracker()
    tracker.begin_phrase("One two three four.")  # 19 characters, sent whole in 1900 ms: 100 ms a character
    tracker.add_audio(1900, 0.0)
    tracker.end_phrase()
    tracker.begin_phrase("Five six seven eight nine ten eleven twelve.")  # 44 characters: about 4400 ms
    tracker.add_audio(1100, 2.0)  # only the first 1100 ms of it were sent so far
    tracker.report_played(1900 + 1100)
    heard = tracker.heard_text().split()
    # A quarter of the second phrase was played: two of its eight words, not all of them.
    assert heard[:4] == ["One", "two", "three", "four."] and heard[4:] == ["Five", "six"]
