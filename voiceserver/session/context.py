"""What one session's parts share: the server's engines and limits (:class:`SessionDeps`, built once per server)
and one caller's state (:class:`SessionContext`: ids, the chosen agent, the outbox, the short history).

Every part of a session (listening, the turn, the reply, the dialog) takes the context, so none of them needs the
Session object itself and each can be tested alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..identity import Caller
from ..logs import get_logger, log_context
from ..metrics import Metrics
from ..settings import LimitsConfig, TurnConfig
from ..stt.base import SpeechToText
from ..tts.base import TextToSpeech
from .agent_port import AgentPort, SpeakingVoice, TurnRequest
from .events import ErrorEvent, Event, SessionConfig, WorkflowEvent
from .outbox import Outbox

log = get_logger("SESSION")


@dataclass
class SessionDeps:
    """The shared engines and answerers a session uses (built once per server by the composition root).

    ``agents`` maps a name to an :class:`~voiceserver.session.agent_port.AgentPort` (a plain
    :class:`voiceserver.agent.Agent` is wrapped in an AgentAdapter by :meth:`Session.__init__`'s caller, see
    :func:`voiceserver.session.agent_adapter.adapt_agents`). ``clock`` is the session clock (seconds, monotonic):
    tests drive a session on a virtual clock by passing the event loop's ``time``.
    """

    stt: SpeechToText
    tts: TextToSpeech
    agents: dict[str, AgentPort]
    default_agent: str
    metrics: Metrics = field(default_factory=Metrics.null)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    clock: Callable[[], float] = time.perf_counter


class SessionContext:
    """One caller's conversation state, shared by the parts of a session."""

    def __init__(self, deps: SessionDeps, *, session_id: str, gateway: str, caller: Caller | None = None):
        self.deps = deps
        self.id = session_id
        self.gateway = gateway
        self.caller = caller  # who the credential says this is (the hub's); None: a session made without one
        self.config = SessionConfig()
        self.agent_name = deps.default_agent
        self.outbox = Outbox(deps.limits.outbound_queue_messages)
        # The conversation kept by the session itself when the answerer has no memory (bounded).
        self.history: deque[dict[str, str]] = deque(maxlen=max(deps.turn.history_messages, 0) or None)

    # --- who answers, and with which voice ---------------------------------------------------------------------

    @property
    def port(self) -> AgentPort:
        return self.deps.agents[self.agent_name]

    @property
    def remembers(self) -> bool:
        """True when the answerer keeps this conversation in its memory (it needs both ids)."""
        return self.port.remembers(self.config.resource, self.config.thread)

    def listener(self) -> SpeechToText:
        return self.port.listener() or self.deps.stt

    def voice(self) -> SpeakingVoice:
        return self.port.voice() or SpeakingVoice(self.deps.tts)

    def now(self) -> float:
        return self.deps.clock()

    def request(self, text: str, *, long_form: bool = False, turn_id: str | None = None) -> TurnRequest:
        """A TurnRequest for this caller (history only when the answerer does not remember)."""
        cfg = self.deps.turn
        max_tokens = cfg.long_reply_max_tokens if long_form else cfg.reply_max_tokens
        return TurnRequest(text=text, resource=self.config.resource, thread=self.config.thread,
                           history=() if self.remembers else tuple(self.history), long_form=long_form,
                           max_tokens=max_tokens or None, on_workflow_event=self.forward_workflow_event,
                           turn_id=turn_id, session_id=self.id)

    # --- outbound ----------------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue a control event without waiting (control events are never refused while the session is open)."""
        if not self.outbox.put_nowait(event, force=True):
            log.debug("event dropped: session closed")

    async def error(self, code: str, message: str, turn_id: str | None = None, fatal: bool = False) -> None:
        self.deps.metrics.errors.labels(code).inc()
        await self.outbox.put(ErrorEvent(code, message, turn_id, fatal))

    async def refused_start(self, config: SessionConfig) -> bool:
        """True when ``config`` names a resource, thread or agent the caller's token does not allow: the error
        ``forbidden_resource`` is logged and sent, and the session must end."""
        problem = self.caller.conflict(config.resource, config.thread, config.agent) if self.caller else None
        if problem is None:
            return False
        with log_context(session_id=self.id):
            log.warning("session.start refused: forbidden_resource",
                        fields={**self.caller.describe(), "asked": config.resource})
        await self.error("forbidden_resource", problem, fatal=True)
        return True

    async def choose_agent(self, config: SessionConfig) -> None:
        """Answer with the agent ``config`` names; an unknown name is the error ``unknown_agent`` (the session goes
        on with the default agent, and ``config.agent`` is cleared so that what is reported is what answers)."""
        if not config.agent:
            return
        if config.agent not in self.deps.agents:
            known = ", ".join(sorted(self.deps.agents))
            await self.error("unknown_agent", f"unknown agent {config.agent!r}; configured: {known}")
            config.agent = None
        else:
            self.agent_name = config.agent

    def forward_workflow_event(self, run_id: str, event: dict[str, Any], turn_id: str | None = None) -> None:
        self.emit(WorkflowEvent(run_id, event, turn_id))

    # --- the conversation --------------------------------------------------------------------------------------

    async def record(self, user_text: str | None, reply: str, *, error_code: str | None = None) -> None:
        """Keep an exchange the session composed itself: in the answerer's memory when it remembers, else in the
        session's own history. ``error_code`` marks a turn that failed (its apology is what was said)."""
        if not user_text and not reply:
            return
        if self.remembers:
            assert self.config.resource is not None and self.config.thread is not None
            try:
                await self.port.record_exchange(self.config.resource, self.config.thread, user_text, reply,
                                                error_code=error_code)
            except Exception as exc:  # noqa: BLE001 - memory refused or failed the write: the session goes on
                # (e.g. thread_owner_mismatch: a thread of another resource was named; nothing may be written)
                code = getattr(exc, "code", None) or "storage_write_failed"
                log.warning("the exchange could not be recorded", fields={"code": code, "detail": str(exc)[:200]})
                if code != error_code:  # the turn's own error already told the client (thread_owner_mismatch)
                    self.deps.metrics.errors.labels(code).inc()
                    self.emit(ErrorEvent(code, f"the exchange could not be recorded: {exc}"[:300]))
            return
        if self.history.maxlen == 0:
            return
        if user_text:
            self.history.append({"role": "user", "content": user_text})
        if reply:
            self.history.append({"role": "assistant", "content": reply})
