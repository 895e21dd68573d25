"""The pure parts of scripts/bench_conversation.py and of the open-mic caller: checks, statistics, arguments, and
following a turn's events."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from voiceserver.testing.caller import HeardTurn, Playout, ReplyAudio, TurnCollector, small_talk, speech_end_ms

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_conversation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_conversation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_conversation"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_conversation", None)


# --- keyword checks --------------------------------------------------------------------------------------------

def test_mentions_matches_whole_words_in_any_case(bench):
    assert bench.mentions("The capital of France is PARIS.", ("paris",))
    assert bench.mentions("Your name is Ada!", ("ada",))
    assert not bench.mentions("This is a nice day.", ("hi",))  # "hi" inside "this"
    assert not bench.mentions("Adam is here.", ("ada",))
    assert bench.mentions("No, it can't.", ("can't",))
    assert bench.mentions("Nice to meet you.", ("nice to meet",))
    assert not bench.mentions("", ("paris",))


def test_every_script_line_can_pass_and_fail(bench):
    for line in bench.FIRST_CALL + bench.RETURNING_CALL:
        assert line.expect, line.text
        assert bench.mentions(line.expect[0], line.expect)
        assert not bench.mentions("London today is forecasted to be cloudy.", line.expect), line.text


def test_the_script_holds_what_issue_9_asks_for(bench):
    first = [line.text for line in bench.FIRST_CALL]
    later = [line.text for line in bench.RETURNING_CALL]
    assert len(first) >= 8 and len(later) >= 8
    assert "My favourite colour is blue." in first and "What is my favourite colour?" in first
    assert first.index("My favourite colour is blue.") < first.index("What is my favourite colour?")
    assert any("my name is Ada" in t for t in first) and "What is my name?" in first
    assert {"What is my name?", "What is my favourite colour?"} <= set(later)
    assert "What is the capital of France?" in first and "Is the sun a star?" in first
    assert any("story" in t for t in first)
    recalls = [line for line in bench.RETURNING_CALL if line.kind == "recall"]
    assert {line.fact for line in recalls} == {"name", "colour"}
    assert bench.call_script(0, 3) == bench.FIRST_CALL[:3]
    assert bench.call_script(2, 8) == bench.RETURNING_CALL


def test_normalise(bench):
    assert bench.normalise("Yes! It's  a STAR.") == "yes it s a star"


# --- repeat detection ------------------------------------------------------------------------------------------

def test_a_reply_to_another_question_said_again_word_for_word_is_a_repeat(bench):
    earlier = [("What is the weather in London?", "London today is forecasted to be cloudy.")]
    found = bench.find_repeat("London today is forecasted to be cloudy!", "My name is Ada.", earlier)
    assert found == ("exact", 0)


def test_the_same_answer_to_the_same_question_is_not_a_repeat(bench):
    earlier = [("What is my name?", "Your name is Ada."), ("Is the sun a star?", "Yes.")]
    assert bench.find_repeat("Your name is Ada.", "What is my name?", earlier) is None


def test_short_replies_and_different_replies_are_not_repeats(bench):
    earlier = [("Is the sun a star?", "Yes."), ("Capital of France?", "The capital of France is Paris.")]
    assert bench.find_repeat("Yes.", "Is water wet?", earlier) is None
    assert bench.find_repeat("The capital of Italy is Rome.", "Capital of Italy?", earlier) is None
    assert bench.find_repeat("", "Anything?", earlier) is None


def test_a_long_shared_prefix_is_flagged(bench):
    first = "London today is forecasted to be cloudy with a chance of rain later."
    earlier = [("Weather?", "Hello."), ("What is the weather?", first)]
    found = bench.find_repeat("London today is forecasted to be cloudy with a chance of rain and wind.",
                              "My favourite colour is blue.", earlier)
    assert found == ("prefix", 1)
    assert bench.find_repeat("London today is forecasted to be sunny.", "Colour?", earlier) is None


def test_a_parroted_reply_with_a_new_opening_is_flagged_as_overlap(bench):
    first = ("I'm sorry for your loss. I'll be happy to help you with anything else, but I don't have the ability "
             "to remember messages from earlier conversations.")
    second = ("I'm sorry for any confusion. I'll be happy to help you with anything else, but I don't have the "
              "ability to remember messages from earlier conversations.")
    assert bench.find_repeat(second, "What is my name?", [("Hello, it is me again.", first)]) == ("overlap", 0)
    story = ("Once upon a time, in a land far away, there lived a small dragon who loved to sing in the rain. "
             "One day the villagers heard him and brought him warm bread, and he sang for them every evening.")
    robot = ("Once upon a time, in a land far away, there lived a robot who could not sleep. Every night it counted "
             "the stars over the city until a little girl taught it to dream.")
    assert bench.find_repeat(robot, "A robot story?", [("A dragon story?", story)]) is None  # a stock phrase


# --- statistics ------------------------------------------------------------------------------------------------

def test_percentile_matches_numpy(bench):
    values = [1800.0, 3700.0, 1400.0, 4800.0, 7500.0, 5300.0, 10700.0]
    for p in (0, 25, 50, 90, 95, 100):
        assert bench.percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert bench.median([3.0, 1.0, 2.0, 10.0]) == 2.5
    assert bench.percentile([], 50) is None
    assert bench.percentile([7.0], 95) == 7.0


def test_slope_is_least_squares_in_units_per_turn(bench):
    assert bench.slope([0, 1, 2, 3], [1000, 1100, 1200, 1300]) == pytest.approx(100)
    assert bench.slope([0, 1, 2, 3], [1000, 1000, 1000, 1000]) == pytest.approx(0)
    xs, ys = [0.0, 1.0, 2.0, 5.0, 6.0], [1800.0, 3700.0, 1400.0, 4800.0, 7500.0]
    assert bench.slope(xs, ys) == pytest.approx(float(np.polyfit(xs, ys, 1)[0]))
    assert bench.slope([1.0], [5.0]) is None
    assert bench.slope([2.0, 2.0], [1.0, 3.0]) is None


def test_ratio(bench):
    assert bench.ratio(900.0, 1800.0) == 0.5
    assert bench.ratio(None, 1.0) is None and bench.ratio(1.0, 0.0) is None and bench.ratio(1.0, None) is None


# --- judging and summarising -----------------------------------------------------------------------------------

def _heard(question: str, reply: str, v2v_ms: float | None = 1000.0, failure: str | None = None) -> HeardTurn:
    heard = HeardTurn(question=question, transcripts=[question], reply_text=reply, failure=failure,
                      metrics={"stt_ms": 300.0, "prompt_tokens": 120}, audio_ms=1500.0)
    if v2v_ms is not None:
        heard.speech_end_at, heard.first_audio_at = 10.0, 10.0 + v2v_ms / 1000
    return heard


def _conversation(bench, replies: list[list[str]], v2v: list[list[float]]) -> list[dict]:
    records, earlier = [], []
    for call, (texts, times) in enumerate(zip(replies, v2v, strict=True)):
        for turn, (reply, ms) in enumerate(zip(texts, times, strict=True)):
            line = bench.call_script(call, 8)[turn]
            records.append(bench.judge(line, _heard(line.text, reply, ms), earlier, run=0, call=call, turn=turn,
                                       index=len(records)))
    return records


def test_judge_marks_addressed_recalled_and_repeated(bench):
    records = _conversation(bench, [["Nice to meet you, Ada.", "Paris.", "Nice to meet you, Ada.",
                                     "Yes, the sun is a star.", "I do not know your name."]],
                            [[1000.0, 1100.0, 1200.0, 1300.0, 1400.0]])
    assert [r["addressed"] for r in records] == [True, True, False, True, False]
    assert records[4]["recalled"] is False and records[0]["recalled"] is None
    assert records[2]["repeat"] == {"kind": "exact", "of": "Hello, my name is Ada."}
    assert records[1]["voice_to_voice_ms"] == pytest.approx(1100.0)


def test_a_failed_turn_is_recorded_not_judged(bench):
    earlier: list = []
    line = bench.FIRST_CALL[1]
    record = bench.judge(line, _heard(line.text, "", None, "no reply in 60 s"), earlier, run=0, call=0, turn=1,
                         index=1)
    assert record["failure"] == "no reply in 60 s" and record["addressed"] is False
    assert record["voice_to_voice_ms"] is None and earlier == []
    empty = bench.judge(line, _heard(line.text, "  "), earlier, run=0, call=0, turn=1, index=1)
    assert empty["failure"] == "empty reply"


def test_summary_and_targets(bench):
    first = ["Hi Ada.", "Paris.", "Blue is nice.", "Yes.", "Ada.", "A dragon slept.", "Blue.", "Bye."]
    later = ["Hello again.", "Your name is Ada.", "Paris is the capital.", "I am not sure.", "No.",
             "A robot beeped.", "Eight.", "Goodbye."]
    records = _conversation(bench, [first, later, later],
                            [[1000.0] * 8, [1100.0] * 8, [1140.0] * 8])
    summary = bench.summarise(records, 3)
    assert summary["p50_ms"] == pytest.approx(1100.0)
    assert summary["call_medians_ms"] == pytest.approx([1000.0, 1100.0, 1140.0])
    assert summary["last_first_ratio"] == pytest.approx(1.14)
    assert summary["slope_ms_per_turn"] > 0
    assert summary["name_recalled_later_call"] == [2, 2]
    assert summary["colour_recalled_later_call"] == [0, 2]
    assert summary["knowledge_answered"] == [5, 5]
    assert summary["repeats_exact"] == summary["repeats_overlap"] == 0 and summary["failures"] == 0
    assert summary["stages"]["stt_ms"]["p50"] == 300.0 and summary["stages"]["endpoint_ms"]["n"] == 0
    rows = {row["target"]: row for row in bench.target_rows(summary, summary)}
    assert rows["voice-to-voice p50 ms"]["met"] is True and rows["voice-to-voice p50 ms"]["ratio"] == 1.0
    assert rows["last call / first call median"]["met"] is True
    assert rows["colour recalled in a later call"]["measured"] == "0/2"
    assert rows["colour recalled in a later call"]["met"] is False
    assert rows["name recalled in a later call"]["met"] is True
    report = bench.format_report(summary, None, bench.target_rows(summary, None))
    assert "colour recalled in a later call" in report and "NO" in report


def test_slow_late_calls_miss_the_drift_target(bench):
    records = _conversation(bench, [["Hi Ada."] * 2, ["Hello."] * 2], [[1000.0, 1000.0], [5000.0, 6000.0]])
    summary = bench.summarise(records, 2)
    rows = {row["target"]: row for row in bench.target_rows(summary, None)}
    assert rows["last call / first call median"]["met"] is False
    assert rows["voice-to-voice p95 ms"]["met"] is False


def test_format_turn_prints_dashes_for_absent_stages(bench):
    records = _conversation(bench, [["Nice to meet you, Ada."]], [[987.0]])
    text = bench.format_turn(records[0])
    assert "987" in text and " - " in text and "120" in text and "Hello, my name is Ada." in text


# --- seeded memory ---------------------------------------------------------------------------------------------

def test_small_talk_is_varied_reproducible_and_free_of_the_facts(bench):
    talk = small_talk(1000)
    assert len(talk) == 1000 and talk == small_talk(1000) and talk != small_talk(1000, seed=1)
    assert len(set(talk)) > 600
    for user, assistant in talk:
        assert "{" not in user + assistant
        assert not bench.mentions(user + " " + assistant, ("ada", "blue", "my name"))


# --- the baseline ---------------------------------------------------------------------------------------------

def test_the_baseline_env_names_settings_the_server_knows(bench, monkeypatch):
    from voiceserver.settings import load_settings

    for key, value in bench.BASELINE_ENV.items():
        assert key.startswith("VOICESERVER_") and isinstance(value, str)
        monkeypatch.setenv(key, value)
    settings = load_settings()  # raises SettingsError on an unknown name or a bad value
    for key, value in bench.BASELINE_ENV.items():
        field = settings
        for part in key.removeprefix("VOICESERVER_").lower().split("__"):
            field = getattr(field, part)
        assert field == type(field)(value), key


# --- arguments -------------------------------------------------------------------------------------------------

def test_parse_args_defaults(bench):
    args = bench.parse_args([])
    assert (args.runs, args.calls, args.turns, args.seed_turns, args.baseline, args.port, args.transport,
            args.json, args.env) == (1, 3, 8, 0, True, 0, "native", False, [])


def test_parse_args_options(bench):
    args = bench.parse_args(["--runs", "2", "--calls", "1", "--turns", "3", "--seed-turns", "1000",
                             "--no-baseline", "--port", "8099", "--json", "--env", "VOICESERVER_LLM__MAX_TOKENS=60"])
    assert (args.runs, args.calls, args.turns, args.seed_turns, args.baseline, args.port, args.json) == \
        (2, 1, 3, 1000, False, 8099, True)
    assert args.env == [("VOICESERVER_LLM__MAX_TOKENS", "60")]


@pytest.mark.parametrize("argv", [["--turns", "0"], ["--turns", "9"], ["--calls", "x"], ["--runs", "0"],
                                  ["--port", "70000"], ["--transport", "carrier-pigeon"], ["--env", "lower=1"],
                                  ["--env", "NOEQUALS"], ["--seed-turns", "-1"]])
def test_parse_args_refuses_bad_values(bench, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


# --- the caller's pure parts -----------------------------------------------------------------------------------

def test_speech_end_is_after_the_last_voiced_sample():
    silence, voice = np.zeros(4800, dtype="<i2"), np.full(8000, 3000, dtype="<i2")
    pcm = np.concatenate([silence, voice, silence]).tobytes()
    assert speech_end_ms(pcm) == pytest.approx((4800 + 8000) / 16)
    assert speech_end_ms(np.zeros(1600, dtype="<i2").tobytes()) == pytest.approx(100.0)


def test_playout_plays_chunks_back_to_back_or_when_they_arrive():
    playout = Playout()
    playout.add(10.0, 100)
    playout.add(10.02, 100)  # arrived while the first still plays: queued behind it
    assert playout.end_at == pytest.approx(10.2)
    playout.add(11.0, 100)  # arrived after a gap: plays at once
    assert playout.end_at == pytest.approx(11.1) and playout.played_ms == 300


def _events(turn: str, text: str, reply: str, *, interrupted: bool = False) -> list:
    events = [{"type": "speech.started", "turn_id": turn}, {"type": "speech.stopped", "turn_id": turn},
              {"type": "transcript", "turn_id": turn, "text": text}]
    if text:
        events += [{"type": "response.started", "turn_id": turn},
                   ReplyAudio(b"\0" * 3200, 5.0, turn), ReplyAudio(b"\0" * 3200, 5.05, turn),
                   {"type": "response.done", "turn_id": turn, "text": reply, "interrupted": interrupted,
                    "_received_at": 5.1}]
        if not interrupted:
            events.append({"type": "metrics", "turn_id": turn, "stt_ms": 300.0, "prompt_tokens": 90})
    return events


def test_collector_completes_at_metrics_with_first_audio_and_playout():
    heard = HeardTurn("What is my name?")
    collector = TurnCollector(heard)
    results = [collector.feed(e) for e in _events("t1", "What is my name?", "Your name is Ada.")]
    assert results[-1] is True and not any(results[:-1])
    assert heard.reply_text == "Your name is Ada." and heard.turn_id == "t1"
    assert heard.first_audio_at == 5.0 and heard.audio_ms == 200 and heard.playout_end_at == pytest.approx(5.2)
    assert heard.metrics == {"stt_ms": 300.0, "prompt_tokens": 90} and heard.failure is None


def test_collector_follows_a_question_heard_as_two_utterances():
    heard = HeardTurn("What is my name?")
    collector = TurnCollector(heard)
    for e in _events("t1", "What is", "What?", interrupted=True) + _events("t2", "my name?", "Ada."):
        collector.feed(e)
    assert collector.done and heard.turn_id == "t2" and heard.interrupted_replies == 1
    assert heard.transcript == "What is my name?" and heard.reply_text == "Ada."


def test_collector_ignores_earlier_turns_and_fails_on_errors_and_silence():
    heard = HeardTurn("Hi")
    collector = TurnCollector(heard, finished={"old"})
    assert not collector.feed({"type": "metrics", "turn_id": "old"})
    assert not collector.feed(ReplyAudio(b"\0" * 320, 1.0, "old"))
    assert not collector.feed({"type": "error", "code": "invalid_message", "message": "x"})  # not this turn's
    assert collector.feed({"type": "error", "code": "llm_failed", "message": "boom", "turn_id": "t9"})
    assert heard.failure == "error llm_failed: boom"

    quiet = HeardTurn("Hi")
    collector = TurnCollector(quiet)
    assert not collector.feed({"type": "transcript", "turn_id": "t1", "text": ""}, utterance_sent=False)
    assert not collector.idle(utterance_sent=False)
    assert collector.idle(utterance_sent=True) and quiet.failure == "nothing heard (empty transcript)"

    closed = HeardTurn("Hi")
    assert TurnCollector(closed).feed({"type": "session.closed", "reason": "server_shutdown"})
    assert closed.failure == "session closed (server_shutdown)" and closed.voice_to_voice_ms is None
