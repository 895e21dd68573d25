"""An ended call is freed by reference counting alone: the session, its last turn and that turn's utterance audio
do not wait for a full garbage collection.

A served process collects its oldest generation rarely (run.py tunes the collector for short pauses), so anything
an ended call leaves in a reference cycle stays in memory until then: in a soak, RSS rose by the audio of every
turn in between. The collector is off while the call runs here, so only reference counting can free it.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from voiceserver.client import VoiceClient
from voiceserver.server.composition import create_app
from voiceserver.testing.fuzz_target import build_target, target_settings
from voiceserver.testing.servers import serve_app
from voiceserver.testing.speech import speak


@pytest.fixture
def collector_off():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def sessions_closed(server) -> None:
    """The server side closes a session once its socket is gone (a bounded wait)."""
    for _ in range(100):
        if not server.hub.sessions:
            return
        await asyncio.sleep(0.02)


async def test_an_ended_spoken_call_is_freed_without_the_collector(tmp_path, models_dir: Path, collector_off):
    server = build_target(tmp_path, settings=target_settings(), ms_per_char=1)
    question = speak(models_dir, "What is the weather like in Paris?")
    async with serve_app(create_app(server)) as running:
        async with VoiceClient.connect(running.ws_url + "/v1/voice?resource=alice") as client:
            result = await client.ask_audio(question + bytes(32000), realtime=False)
            assert result.transcript and result.reply_text, "the spoken question was heard and answered"
            (session,) = server.hub.sessions.values()
            session_ref, turn_ref = weakref.ref(session), weakref.ref(session._turn)
            assert len(session._turn.audio) > 16000  # the turn holds its utterance's audio
            del session
        await sessions_closed(server)
        await asyncio.sleep(0.1)
        assert turn_ref() is None, "the ended call's last turn (and its audio) is still in memory"
        assert session_ref() is None, "the ended session is still in memory"


async def test_every_agent_run_of_an_ended_call_is_freed_without_the_collector(tmp_path, models_dir: Path,
                                                                                 monkeypatch, collector_off):
    """Each turn's AgentRun holds its prompt, its chunks and its tools: it must not sit in a reference cycle with
    its stream or its tool runner (a soak's Python heap swung by 130 objects a turn between full collections)."""
    from voiceserver.agent.run import AgentRun

    runs: list[weakref.ref] = []
    original_init = AgentRun.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        runs.append(weakref.ref(self))

    monkeypatch.setattr(AgentRun, "__init__", recording_init)
    server = build_target(tmp_path, settings=target_settings(), ms_per_char=1)
    question = speak(models_dir, "What is the weather like in Paris?")
    async with serve_app(create_app(server)) as running:
        async with VoiceClient.connect(running.ws_url + "/v1/voice?resource=alice") as client:
            for _ in range(2):
                result = await client.ask_audio(question + bytes(32000), realtime=False)
                assert result.reply_text, "the spoken question was answered"
        await sessions_closed(server)
        await asyncio.sleep(0.2)  # the turns' after-turn memory work ends (scripted engines: milliseconds)
        assert len(runs) >= 2
        alive = [r for r in runs if r() is not None]
        assert not alive, f"{len(alive)} of {len(runs)} agent runs of the ended call are still in memory"
