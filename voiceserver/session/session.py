"""One caller's conversation: audio in -> VAD -> STT -> agent -> phrases -> TTS -> audio out, with barge-in.

The session knows no wire format. A gateway decodes its wire messages into inbound events and calls
:meth:`Session.handle` with each one (the one entry), and drains :attr:`Session.outbox` (the one exit). Per session
there is at most one turn task (transcription, the answer, speaking), plus a transcription started at a short
pause that is kept when the caller stays silent. Barge-in is one rule: speech confirmed (or a cancel, or new input)
while a turn runs cancels the turn task and its children, drops queued reply text and audio (flushable events),
tells the client, and keeps in the conversation only the text the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine
from typing import Any

from ..audio.format import AudioChunk
from ..identity import Caller
from ..ids import new_id
from ..logs import get_logger, log_context
from ..vad.segmenter import SpeechEnd, SpeechOnset, SpeechOnsetLost, SpeechPause, SpeechResume, SpeechStart
from .context import SessionContext, SessionDeps
from .dialog import SpokenDialog
from .events import (
    CancelResponse,
    ClearInput,
    EndSession,
    InputAudio,
    InputCommit,
    InputDtmf,
    InputText,
    InvalidInput,
    Ping,
    Pong,
    ResponseCancelled,
    ResponseDone,
    ResponsePaused,
    ResponsePlayed,
    ResponseResumed,
    SessionClosed,
    SessionConfig,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    StartSession,
    ToolDecision,
    Transcript,
    UpdateSession,
)
from .listening import Listener, Speculation
from .reply import Responder
from .speech_text import KEYPAD, is_backchannel, utterance_complete
from .turn import Turn, TurnRunner
from .turn_log import log_turn

log = get_logger("SESSION")


def with_defaults(defaults: SessionConfig, config: SessionConfig | None) -> SessionConfig:
    """A StartSession's config completed by what the transport knew (ids and keypad); the defaults alone if none."""
    if config is None:
        return dataclasses.replace(defaults)
    for name in ("resource", "thread", "agent"):
        if getattr(config, name) is None:
            setattr(config, name, getattr(defaults, name))
    config.keypad = config.keypad or defaults.keypad
    return config


