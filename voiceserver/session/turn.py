"""One caller turn: what it holds (:class:`Turn`) and how it runs (:class:`TurnRunner`).

A turn starts from an utterance (audio cut by the VAD), typed text, a keypad key or a tool decision. The runner
transcribes the audio (using the transcription started at a pause when it is still valid), decides what the words
mean — an answer to a pending approval or workflow question (the spoken dialog), or a new request — and speaks the
reply through the one envelope (:class:`~voiceserver.session.reply.Responder`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..audio.format import AudioChunk
from ..engines import ProviderError
from ..logs import get_logger, log_context
from .events import ToolDecision, Transcript
from .playback import PlaybackTracker
from .speech_text import pressed_key_text, wants_long_answer

if TYPE_CHECKING:
    from .agent_port import TurnStream
    from .context import SessionContext
    from .dialog import SpokenDialog
    from .reply import Responder

log = get_logger("SESSION")


@dataclass
class Turn:
    """One user turn and its reply."""

    id: str
    audio: bytes = b""
    text: str | None = None  # what the caller said (typed, or once transcribed)
    decision: ToolDecision | None = None  # a client's tool.approve / tool.decline
    digits: str | None = None  # keypad keys pressed on a phone
    last_voiced_at: float | None = None  # session clock of the last voiced frame's arrival
    ended_at: float = 0.0  # when the endpoint was decided
    endpoint_ms: float | None = None  # silence waited before the endpoint
    long_form: bool = False  # the caller asked for a long answer
    task: asyncio.Task | None = None
    stream: TurnStream | None = None
    user_text: str | None = None  # what the reply answers (None for a reply nobody asked for, such as an offer)
    recorder: Literal["answerer", "session"] = "session"  # who keeps this exchange in the conversation
    responding: bool = False
    playback: PlaybackTracker = field(default_factory=PlaybackTracker)
    reply_handle: Any = None  # the Reply speaking this turn (paused and resumed around a possible interruption)
    reply_parts: list[str] = field(default_factory=list)  # the phrases queued for speaking, in order
    metrics: dict[str, float] = field(default_factory=dict)
    error_code: str | None = None
    outcome: str = "ok"  # ok | interrupted | timeout | an error code
    done: bool = False

    def finish(self) -> None:
        """The turn is over (answered, failed or interrupted): nothing pauses its reply any more. Letting go of the
        Reply breaks the Turn <-> Reply reference cycle, so the turn, its utterance audio and its reply are freed
        when the session moves on, not at the next full garbage collection (rare on a served process, whose
        collector is tuned for short pauses: a soak's RSS rose by the audio of every turn in between)."""
        self.done = True
        self.reply_handle = None

    def join(self, later: Turn) -> None:
        """Another utterance that ended before this one was answered: one turn of both."""
        self.audio += later.audio
        self.last_voiced_at, self.ended_at, self.endpoint_ms = later.last_voiced_at, later.ended_at, later.endpoint_ms

    @property
    def reply(self) -> str:
        """Everything the reply says (phrases joined); after an interruption, see ``playback.heard_text()``."""
        return " ".join(self.reply_parts).strip()


class TurnRunner:
    """Runs turns for one session (see the module notes)."""

    def __init__(self, ctx: SessionContext, responder: Responder, dialog: SpokenDialog):
        self.ctx = ctx
        self.responder = responder
        self.dialog = dialog
        self.carry_text = ""  # words of a turn cut short after its transcription, joined to the next one
        self._in_order = asyncio.Lock()  # transcripts of utterances not answered here go out in the order spoken

    async def run(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        """The turn task: the body under the turn time limit; failures are reported, never raised."""
        ctx = self.ctx
        limit = ctx.deps.limits.max_turn_s
        with log_context(session_id=ctx.id, turn_id=turn.id):
            try:
                async with asyncio.timeout(limit):
                    await self._body(turn, speculative)
                ctx.deps.metrics.turns.labels("ok" if turn.error_code is None else "error").inc()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                turn.outcome = "timeout"
                ctx.deps.metrics.turns.labels("timeout").inc()
                await ctx.error("turn_timeout", f"the turn took longer than {limit:g} s", turn.id)
            except ProviderError as exc:
                turn.outcome = exc.code
                ctx.deps.metrics.turns.labels("error").inc()
                log.warning(f"turn failed: {exc}")
                await ctx.error(exc.code, exc.message, turn.id)
            except Exception as exc:
                turn.outcome = "internal_error"
                ctx.deps.metrics.turns.labels("error").inc()
                log.exception("turn failed")
                await ctx.error("internal_error", f"{type(exc).__name__}: {exc}", turn.id)
            finally:
                turn.finish()

    async def _body(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        if turn.decision is not None:
            await self.dialog.decide(turn, turn.decision)
            return
        if turn.digits is not None:
            if await self.dialog.keypad(turn, turn.digits):
                return
            text = pressed_key_text(turn.digits)
        elif turn.text is None:
            transcribed = await self._transcribe(turn, speculative)
            if transcribed is None:
                return
            text = transcribed
        else:
            text = turn.text
        if self.carry_text:
            text, self.carry_text = f"{self.carry_text} {text}", ""
        turn.text = text
        turn.long_form = wants_long_answer(text)
        if await self.dialog.answer(turn, text):
            return
        await self.respond(turn, text)

    async def respond(self, turn: Turn, text: str) -> None:
        """A new request: the answerer's stream, spoken."""
        request = self.ctx.request(text, long_form=turn.long_form, turn_id=turn.id)
        await self.responder.play(turn, lambda: self.ctx.port.open_turn(request), self.dialog, user_text=text)

    async def transcribe_only(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        """An utterance the session does not answer itself (``auto_respond`` off): send its Transcript only, after
        those of the utterances before it (the lock is taken in the order the tasks start)."""
        async with self._in_order:
            await self._transcript_only(turn, speculative)

    async def _transcript_only(self, turn: Turn, speculative: asyncio.Task | None) -> None:
        ctx = self.ctx
        with log_context(session_id=ctx.id, turn_id=turn.id):
            result: Any = None
            if speculative is not None:
                with contextlib.suppress(Exception):
                    result = await speculative
            if result is None:
                try:
                    result = await ctx.listener().transcribe(AudioChunk(turn.audio, 16000))
                except ProviderError as exc:
                    await ctx.error(exc.code, exc.message, turn.id)
                    return
                except Exception as exc:
                    log.exception("transcription failed")
                    await ctx.error("internal_error", f"{type(exc).__name__}: {exc}", turn.id)
                    return
            await ctx.outbox.put(Transcript(turn.id, result.text))

    async def _transcribe(self, turn: Turn, speculative: asyncio.Task | None) -> str | None:
        """The words of the utterance, or None when nothing was said (noise) or nothing could be heard."""
        ctx = self.ctx
        result: Any = None
        if speculative is not None:
            with contextlib.suppress(Exception):
                result = await speculative
            turn.metrics["stt_speculative"] = 1.0 if result is not None else 0.0
            if result is not None:
                turn.metrics["stt_speculation_ms"] = result.details.get("speculation_ms", 0.0)
        if result is None:
            started = ctx.now()
            try:
                result = await ctx.listener().transcribe(AudioChunk(turn.audio, 16000))
            except ProviderError as exc:
                # Nothing was understood, so nothing can be answered: say so aloud and carry on.
                turn.metrics["stt_ms"] = (ctx.now() - turn.ended_at) * 1000
                await self.responder.apologise(turn, exc.code, exc.message)
                return None
            turn.metrics["stt_compute_ms"] = (ctx.now() - started) * 1000
        turn.metrics["stt_ms"] = (ctx.now() - turn.ended_at) * 1000
        await ctx.outbox.put(Transcript(turn.id, result.text))
        return result.text if result.text.strip() else None
