"""Structured logging: JSON lines with component and ids, pretty form, levels, secrets scrubbed."""

import io
import json
import logging

import pytest

from voiceserver.logs import configure_logging, get_logger, log_context


@pytest.fixture
def capture():
    stream = io.StringIO()
    yield stream
    configure_logging("info", "json", stream=io.StringIO())


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_line_has_fields_and_context(capture):
    configure_logging("info", "json", stream=capture)
    log = get_logger("STT")
    with log_context(session_id="sess_1", turn_id="turn_2"):
        log.info("transcribed", fields={"ms": 12})
    log.info("outside")
    first, second = lines(capture)
    assert first["component"] == "STT" and first["level"] == "info" and first["message"] == "transcribed"
    assert first["session_id"] == "sess_1" and first["turn_id"] == "turn_2" and first["ms"] == 12
    assert "time" in first and first["time"].endswith("Z")
    assert "session_id" not in second


def test_levels_filter_and_silent(capture):
    configure_logging("warn", "json", stream=capture)
    log = get_logger("LLM")
    log.info("hidden")
    log.warning("shown")
    assert [r["message"] for r in lines(capture)] == ["shown"]
    assert lines(capture)[0]["level"] == "warn"
    configure_logging("silent", "json", stream=capture)
    log.error("never")
    assert [r["message"] for r in lines(capture)] == ["shown"]


def test_debug_mode_and_pretty(capture):
    configure_logging("debug", "pretty", stream=capture)
    with log_context(run_id="run_9"):
        get_logger("workflow").debug("step done")
    text = capture.getvalue()
    assert "DEBUG" in text and "[WORKFLOW]" in text and "step done" in text and "run_id=run_9" in text


def test_secrets_never_logged(capture):
    configure_logging("info", "json", stream=capture, secrets=["my-secret-key-value"])
    log = get_logger("LLM")
    log.info("calling with my-secret-key-value")
    log.info("header Authorization: Bearer abcdefghijklmnop1234")
    log.info("key sk-proj-ABCDEFGHIJKLMNOP")
    log.info("url?api_key=zzzzzzzzzz&x=1")
    text = capture.getvalue()
    for secret in ("my-secret-key-value", "abcdefghijklmnop1234", "sk-proj-ABCDEFGHIJKLMNOP", "zzzzzzzzzz"):
        assert secret not in text
    assert text.count("[redacted]") == 4


def test_exception_is_one_json_object(capture):
    configure_logging("info", "json", stream=capture)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("SERVER").exception("failed")
    (record,) = lines(capture)
    assert "ValueError: boom" in record["error"]
    assert logging.getLogger("voiceserver").propagate is False