class Session:
    """A voice conversation with one caller: ``await handle(event)`` for each inbound event, drain ``outbox``."""

    def __init__(self, deps: SessionDeps, *, gateway: str = "native", session_id: str | None = None,
                 defaults: SessionConfig | None = None, caller: Caller | None = None):
        """``defaults``: what the transport knows before any message (see with_defaults); ``caller``: the hub's."""
        self.deps = deps
        self.defaults = defaults or SessionConfig()
        self.gateway = gateway
        self.ctx = SessionContext(deps, session_id=session_id or new_id("sess"), gateway=gateway, caller=caller)
        self.responder = Responder(self.ctx)
        self.dialog = SpokenDialog(self.ctx, self.responder)
        self.runner = TurnRunner(self.ctx, self.responder, self.dialog)
        self.started = False
        self.closed = False
        self._listener: Listener | None = None
        self._speculation = Speculation(deps.clock, on_result=self._on_guess)
        self._turn: Turn | None = None
        self._speech_turn_id: str | None = None
        self._carry_audio = b""  # audio of a turn cut short before it answered, joined to the next utterance
        self._waiting: tuple[Turn, asyncio.Task | None] | None = None  # an utterance waiting for a reply to end
        self._tasks: set[asyncio.Task] = set()
        self._held: Turn | None = None  # a reply paused by a sound that may be an interruption
        self._barge_at_ms: int | None = None  # stream time at which the speech over a paused reply interrupts it
        self._waved_through = False  # the pause's transcription was a backchannel: the reply already goes on

    @property
    def id(self) -> str:
        return self.ctx.id

    @property
    def config(self) -> SessionConfig:
        return self.ctx.config

    @property
    def outbox(self):
        return self.ctx.outbox

    @property
    def agent_name(self) -> str:
        return self.ctx.agent_name

    # --- the one entry --------------------------------------------------------------------------------------------

    async def handle(self, event: Any) -> None:
        """Process one inbound event (see :data:`voiceserver.session.events.InboundEvent`)."""
        if self.closed:
            return
        if type(event) is InputAudio:  # the hot path first: 50 frames a second per caller
            if not self.started:
                await self._start(with_defaults(self.defaults, None))
            self._feed(event.audio, event.arrived_at)
            return
        if isinstance(event, StartSession):
            await self._start(with_defaults(self.defaults, event.config))
            return
        if isinstance(event, EndSession):
            await self.close("client_end")
            return
        if isinstance(event, InvalidInput):
            await self.ctx.error(event.code, event.message)
            return
        if not self.started:
            await self._start(with_defaults(self.defaults, None))
        if isinstance(event, Ping):
            self.ctx.emit(Pong(event.id))  # after everything before it: handle() is awaited in order
        elif isinstance(event, InputText):
            await self._on_text(event.text)
        elif isinstance(event, InputCommit):
            self._process_segments(self._listener.commit() if self._listener else [], self.ctx.now())
        elif isinstance(event, InputDtmf):
            await self._on_dtmf(event.digit)
        elif isinstance(event, CancelResponse):
            await self._interrupt("client_cancel")
        elif isinstance(event, ResponsePlayed):
            turn = self._turn
            if turn is not None and turn.id == event.turn_id:
                turn.playback.report_played(event.played_ms)
        elif isinstance(event, ToolDecision):
            await self._on_tool_decision(event)
        elif isinstance(event, UpdateSession | ClearInput):
            assert self._listener is not None  # the session has started
            if isinstance(event, UpdateSession):
                self.ctx.config.update_live(event.config)
                self._listener.retune(self.ctx.config)  # new VAD values from the next utterance
            else:
                self._speculation.cancel()
                self._carry_audio, self._speech_turn_id = b"", None
                self._listener.reset()
        else:
            await self.ctx.error("invalid_message", f"unsupported event {type(event).__name__}")

    def handle_nowait(self, event: Any) -> bool:
        """Process an event at once when that needs no waiting (caller audio once the session has started): True
        when done; False when the caller must ``await handle(event)`` instead. Used by a transport that receives
        audio in a callback (no task per frame)."""
        return type(event) is InputAudio and self.feed_audio_nowait(event.audio, event.arrived_at)

    def feed_audio_nowait(self, audio: bytes, arrived_at: float | None) -> bool:
        """``handle_nowait(InputAudio(audio, arrived_at))`` without building the event (a per-frame callback)."""
        if ready := self.started and not self.closed:
            self._feed(audio, arrived_at)
        return ready

    # --- lifecycle ------------------------------------------------------------------------------------------------

    async def _start(self, config: SessionConfig) -> None:
        ctx = self.ctx
        if self.started:
            await ctx.error("session_already_started", "session.start was already received for this session")
            return
        if await ctx.refused_start(config):  # ids the caller's token does not allow: the session ends
            return await self.close("forbidden_resource")
        ctx.config = config
        await ctx.choose_agent(config)
        if not config.thread:
            config.thread = new_id("thread")
        self._listener = Listener(config, self.deps.limits, self.deps.turn, clock=self.deps.clock,
                                  metrics=self.deps.metrics)
        self.started = True
        self.deps.metrics.sessions.labels(self.gateway).inc()
        with log_context(session_id=ctx.id):
            log.info("session started", fields={"gateway": self.gateway, "agent": ctx.agent_name,
                                                "resource": config.resource, "thread": config.thread})
        await ctx.outbox.put(SessionStarted(ctx.id, config.resource, config.thread, config.input_format,
                                            config.output_format, ctx.agent_name))
        if config.resource and ctx.port.has_workflows:
            self._spawn(self._offer_unfinished())

    async def start(self, config: SessionConfig | None = None) -> None:
        """Start with ``config`` (the same as handling a StartSession event)."""
        await self.handle(StartSession(config or SessionConfig()))

    async def close(self, reason: str = "ended") -> None:
        """End the session: stop the turn (keeping what was heard), cancel tasks, release the outbox."""
        if self.closed:
            return
        self.closed = True
        with log_context(session_id=self.id):
            await self._interrupt("session_end", notify=False)
            self._speculation.cancel()
            self._speculation.on_result = None  # a cycle back to self: the ended call is freed now (Turn.finish)
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

    # --- audio ----------------------------------------------------------------------------------------------------

    def _feed(self, audio: bytes, arrived_at: float | None) -> None:
        """The hot path: convert, run VAD, react to its events. Never awaits."""
        assert self._listener is not None
        events, now = self._listener.feed(audio, arrived_at)
        if events:
            self._process_segments(events, now)
        if (self._barge_at_ms is not None and not self._waved_through
                and self._listener.last_voiced_ms >= self._barge_at_ms):
            self._barge_at_ms = None  # the caller kept talking over the paused reply: a real interruption
            self._barge_in()

    def _process_segments(self, events: list, now: float) -> None:
        for ev in events:
            if isinstance(ev, SpeechOnset):
                self._pause_reply()
            elif isinstance(ev, SpeechOnsetLost):
                self._resume_reply()
            elif isinstance(ev, SpeechStart):
                self._speech_turn_id = new_id("turn")
                turn = self._turn
                if turn is not None and not turn.done and self._speech_interrupts(turn):
                    if self.deps.turn.false_interruption and turn.responding and turn.reply_handle is not None:
                        # Maybe only a "mm-hmm": the reply waits, paused, until the speech is long enough to be an
                        # interruption or turns out to hold no words.
                        self._pause_reply()
                        self._barge_at_ms = int(ev.confirmed_ms) + self.deps.turn.interrupt_after_ms
                    else:
                        self._barge_in()
                self.ctx.emit(SpeechStarted(self._speech_turn_id, int(ev.start_ms), int(ev.confirmed_ms)))
            elif isinstance(ev, SpeechPause):
                # A guess at a short pause: kept when the caller stays silent until the endpoint.
                self._speculation.start(self.ctx.listener(), self._carry_audio + ev.audio)
            elif isinstance(ev, SpeechResume):
                self._speculation.cancel()  # they kept talking: that guess heard only part of it
                if self._waved_through:  # more than a "mm-hmm" after all: pause the reply again
                    self._waved_through = False
                    self._pause_reply()
            elif isinstance(ev, SpeechEnd):
                turn_id = self._speech_turn_id or new_id("turn")
                self._speech_turn_id = None
                self.ctx.emit(SpeechStopped(turn_id, int(ev.end_ms)))
                assert self._listener is not None
                voiced_at = self._listener.arrival_of(ev.last_voiced_ms)
                turn = Turn(id=turn_id, audio=ev.audio, last_voiced_at=voiced_at, ended_at=now,
                            endpoint_ms=(now - voiced_at) * 1000 if voiced_at is not None else None)
                if self._waved_through:  # a backchannel, and the reply went on at its pause: nothing to answer
                    self._barge_at_ms, self._waved_through = None, False
                    self._speculation.take()
                    self.deps.metrics.backchannels.inc()
                elif self._barge_at_ms is not None:
                    # Short speech over a paused reply: its words decide whether the reply goes on.
                    self._barge_at_ms = None
                    self._spawn(self._check_backchannel(turn, self._speculation.take()))
                elif not self.config.auto_respond:
                    self._spawn(self.runner.transcribe_only(turn, self._speculation.take()))
                elif self._turn is not None and not self._turn.done and not self.config.barge_in:
                    self._wait_for_reply(turn, self._speculation.take())
                else:
                    self._begin_turn(turn, self._speculation.take())

    def _pause_reply(self) -> None:
        turn = self._turn
        if (not self.deps.turn.false_interruption or not self.config.barge_in or turn is None or turn.done
                or not turn.responding or turn.reply_handle is None or turn.reply_handle.paused):
            return
        turn.reply_handle.pause()
        self._held = turn
        self.ctx.emit(ResponsePaused(turn.id))

    def _resume_reply(self, *, keep_pending: bool = False) -> None:
        turn, self._held = self._held, None
        if turn is None or turn.done or turn.reply_handle is None or (self._barge_at_ms is not None
                                                                        and not keep_pending):
            return
        turn.reply_handle.resume()
        self.ctx.emit(ResponseResumed(turn.id))

    def _barge_in(self) -> None:
        self._held = None
        if self._turn is not None and not self._turn.done:
            self._spawn(self._interrupt("barge_in", turn=self._turn))

    async def _check_backchannel(self, utterance: Turn, speculative: asyncio.Task | None) -> None:
        """A short utterance over a paused reply: a "mm-hmm" (or nothing) lets the reply go on; words interrupt it
        and become the next turn, so nothing the caller said is lost."""
        result = None
        if speculative is not None:
            with contextlib.suppress(Exception):
                result = await speculative
        if result is None:
            try:
                result = await self.ctx.listener().transcribe(AudioChunk(utterance.audio, 16000))
            except Exception:  # noqa: BLE001 - cannot tell: treat it as words rather than lose them
                result = None
        if result is not None and is_backchannel(result.text):
            self.deps.metrics.backchannels.inc()
            log.info("backchannel: the reply goes on", fields={"heard": result.text})
            self._resume_reply()
            return
        if self._turn is not None and not self._turn.done:
            await self._interrupt("barge_in", turn=self._turn)
        if result is not None:
            utterance.text = result.text
            self.ctx.emit(Transcript(utterance.id, result.text))
        self._begin_turn(utterance, None)

    def _on_guess(self, text: str) -> None:
        """A transcription made at a pause is back while the caller is still silent: end the turn sooner when it
        reads as a complete sentence, wait longer when it trails off (an adaptive endpoint)."""
        cfg = self.deps.turn
        if self._barge_at_ms is not None and self._held is not None and is_backchannel(text):
            # Over a paused reply, and only a "mm-hmm" so far: let the reply go on now rather than at the endpoint.
            log.info("backchannel: the reply goes on", fields={"heard": text})
            self._waved_through = True
            self._resume_reply(keep_pending=True)
            return
        if not cfg.adaptive_endpoint or self._listener is None:
            return
        complete = utterance_complete(text)
        if complete is None:
            return
        silence_ms = cfg.complete_endpoint_ms if complete else cfg.incomplete_endpoint_ms
        self._process_segments(self._listener.set_endpoint(silence_ms), self.ctx.now())

    def _speech_interrupts(self, turn: Turn) -> bool:
        """A reply is interrupted when ``barge_in``; before it, speech joins the next utterance if we answer it."""
        return self.config.barge_in if turn.responding else self.config.auto_respond

    def _wait_for_reply(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        """barge_in off: an utterance that ended during a reply waits for it (a second one joins the first)."""
        if self._waiting is not None:
            first, guess = self._waiting
            if guess is not None:
                guess.cancel()
            first.join(turn)
            turn, speculative = first, None
        self._waiting = (turn, speculative)

    def _begin_waiting(self) -> None:
        if self._waiting is not None and not self.closed:
            (turn, speculative), self._waiting = self._waiting, None
            self._begin_turn(turn, speculative)

    # --- other input ----------------------------------------------------------------------------------------------

    async def _on_text(self, text: str) -> None:
        limit = self.deps.limits.max_text_chars
        if len(text) > limit:
            await self.ctx.error("text_too_long", f"input.text is {len(text)} characters; the limit is {limit}")
            return
        if not text.strip():
            await self.ctx.error("empty_text", "input.text must not be empty")
            return
        await self._interrupt("new_input")
        self._begin_turn(Turn(id=new_id("turn"), text=text, ended_at=self.ctx.now()), None)

    async def _on_dtmf(self, digit: str) -> None:
        if digit not in KEYPAD:
            await self.ctx.error("invalid_dtmf", f"unknown keypad key {digit!r}; keys are 0-9, *, # and A-D")
            return
        await self._interrupt("new_input")
        self._begin_turn(Turn(id=new_id("turn"), digits=digit, ended_at=self.ctx.now()), None)

    async def _on_tool_decision(self, decision: ToolDecision) -> None:
        if not self.dialog.waits_for(decision.tool_call_id):
            await self.ctx.error("no_pending_approval",
                                 f"no tool call {decision.tool_call_id!r} is waiting for approval")
            return
        await self._interrupt("new_input")  # the question may still be being spoken
        self._begin_turn(Turn(id=new_id("turn"), decision=decision, ended_at=self.ctx.now()), None)

    async def _offer_unfinished(self) -> None:
        offer = await self.dialog.offer_unfinished()
        if offer is None or self.closed or (self._turn is not None and not self._turn.done):
            return
        turn = Turn(id=new_id("turn"), text="", ended_at=self.ctx.now())
        self._begin_turn(turn, None, body=self.responder.say(turn, offer, user_text=None))

    # --- turns ----------------------------------------------------------------------------------------------------

    def _begin_turn(self, turn: Turn, speculative: asyncio.Task | None,
                    body: Coroutine[Any, Any, None] | None = None) -> None:
        if self._carry_audio and turn.text is None and turn.digits is None and turn.decision is None:
            turn.audio = self._carry_audio + turn.audio  # a speculation already included it (SpeechPause)
        self._carry_audio = b""
        self._turn = turn
        work = body if body is not None else self.runner.run(turn, speculative)
        turn.task = asyncio.create_task(self._guard(turn, work), name=f"turn-{turn.id}")
        self._tasks.add(turn.task)
        turn.task.add_done_callback(self._tasks.discard)
        # A turn cancelled before its task's first step (new input right behind it) never awaits ``work``: close
        # it, or Python warns "coroutine was never awaited" (a finished or cancelled coroutine ignores close()).
        turn.task.add_done_callback(lambda _task: work.close())

    async def _guard(self, turn: Turn, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        finally:
            turn.finish()
            if self._turn is turn and turn.outcome != "interrupted":
                self._begin_waiting()  # an utterance that ended during this reply (barge_in off)

    async def _interrupt(self, reason: str, notify: bool = True, turn: Turn | None = None) -> None:
        """Stop the current turn now; keep only what the caller heard."""
        turn = turn or self._turn
        if turn is None or turn.done or turn.task is None:
            return
        turn.finish()
        turn.outcome = "interrupted"
        if self._held is turn:
            self._held = None
        turn.task.cancel()
        with contextlib.suppress(BaseException):
            await turn.task
        dropped = self.outbox.flush()
        heard = turn.playback.heard_text()
        if not turn.responding:
            # They kept talking before we answered: keep their first words for the next turn.
            if turn.text is None and turn.digits is None and turn.decision is None:
                self._carry_audio = turn.audio
            elif turn.text:
                self.runner.carry_text = turn.text
        if turn.stream is not None:
            try:
                await turn.stream.cancel(heard_text=heard or None)
            except Exception:
                log.exception("could not record the interrupted turn")
        if turn.responding and turn.recorder == "session":
            await self.ctx.record(turn.user_text, heard)
        if reason == "barge_in":
            self.deps.metrics.barge_ins.inc()
        with log_context(session_id=self.id, turn_id=turn.id):
            log.info("reply interrupted", fields={"reason": reason, "dropped_events": dropped, "heard": heard})
        if turn.responding:
            log_turn(self.ctx, turn)
            if notify:
                await self.outbox.put(ResponseCancelled(turn.id, heard, reason))
                await self.outbox.put(ResponseDone(turn.id, heard, interrupted=True))
        if reason == "client_cancel":
            self._begin_waiting()  # the caller's waiting words are answered now (new input starts its own turn)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
