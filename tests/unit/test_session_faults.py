"""Provider failures inside a Session on the virtual clock: every failed turn is one whole response (started, error,
apology when the voice still works, done, metrics), nothing hangs, and the session carries on."""

from __future__ import annotations

from voiceserver.engines import ProviderError
from voiceserver.session.events import InputText
from voiceserver.settings import TurnConfig
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.testing.fake_voice import ScriptedSTT, ToneTTS
from voiceserver.testing.session_probe import SessionProbe, run_virtual

APOLOGY = TurnConfig().apology
# Thirty short sentences: more phrases than the reply's phrase queue holds (16), so a dead speaker would block it.
MANY_SENTENCES = " ".join(f"Sentence {i} is here." for i in range(30))


class DeafSTT(ScriptedSTT):
    provider = "deaf-stt"

    async def _transcribe(self, audio, language):
        raise ProviderError("stt_unavailable", "transcription service down", retryable=True)


class VoiceThatBreaks(ToneTTS):
    """Speaks its first ``good`` phrases, then fails mid-phrase (after some audio) on the next one."""

    provider = "breaking-tts"

    def __init__(self, good: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.good = good

    async def _synthesize(self, text, voice, speed):
        broken = len(self.phrases) >= self.good
        async for chunk in super()._synthesize(text, voice, speed):
            yield chunk
            if broken:
                raise ProviderError("tts_unavailable", "speech stream cut", retryable=True)


def agent_with(*replies):
    from voiceserver.agent import Agent

    return Agent(name="Assistant", instructions="Be brief.", model=ScriptedChatModel(list(replies)))


def test_a_transcription_failure_is_one_response_with_the_error_and_the_apology():
    async def scenario():
        async with SessionProbe(agent=agent_with("Heard you."), stt=DeafSTT(["x"]),
                                turn=TurnConfig(speculative_stt=False)) as p:
            await p.speak(600)
            await p.silence(700)
            await p.wait_for("metrics")
            kinds = [k for k in p.kinds() if k not in ("speech.started", "speech.stopped", "session.started")]
            assert kinds[:2] == ["response.started", "error"] and kinds[-2:] == ["response.done", "metrics"]
            error, done = p.events("error")[0], p.events("response.done")[0]
            assert error.code == "stt_unavailable" and error.turn_id == done.turn_id
            assert done.text == APOLOGY
            assert list(p.session.ctx.history) == [{"role": "assistant", "content": APOLOGY}]
            await p.send(InputText("typed instead"))
            assert (await p.wait_for("response.done", count=2)).text == "Heard you."

    run_virtual(scenario())


def test_a_voice_that_breaks_mid_reply_ends_the_turn_without_hanging():
    async def scenario():
        agent = agent_with(MANY_SENTENCES, "Back.")
        tts = VoiceThatBreaks(good=1)
        async with SessionProbe(agent=agent, tts=tts, turn=TurnConfig(reply_max_sentences=0)) as p:
            await p.send(InputText("talk a lot"))
            done = await p.wait_for("response.done", timeout=30)
            await p.wait_for("metrics")
            error = p.events("error")[0]
            assert error.code == "tts_unavailable" and error.turn_id == done.turn_id
            assert APOLOGY not in done.text, "the voice failed: nothing more is spoken"
            assert "audio" in p.kinds(audio=True)
            tts.good = 10  # the voice works again
            await p.send(InputText("again"))
            assert (await p.wait_for("response.done", count=2)).text == "Back."
            assert len(p.events("error")) == 1

    run_virtual(scenario())


def test_a_voice_failure_after_the_answer_keeps_the_answer_once():
    async def scenario():
        agent = agent_with(Reply("First sentence here. Second sentence there."))
        async with SessionProbe(agent=agent, tts=VoiceThatBreaks(good=1)) as p:
            await p.send(InputText("hello"))
            done = await p.wait_for("response.done")
            await p.wait_for("metrics")
            assert p.events("error")[0].code == "tts_unavailable"
            # No memory here: the session's own history keeps the exchange, once.
            assert list(p.session.ctx.history) == [{"role": "user", "content": "hello"},
                                                   {"role": "assistant", "content": done.text}]

    run_virtual(scenario())
