"""Bugs the fuzzing found outside the codecs (a session, memory), kept as regressions."""

from __future__ import annotations

import gc
import warnings

from voiceserver.session.events import InputText
from voiceserver.testing.session_probe import SessionProbe, run_virtual


def test_a_turn_cancelled_before_it_started_leaves_no_coroutine_unawaited():
    """Typed input right behind typed input cancelled the first turn's task before its first step: the turn's
    coroutine was never awaited (a RuntimeWarning in the server log for every such pair)."""

    async def scenario():
        async with SessionProbe() as p:
            await p.send(InputText("first"))
            await p.send(InputText("second"))  # interrupts "first" before its task ran
            done = await p.wait_for("response.done")
            assert not done.interrupted and p.kinds().count("response.started") == 1  # only "second" answered

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_virtual(scenario())
        gc.collect()
    unawaited = [w for w in caught if "never awaited" in str(w.message)]
    assert not unawaited, [str(w.message) for w in unawaited]


def test_a_schema_working_memory_update_json_refuses_to_read_is_a_working_memory_error():
    """json.loads raises a plain ValueError (not JSONDecodeError) for a number over 4300 digits: the REST PUT of
    such an update answered 500 instead of 400 invalid_working_memory."""
    import pytest
    from pydantic import BaseModel

    from voiceserver.memory import MemoryOptions, WorkingMemoryError
    from voiceserver.memory.working import apply_update

    class Profile(BaseModel):
        age: int | None = None

    options = MemoryOptions.parse({"working_memory": {"enabled": True, "schema": Profile}}).working_memory
    with pytest.raises(WorkingMemoryError):
        apply_update(options, None, '{"age": ' + "9" * 5000 + "}")
