"""Drive a :class:`~voiceserver.session.Session` with no server and no socket: events in, the outbox out.

    from voiceserver.testing.session_probe import SessionProbe, run_virtual

    async def scenario():
        async with SessionProbe(agent=my_agent, stt=ScriptedSTT(["hello"])) as probe:
            await probe.speak(600)                 # 600 ms of "speech" in 20 ms frames, paced on the clock
            await probe.silence(700)
            await probe.wait_for("response.done")
            assert probe.kinds()[:3] == ["session.started", "speech.started", "speech.stopped"]

    run_virtual(scenario())                        # on a virtual clock: instant, and always the same order

"Speech" is a 440 Hz tone, which webrtcvad classifies as voiced; silence is zeros. Every outbound event is recorded
with the clock time it was queued, as the native protocol names it (``probe.kinds()``), so a test reads the
session's behaviour as a timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..gateway.native_codec import encode_event
from ..metrics import Metrics
from ..session import Session, SessionDeps
from ..session.agent_adapter import adapt_agents
from ..session.events import Event, InputAudio, ResponseAudio, SessionConfig, StartSession
from ..session.outbox import OutboxClosed
from ..settings import LimitsConfig, TurnConfig
from .fake_llm import ScriptedChatModel
from .fake_voice import ScriptedSTT, ToneTTS
from .virtual_clock import run_virtual

RATE = 16000
FRAME_MS = 20


def tone(ms: int, rate: int = RATE, freq: float = 440.0) -> bytes:
    """``ms`` of a 440 Hz tone (voiced for webrtcvad), pcm16 mono."""
    t = np.arange(int(rate * ms / 1000)) / rate
    return (0.4 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2").tobytes()


def silence(ms: int, rate: int = RATE) -> bytes:
    return b"\x00\x00" * int(rate * ms / 1000)


@dataclass(slots=True)
class Seen:
    """One outbound event and the session-clock time it was taken from the outbox."""

    at: float
    kind: str
    event: Event


class SessionProbe:
    """A Session with scripted engines (given or default) and a recorder draining its outbox."""

    def __init__(self, *, agent: Any = None, agents: dict[str, Any] | None = None, stt: Any = None,
                 tts: Any = None, turn: TurnConfig | None = None, limits: LimitsConfig | None = None,
                 config: SessionConfig | None = None, metrics: Metrics | None = None, gateway: str = "probe"):
        from ..agent import Agent

        if agents is None:
            agent = agent or Agent(name="Assistant", instructions="Be brief.",
                                   model=ScriptedChatModel(["Hello! How can I help you today?"]))
            agents = {agent.name: agent}
        self.agents = agents
        self.stt = stt or ScriptedSTT(["hello there"])
        self.tts = tts or ToneTTS()
        self.turn_config = turn or TurnConfig()
        self.limits = limits or LimitsConfig()
        self.start_config = config
        self.metrics = metrics or Metrics()
        self.gateway = gateway
        self.seen: list[Seen] = []
        self.session: Session | None = None
        self._drain: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> SessionProbe:
        loop = asyncio.get_running_loop()
        deps = SessionDeps(stt=self.stt, tts=self.tts, agents=adapt_agents(self.agents),
                           default_agent=next(iter(self.agents)), metrics=self.metrics, limits=self.limits,
                           turn=self.turn_config, clock=loop.time)
        self.session = Session(deps, gateway=self.gateway)
        self._drain = asyncio.create_task(self._record())
        await self.session.handle(StartSession(self.start_config or SessionConfig()))
        await self.wait_for("session.started")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None
        await self.session.close("test_end")
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # --- input ------------------------------------------------------------------------------------------------

    async def send(self, event: Any) -> None:
        assert self.session is not None
        await self.session.handle(event)

    async def audio(self, pcm: bytes) -> None:
        """Stream pcm16 in 20 ms frames, paced on the clock as a microphone would."""
        step = RATE * FRAME_MS // 1000 * 2
        for i in range(0, len(pcm), step):
            await self.send(InputAudio(pcm[i:i + step], self.now))
            await asyncio.sleep(FRAME_MS / 1000)

    async def speak(self, ms: int) -> None:
        await self.audio(tone(ms))

    async def silence(self, ms: int) -> None:
        await self.audio(silence(ms))

    # --- output -----------------------------------------------------------------------------------------------

    def kinds(self, *, audio: bool = False) -> list[str]:
        """The kinds of the events so far, in order (reply audio frames left out unless ``audio``)."""
        return [s.kind for s in self.seen if audio or s.kind != "audio"]

    def events(self, kind: str) -> list[Event]:
        return [s.event for s in self.seen if s.kind == kind]

    def first(self, kind: str) -> Seen:
        return next(s for s in self.seen if s.kind == kind)

    def last(self, kind: str) -> Seen:
        return [s for s in self.seen if s.kind == kind][-1]

    async def wait_for(self, kind: str, *, count: int = 1, timeout: float = 120.0) -> Event:
        """Wait (on the clock) until ``count`` events of ``kind`` were seen; return the last one."""
        async with asyncio.timeout(timeout):
            while len(self.events(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.events(kind)[count - 1]

    async def _record(self) -> None:
        assert self.session is not None
        outbox = self.session.outbox
        while True:
            try:
                event = await outbox.get()
            except OutboxClosed:
                return
            if isinstance(event, ResponseAudio):
                kind = "audio"
            else:
                body = encode_event(event)
                kind = json.loads(body)["type"] if isinstance(body, str) else type(event).__name__
            self.seen.append(Seen(self.now, kind, event))
            self._changed.set()


__all__ = ["SessionProbe", "run_virtual", "silence", "tone"]
