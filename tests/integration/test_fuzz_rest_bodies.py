"""Every REST body, fuzzed with Hypothesis against a real server (uvicorn on 127.0.0.1 port 0, in a thread, with
the scripted fuzz target: real LanceDB memory, a suspending workflow).

Whatever the body, the answer is a success or a 4xx/503 with a JSON error that has a code and a message: never a
500, never a hang, never a body that is not JSON where JSON was promised.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from fuzz_strategies import json_values, one_field_changed, scalars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voiceserver.server.composition import create_app
from voiceserver.testing import fuzz
from voiceserver.testing.fuzz_target import WORKFLOW_ID, build_target

pytestmark = pytest.mark.slow
REST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The target served by uvicorn in its own thread and event loop (the Hypothesis tests are synchronous)."""
    server = build_target(tmp_path_factory.mktemp("fuzz-rest"))
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=0, lifespan="on", log_config=None,
                            access_log=False)
    uv = uvicorn.Server(config)
    uv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), daemon=True)
    thread.start()
    for _ in range(600):
        if uv.started:
            break
        threading.Event().wait(0.05)
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def check(response: httpx.Response, allowed: set[int]) -> None:
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error.get("code"), str) and error["code"], error
        assert isinstance(error.get("message"), str) and 0 < len(error["message"]) <= 1000, error


def bodies(valid: dict) -> st.SearchStrategy[bytes]:
    """A valid body with one field changed, any JSON value, or bytes that are not JSON at all."""
    as_json = (one_field_changed(valid) | json_values | scalars).map(lambda v: json.dumps(v).encode())
    return as_json | st.binary(max_size=300) | st.just(b"")


@REST
@given(body=bodies(fuzz.WORKING_MEMORY_BODY))
def test_working_memory_put(http, body):
    check(http.put("/v1/memory/working", params={"resource": "fuzz-caller"}, content=body), {200, 400, 413})


@REST
@given(body=bodies(fuzz.WORKFLOW_START_BODY))
def test_workflow_start(http, body):
    check(http.post(f"/v1/workflows/{WORKFLOW_ID}/runs", content=body), {200, 400, 409, 413, 422})


@pytest.fixture(scope="module")
def suspended_runs(http):
    runs = []
    for i in range(3):
        response = http.post(f"/v1/workflows/{WORKFLOW_ID}/runs", json={"input_data": {"name": f"n{i}"}})
        assert response.json()["status"] == "suspended"
        runs.append(response.json()["run_id"])
    return runs


@REST
@given(body=bodies(fuzz.WORKFLOW_RESUME_BODY), which=st.integers(0, 2))
def test_workflow_resume(http, suspended_runs, body, which):
    response = http.post(f"/v1/workflows/{WORKFLOW_ID}/runs/{suspended_runs[which]}/resume", content=body)
    check(response, {200, 400, 409, 413, 422})


@REST
@given(body=bodies(fuzz.SPEECH_BODY))
def test_speech(http, body):
    check(http.post("/v1/audio/speech", content=body), {200, 400, 404, 413})


form_values = st.text(max_size=40) | st.sampled_from(["json", "text", "srt", "vtt", "verbose_json", "whisper-1", ""])


@REST
@given(fields=st.dictionaries(st.sampled_from(["model", "language", "prompt", "response_format", "temperature",
                                               "x"]), form_values, max_size=5),
       audio=st.binary(max_size=2000), send_file=st.booleans())
def test_transcription_form(http, fields, audio, send_file):
    files = {"file": ("q.wav", audio, "audio/wav")} if send_file else None
    check(http.post("/v1/audio/transcriptions", data=fields, files=files), {200, 400, 413})


@REST
@given(body=bodies({k: v for k, v in fuzz.OFFER_BODY.items() if k != "sdp"} | {"sdp": "v=0"}))
def test_webrtc_offer(http, body):
    """Offers that cannot be answered (the valid one, with its fake fingerprint, is the live fuzz's business)."""
    check(http.post("/v1/webrtc/offer", content=body), {400, 413})


@REST
@given(form=st.dictionaries(st.sampled_from([*fuzz.TWILIO_WEBHOOK_FORM, "x"]), st.text(max_size=40), max_size=6),
       agent=st.none() | st.text(max_size=30))
def test_twilio_webhook(http, form, agent):
    params = {"agent": agent} if agent is not None else {}
    response = http.post("/v1/twilio/voice", data=form, params=params)
    assert response.status_code in (200, 400), response.text[:300]
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/xml") and "<Connect>" in response.text
    else:
        assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("state", [[], "x", 5, [{"a": 1}]])
def test_found_by_fuzzing_initial_state_that_is_not_an_object(http, state):
    """A start body whose initial_state was not an object answered 409 invalid_workflow, as if the server's
    workflow were broken: it is the caller's field, a 422."""
    response = http.post(f"/v1/workflows/{WORKFLOW_ID}/runs", json={"input_data": {"name": "n"},
                                                                     "initial_state": state})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["fields"][0]["field"] == "initial_state"
