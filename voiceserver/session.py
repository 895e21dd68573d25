"""One caller's conversation: audio in -> VAD -> STT -> agent -> phrases -> TTS -> audio out, with barge-in.

The session knows no wire format. A gateway calls :meth:`Session.handle` with inbound events (the audio path is
synchronous and cheap: decode, resample, VAD) and drains :attr:`Session.outbox` to send outbound events. Per session
there is at most one turn task (STT, agent, speaking), plus a speculative transcription that starts at a short pause
and is kept if the caller stays silent. Barge-in is one rule: speech confirmed (or a cancel) while a turn runs cancels
the turn task and its children, drops queued reply text/audio (flushable events), tells the client, and keeps in the
history only the text the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .audio import StreamConverter
from .dialog import PendingApproval, PendingWorkflow
from .engines import ProviderError
from .events import (
    PCM16_16K,
    AudioChunk,
    CancelResponse,
    EndSession,
    ErrorEvent,
    Event,
    InputAudio,
    InputCommit,
    InputText,
    ResponseCancelled,
    ResponseDone,
    ResponsePlayed,
    ResponseStarted,
    SessionClosed,
    SessionConfig,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    ToolDecision,
    Transcript,
    TurnMetrics,
)
from .ids import new_id
from .logs import get_logger, log_context
from .metrics import Metrics
from .outbox import Outbox
from .reply import Reply, Turn
from .session_dialog import SpokenDialog
from .settings import LimitsConfig, TurnConfig
from .stt.base import SpeechToText
from .tts.base import TextToSpeech
from .vad.segmenter import Segmenter, SegmenterConfig, SpeechEnd, SpeechPause, SpeechResume, SpeechStart

log = get_logger("SESSION")
LAG_SAMPLE = 8  # time one audio frame in eight for voiceserver_vad_lag_seconds


@dataclass
class SessionDeps:
    """The shared engines and agents a session uses (built once per server by app.py)."""

    stt: SpeechToText
    tts: TextToSpeech
    agents: dict[str, Any]
    default_agent: str
    metrics: Metrics = field(default_factory=Metrics.null)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)


class Session(SpokenDialog):
    """A voice conversation with one caller. Create, ``await start(config)``, ``handle`` events, ``await close()``."""

    def __init__(self, deps: SessionDeps, *, gateway: str = "native", session_id: str | None = None):
        self.deps = deps
        self.gateway = gateway
        self.id = session_id or new_id("sess")
        self.config = SessionConfig()
        self.outbox = Outbox(deps.limits.outbound_queue_messages)
        self.started = False
        self.closed = False
        self.agent_name = deps.default_agent
        self.history: deque[dict[str, str]] = deque(maxlen=max(deps.turn.history_messages, 0) or None)
        self._turn: Turn | None = None
        self._speech_turn_id: str | None = None
        self._carry_audio = b""  # audio of a turn cut short before it answered, joined to the next utterance
        self._carry_text = ""  # or its transcript, when it was cut short after transcription
        self._spec: asyncio.Task | None = None  # a transcription started at a pause, valid until speech resumes
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=256)  # (stream ms at chunk end, wall clock)
        self._converter: StreamConverter | None = None
        self._segmenter: Segmenter | None = None
        self._tasks: set[asyncio.Task] = set()
        self._frames = 0
        self.pending_approval: PendingApproval | None = None  # a tool call waiting for the caller's yes or no
        self.pending_workflow: PendingWorkflow | None = None  # a workflow waiting for the caller's answer

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, config: SessionConfig | None = None) -> None:
        """Apply the client's configuration (or the defaults) and announce the session."""
        if self.started:
            await self._error("session_already_started", "session.start was already received for this session")
            return
        self.config = config or SessionConfig()
        if self.config.agent:
            if self.config.agent not in self.deps.agents:
                known = ", ".join(sorted(self.deps.agents))
                await self._error("unknown_agent", f"unknown agent {self.config.agent!r}; configured: {known}")
                self.config.agent = None
            else:
                self.agent_name = self.config.agent
        if not self.config.thread:
            self.config.thread = new_id("thread")
        self._converter = StreamConverter(self.config.input_format, PCM16_16K)
        self._segmenter = Segmenter(SegmenterConfig.from_session_config(
            self.config, max_utterance_ms=int(self.deps.limits.max_utterance_s * 1000),
            pause_ms=self.deps.turn.pause_ms if self.deps.turn.speculative_stt else 0,
        ))
        self.started = True
        self.deps.metrics.sessions.labels(self.gateway).inc()
        with log_context(session_id=self.id):
            log.info("session started", fields={"gateway": self.gateway, "agent": self.agent_name,
                                                "resource": self.config.resource, "thread": self.config.thread})
        await self.outbox.put(SessionStarted(self.id, self.config.resource, self.config.thread,
                                             self.config.input_format, self.config.output_format, self.agent_name))
        if self.config.resource and getattr(self.deps.agents.get(self.agent_name), "workflows", None):
            self._spawn(self._offer_unfinished_workflows())

    async def close(self, reason: str = "ended") -> None:
        """End the session: stop the turn (keeping what was heard), cancel tasks, release the outbox."""
        if self.closed:
            return
        self.closed = True
        with log_context(session_id=self.id):
            await self._interrupt("session_end", notify=False)
            self._cancel_speculation()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task
            self.outbox.put_nowait(SessionClosed(reason), force=True)
            self.outbox.close()
            if self.started:
                self.deps.metrics.sessions.labels(self.gateway).dec()
            log.info("session closed", fields={"reason": reason})

    # --- inbound -----------------------------------------------------------------------------------------------

    async def handle(self, event: Any, arrived_at: float | None = None) -> None:
        """Process one inbound event from the gateway."""
        if self.closed:
            return
        if not self.started:
            await self.start()
        if isinstance(event, InputAudio):
            self.feed_audio(event.chunk.audio, arrived_at)
        elif isinstance(event, InputText):
            await self._on_text(event.text)
        elif isinstance(event, InputCommit):
            self._process_segments(self._segmenter.commit(), time.perf_counter())
        elif isinstance(event, CancelResponse):
            await self._interrupt("client_cancel")
        elif isinstance(event, ResponsePlayed):
            turn = self._turn
            if turn is not None and turn.id == event.turn_id:
                turn.playback.report_played(event.played_ms)
        elif isinstance(event, ToolDecision):
            await self._on_tool_decision(event)
        elif isinstance(event, EndSession):
            await self.close("client_end")

    def feed_audio(self, data: bytes, arrived_at: float | None = None) -> None:
        """The hot path: convert to 16 kHz pcm16, run VAD, react to its events. Never awaits."""
        now = arrived_at if arrived_at is not None else time.perf_counter()
        pcm = self._converter.convert(data)
        if not pcm:
            return
        events = self._segmenter.feed(pcm)
        self._arrivals.append((self._segmenter.position_ms, now))
        if events:
            self._process_segments(events, now)
        # One frame in LAG_SAMPLE is timed: a histogram observation costs about as much as the VAD itself, and
        # a 1-in-8 sample of 25,000 frames a second still gives a tight p99.
        self._frames += 1
        if not self._frames % LAG_SAMPLE or events:
            self.deps.metrics.vad_lag_seconds.observe(time.perf_counter() - now)

    def _process_segments(self, events: list, now: float) -> None:
        for ev in events:
            if isinstance(ev, SpeechStart):
                self._speech_turn_id = new_id("turn")
                if self._turn is not None and not self._turn.done:
                    self._spawn(self._interrupt("barge_in", turn=self._turn))
                self._emit(SpeechStarted(self._speech_turn_id, int(ev.start_ms), int(ev.confirmed_ms)))
            elif isinstance(ev, SpeechPause):
                self._maybe_speculate(ev)
            elif isinstance(ev, SpeechResume):
                self._cancel_speculation()  # they kept talking: that guess heard only part of it
            elif isinstance(ev, SpeechEnd):
                turn_id = self._speech_turn_id or new_id("turn")
                self._speech_turn_id = None
                self._emit(SpeechStopped(turn_id, int(ev.end_ms)))
                turn = Turn(id=turn_id, audio=ev.audio, last_voiced_at=self._arrival_of(ev.last_voiced_ms),
                            ended_at=now)
                spec, self._spec = self._spec, None
                self._begin_turn(turn, spec)

    async def _on_text(self, text: str) -> None:
        limit = self.deps.limits.max_text_chars
        if len(text) > limit:
            await self._error("text_too_long", f"input.text is {len(text)} characters; the limit is {limit}")
            return
        if not text.strip():
            await self._error("empty_text", "input.text must not be empty")
            return
        if self._turn is not None and not self._turn.done:
            await self._interrupt("new_input")
        self._begin_turn(Turn(id=new_id("turn"), text=text, ended_at=time.perf_counter()), None)

    async def _on_tool_decision(self, decision: ToolDecision) -> None:
        pending = self.pending_approval
        if pending is None or pending.tool_call_id != decision.tool_call_id:
            await self._error("no_pending_approval", f"no tool call {decision.tool_call_id!r} is waiting for approval")
            return
        if self._turn is not None and not self._turn.done:
            await self._interrupt("new_input")  # the question may still be being spoken
        self._begin_turn(Turn(id=new_id("turn"), decision=decision, ended_at=time.perf_counter()), None)

    # --- turns -------------------------------------------------------------------------------------------------

    def _begin_turn(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        if self._carry_audio and turn.text is None:
            turn.audio = self._carry_audio + turn.audio  # a speculation already included it (_maybe_speculate)
        self._carry_audio = b""
        self._turn = turn
        turn.task = asyncio.create_task(self._run_turn(turn, speculative), name=f"turn-{turn.id}")
        self._tasks.add(turn.task)
        turn.task.add_done_callback(self._tasks.discard)

    async def _run_turn(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        with log_context(session_id=self.id, turn_id=turn.id):
            try:
                async with asyncio.timeout(self.deps.limits.max_turn_s):
                    await self._turn_body(turn, speculative)
                self.deps.metrics.turns.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.deps.metrics.turns.labels("timeout").inc()
                await self._error("turn_timeout", f"the turn took longer than {self.deps.limits.max_turn_s:g} s",
                                  turn.id)
            except ProviderError as exc:
                self.deps.metrics.turns.labels("error").inc()
                log.warning(f"turn failed: {exc}")
                await self._error(exc.code, exc.message, turn.id)
            except Exception as exc:
                self.deps.metrics.turns.labels("error").inc()
                log.exception("turn failed")
                await self._error("internal_error", f"{type(exc).__name__}: {exc}", turn.id)
            finally:
                turn.done = True

    async def _turn_body(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        if turn.decision is not None:
            await self._resolve_approval(turn, approve=turn.decision.approve, user_text=None,
                                         reason=turn.decision.reason)
            return
        text = turn.text
        if text is None:
            result = None
            if speculative is not None:
                with contextlib.suppress(Exception):
                    result = await speculative
                turn.metrics["stt_speculative"] = 1.0 if result is not None else 0.0
                if result is not None:
                    turn.metrics["stt_speculation_ms"] = result.details.get("speculation_ms", 0.0)
            if result is None:
                started = time.perf_counter()
                result = await self.deps.stt.transcribe(AudioChunk(turn.audio, 16000))
                turn.metrics["stt_compute_ms"] = (time.perf_counter() - started) * 1000
            text = result.text
            turn.metrics["stt_ms"] = (time.perf_counter() - turn.ended_at) * 1000
            await self.outbox.put(Transcript(turn.id, text))
            if not text.strip():
                return  # noise or silence: nothing was said
        if self._carry_text:
            text, self._carry_text = f"{self._carry_text} {text}", ""
        turn.text = text
        if self.pending_approval is not None and await self._answer_approval(turn, text):
            return
        if self.pending_workflow is not None and await self._answer_workflow(turn, text):
            return
        await self._respond(turn, text)

    def _reply(self, turn: Turn) -> Reply:
        return Reply(turn, outbox=self.outbox, tts=self.deps.tts, output_format=self.config.output_format,
                     config=self.deps.turn, metrics=self.deps.metrics)

    async def _respond(self, turn: Turn, text: str) -> None:
        agent = self.deps.agents[self.agent_name]
        memory_ids = self._memory_ids(agent)
        agent_input: Any = text if memory_ids else [*self.history, {"role": "user", "content": text}]
        context = {"resource_id": self.config.resource, "workflow_observer": self._observe_workflow}

        if getattr(agent, "voice_mode", "agent") == "network" and memory_ids:
            # The agent routes each request over its agents, workflows and tools (agent networks need memory).
            async def open_network() -> Any:
                return agent.network(text, memory=memory_ids, context={"resource_id": self.config.resource})

            await self._speak_network(turn, agent, open_network, user_text=text)
            return

        async def open_stream() -> Any:
            if memory_ids:
                return agent.stream(agent_input, memory=memory_ids, context=context)
            return agent.stream(agent_input, context=context)

        await self._speak_agent(turn, agent, open_stream, user_text=text)

    async def _speak_agent(self, turn: Turn, agent: Any, open_stream: Any, user_text: str | None) -> None:
        """Run an agent stream (a new turn, or an approved / declined continuation) and speak it."""
        turn.responding = True
        await self.outbox.put(ResponseStarted(turn.id))
        started = time.perf_counter()
        turn.stream = await open_stream()
        reply = self._reply(turn)
        budget = self.deps.limits.max_reply_chars
        handed_over = False  # a workflow took over the conversation: stop the model's own follow-up
        try:
            async for chunk in turn.stream:
                kind = chunk.type
                if kind == "text-delta":
                    delta = chunk.payload.get("text", "")
                    if not delta:
                        continue
                    if "llm_first_token_ms" not in turn.metrics:
                        turn.metrics["llm_first_token_ms"] = (time.perf_counter() - started) * 1000
                    delta = delta[: max(budget, 0)]
                    budget -= len(delta)
                    await reply.delta(delta)
                    if budget <= 0:
                        log.info("reply cut at max_reply_chars")
                        break
                elif kind == "tool-call-approval":
                    await self._ask_approval(turn, reply, agent, chunk)
                elif kind == "tool-result":
                    if await self._workflow_took_over(turn, reply, agent, chunk.payload):
                        handed_over = True
                        break
                elif kind == "error":
                    error = chunk.payload.get("error")
                    raise error if isinstance(error, Exception) else ProviderError("agent_error", str(error))
            if handed_over:
                await turn.stream.cancel(heard_text=turn.reply or None)
            await reply.finish()
        finally:
            await reply.close()
        if not self._memory_ids(agent):
            self._remember(user_text or "", turn.reply)
        await self.outbox.put(ResponseDone(turn.id, turn.reply, interrupted=False))
        await self._emit_metrics(turn)

    async def _speak_only(self, turn: Turn, text: str, user_text: str | None) -> None:
        """A reply the server composes itself (a question asked again, a workflow's progress)."""
        turn.responding = True
        await self.outbox.put(ResponseStarted(turn.id))
        reply = self._reply(turn)
        try:
            await reply.say(text)
            await reply.finish()
        finally:
            await reply.close()
        await self._record_exchange(user_text, turn.reply)
        await self.outbox.put(ResponseDone(turn.id, turn.reply, interrupted=False))
        await self._emit_metrics(turn)

    async def _record_exchange(self, user_text: str | None, reply: str) -> None:
        """Keep a server-composed exchange in the conversation (memory when configured, else the session)."""
        agent = self.deps.agents[self.agent_name]
        ids = self._memory_ids(agent)
        if ids is None:
            self._remember(user_text or "", reply)
            return
        messages = [{"role": role, "content": content, "thread_id": ids["thread"], "resource_id": ids["resource"]}
                    for role, content in (("user", user_text), ("assistant", reply)) if content]
        if messages:
            await agent.memory.save_messages(messages)

    async def _interrupt(self, reason: str, notify: bool = True, turn: Turn | None = None) -> None:
        """Stop the current turn now; keep only what the caller heard."""
        turn = turn or self._turn
        if turn is None or turn.done or turn.task is None:
            return
        turn.done = True
        turn.task.cancel()
        with contextlib.suppress(BaseException):
            await turn.task
        dropped = self.outbox.flush()
        heard = turn.playback.heard_text()
        if not turn.responding:
            # They kept talking before we answered: keep their first words for the next turn.
            if turn.text is None:
                self._carry_audio = turn.audio
            else:
                self._carry_text = turn.text
        if turn.stream is not None and hasattr(turn.stream, "cancel"):
            try:
                await turn.stream.cancel(heard_text=heard or None)
            except Exception:
                log.exception("could not record the interrupted turn")
        if turn.responding and not self._memory_ids(self.deps.agents[self.agent_name]):
            self._remember(turn.text or "", heard)
        if reason == "barge_in":
            self.deps.metrics.barge_ins.inc()
        with log_context(session_id=self.id, turn_id=turn.id):
            log.info("reply interrupted", fields={"reason": reason, "dropped_events": dropped, "heard": heard})
        if notify and turn.responding:
            await self.outbox.put(ResponseCancelled(turn.id, heard, reason))
            await self.outbox.put(ResponseDone(turn.id, heard, interrupted=True))

    # --- speculative transcription -----------------------------------------------------------------------------

    def _maybe_speculate(self, pause: SpeechPause) -> None:
        self._cancel_speculation()
        gate = getattr(self.deps.stt, "gate", None)
        if gate is not None and (gate.busy or gate.waiting):
            return  # never make a real transcription wait behind a guess
        audio = self._carry_audio + pause.audio
        started = time.perf_counter()

        async def guess() -> Any:
            result = await self.deps.stt.transcribe(AudioChunk(audio, 16000))
            result.details["speculation_ms"] = (time.perf_counter() - started) * 1000
            return result

        task = asyncio.create_task(guess(), name="speculative-stt")
        task.add_done_callback(_ignore_result)
        self._spec = task

    def _cancel_speculation(self) -> None:
        if self._spec is not None:
            self._spec.cancel()
        self._spec = None

    # --- helpers -----------------------------------------------------------------------------------------------

    def _memory_ids(self, agent: Any) -> dict[str, str] | None:
        if getattr(agent, "memory", None) is None or not self.config.resource or not self.config.thread:
            return None
        return {"resource": self.config.resource, "thread": self.config.thread}

    def _remember(self, user_text: str, reply: str) -> None:
        if self.history.maxlen == 0:
            return
        if user_text:
            self.history.append({"role": "user", "content": user_text})
        if reply:
            self.history.append({"role": "assistant", "content": reply})

    def _arrival_of(self, stream_ms: float) -> float | None:
        for end_ms, at in self._arrivals:
            if end_ms >= stream_ms:
                return at
        return self._arrivals[-1][1] if self._arrivals else None

    def _emit(self, event: Event) -> None:
        """Queue a control event from the synchronous audio path (control events are never refused)."""
        if not self.outbox.put_nowait(event, force=True):
            log.debug("event dropped: session closed")

    async def _emit_metrics(self, turn: Turn) -> None:
        m = turn.metrics
        extra = {k: round(v, 1) for k, v in m.items()
                 if k not in ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms")}
        await self.outbox.put(TurnMetrics(turn.id, _r(m.get("stt_ms")), _r(m.get("llm_first_token_ms")),
                                          _r(m.get("tts_first_audio_ms")), _r(m.get("voice_to_voice_ms")), extra))
        for stage in ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms"):
            if stage in m:
                self.deps.metrics.stage_seconds.labels(f"turn_{stage[:-3]}").observe(m[stage] / 1000)

    async def _error(self, code: str, message: str, turn_id: str | None = None, fatal: bool = False) -> None:
        self.deps.metrics.errors.labels(code).inc()
        await self.outbox.put(ErrorEvent(code, message, turn_id, fatal))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved: a failed guess is simply not used

