"""Speaking one reply, and the one envelope every reply goes through.

:class:`Reply` turns text into paced audio frames: model text (``delta``) and whole sentences the server composes
(``say``) are cut into phrases, each phrase is synthesised and sent in fixed frames in the caller's format, at most
``output_lead_ms`` ahead of real time, and its span is recorded in the turn's PlaybackTracker so a barge-in knows
what was heard. The reply holds its own length limit: once it has said ``max_sentences`` sentences (or
``max_chars`` characters) it is *full*, and text after that point is neither sent, spoken nor remembered.

:class:`Responder` is the envelope: ``response.started`` -> speak -> ``response.done`` -> metrics and the turn log
-> record the exchange. Every path uses it (an agent's answer, a network's, a workflow question, a question asked
again, an approval question, an apology). The one rule for memory: what the caller heard is kept, once, by the
answerer when its stream records the exchange itself, by the session otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..audio import StreamConverter
from ..audio.format import AudioChunk, AudioFormat
from ..engines import ProviderError
from ..logs import get_logger
from ..tts.phrases import PhraseChunker
from .agent_port import (
    AnswerRejected,
    AskApproval,
    AskWorkflow,
    SayLine,
    SayText,
    SpeakingVoice,
    TurnFailed,
    TurnStats,
    TurnStream,
    WorkflowProgress,
)
from .context import SessionContext
from .events import (
    ResponseAudio,
    ResponseAudioStarted,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    WorkflowEvent,
)
from .speech_text import ends_sentence, fit_to_chars
from .turn import Turn
from .turn_log import report_turn

log = get_logger("SESSION")
PHRASE_QUEUE = 16


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """How long a reply may get: whole sentences (0: any number) and characters."""

    max_sentences: int = 0
    max_chars: int = 2000


class Reply:
    """The spoken side of one turn (see the module notes). Cancelling the turn task cancels its speaker."""

    def __init__(self, turn: Turn, ctx: SessionContext, *, voice: SpeakingVoice, output_format: AudioFormat,
                 limits: ReplyLimits):
        self.turn = turn
        self.ctx = ctx
        self.voice = voice
        self.output_format = output_format
        self.limits = limits
        self.config = ctx.deps.turn
        self.chunker = PhraseChunker(first_max_chars=self.config.first_phrase_max_chars)
        self.phrases: asyncio.Queue[str | None] = asyncio.Queue(maxsize=PHRASE_QUEUE)
        self.sentences = 0
        self.chars = 0
        self.full = False
        self._announced = False
        self._sending = asyncio.Event()  # cleared while a possible interruption pauses the audio
        self._sending.set()
        turn.reply_handle = self
        self._task = asyncio.create_task(self._speak(), name=f"speak-{turn.id}")

    @property
    def paused(self) -> bool:
        return not self._sending.is_set()

    def pause(self) -> None:
        """Stop sending audio now, keeping the place (the caller may be interrupting)."""
        if self._sending.is_set():
            self._sending.clear()
            self.turn.playback.pause(self.ctx.now())

    def resume(self) -> None:
        """Go on sending from where the reply paused."""
        if not self._sending.is_set():
            self.turn.playback.resume(self.ctx.now())
            self._sending.set()

    async def delta(self, text: str) -> None:
        """Model text as it streams; ignored once the reply is full."""
        if text and not self.full:
            for phrase in self.chunker.feed(text):
                await self._accept(phrase, limited=True)

    async def say(self, text: str) -> None:
        """Whole sentences from the server itself (not the model): spoken after what came before, even when the
        model's part of the reply is full (an approval question must be heard)."""
        await self._flush_model_text()
        for phrase in self.chunker.feed(text.strip()) + self.chunker.flush():
            await self._accept(phrase, limited=False)

    async def finish(self) -> None:
        """Speak what is left and wait until the last frame is queued (raises the voice's error if it failed)."""
        await self._flush_model_text()
        await self._enqueue(None)
        await self._task

    @property
    def voice_failed(self) -> bool:
        """The speaker stopped on an error (its text-to-speech failed): nothing more can be spoken."""
        return self._task.done() and not self._task.cancelled() and self._task.exception() is not None

    async def _enqueue(self, item: str | None) -> None:
        """Hand a phrase to the speaker. If the speaker failed, its error is raised here, in the turn, instead of
        waiting on a queue nobody reads any more."""
        if self.voice_failed:
            raise self._task.exception()  # type: ignore[misc]
        if not self.phrases.full():
            self.phrases.put_nowait(item)
            return
        put = asyncio.ensure_future(self.phrases.put(item))
        try:
            await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            if self.voice_failed:
                raise self._task.exception()  # type: ignore[misc]
            raise RuntimeError("the reply's speaker stopped")

    async def close(self) -> None:
        """Stop speaking now (barge-in, error)."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def _flush_model_text(self) -> None:
        phrases = self.chunker.flush()
        if not self.full:
            for phrase in phrases:
                await self._accept(phrase, limited=True)

    async def _accept(self, phrase: str, *, limited: bool) -> None:
        """Keep a phrase: it is sent as text, spoken, and becomes part of what the caller hears."""
        if limited:
            if self.full:
                return
            room = self.limits.max_chars - self.chars
            if len(phrase) >= room:
                phrase, self.full = fit_to_chars(phrase, room), True
                log.info("reply cut at max_reply_chars", fields={"turn_id": self.turn.id})
                if not phrase:
                    return
        self.chars += len(phrase) + 1
        turn = self.turn
        await self.ctx.outbox.put(ResponseTextDelta(turn.id, (" " if turn.reply_parts else "") + phrase))
        turn.reply_parts.append(phrase)
        await self._enqueue(phrase)
        if limited and ends_sentence(phrase):
            self.sentences += 1
            if self.limits.max_sentences and self.sentences >= self.limits.max_sentences:
                self.full = True

    async def _speak(self) -> None:
        turn, voice = self.turn, self.voice
        frame_bytes = self.output_format.bytes_for_ms(self.config.output_frame_ms)
        index = 0
        while (phrase := await self.phrases.get()) is not None:
            phrase_ready = self.ctx.now()
            turn.playback.begin_phrase(phrase)
            converter: StreamConverter | None = None
            pending = b""
            # aclosing: on barge-in the synthesis generator (and a Piper worker thread behind it) stops now,
            # not whenever the garbage collector gets to it.
            async with contextlib.aclosing(voice.tts.synthesize(phrase, voice.speaker, voice.speed)) as chunks:
                async for chunk in chunks:
                    if "tts_first_audio_ms" not in turn.metrics:
                        turn.metrics["tts_first_audio_ms"] = (self.ctx.now() - phrase_ready) * 1000
                    if converter is None:
                        converter = StreamConverter(chunk.format, self.output_format)
                    pending += converter.convert(chunk.audio)
                    while len(pending) >= frame_bytes:
                        frame, pending = pending[:frame_bytes], pending[frame_bytes:]
                        await self._send(frame, index)
            if converter is not None:
                pending += converter.flush()
            if pending:
                await self._send(pending, index)
            turn.playback.end_phrase()
            index += 1

    async def _send(self, frame: bytes, index: int) -> None:
        turn, fmt = self.turn, self.output_format
        while True:
            if not self._sending.is_set():
                await self._sending.wait()
            ahead = turn.playback.ahead_ms(self.ctx.now()) - self.config.output_lead_ms
            if ahead <= 0:
                break
            await asyncio.sleep(ahead / 1000)  # pace to real time so "sent" stays close to "heard"
            if self._sending.is_set():
                break
        if not self._announced:
            self._announced = True
            await self.ctx.outbox.put(ResponseAudioStarted(turn.id, fmt))
            now = self.ctx.now()
            if turn.last_voiced_at is not None:
                turn.metrics["voice_to_voice_ms"] = (now - turn.last_voiced_at) * 1000
                self.ctx.deps.metrics.voice_to_voice_seconds.observe(now - turn.last_voiced_at)
            turn.metrics["first_audio_ms"] = (now - turn.ended_at) * 1000
        await self.ctx.outbox.put(ResponseAudio(turn.id, AudioChunk(frame, fmt.sample_rate, fmt.encoding), index))
        turn.playback.add_audio(fmt.ms_for_bytes(len(frame)), self.ctx.now())


class QuestionHost(Protocol):
    """What playing a stream needs from the spoken dialog: hold a question the stream asks, and the words for a
    rejected answer."""

    def hold_approval(self, action: AskApproval, turn: Turn) -> str: ...

    def hold_workflow(self, action: AskWorkflow) -> str: ...

    def rejected(self) -> str: ...


Speak = Callable[[Reply], Awaitable[None]]


class Responder:
    """The one reply envelope (see the module notes)."""

    def __init__(self, ctx: SessionContext):
        self.ctx = ctx

    def limits_for(self, turn: Turn) -> ReplyLimits:
        cfg, limits = self.ctx.deps.turn, self.ctx.deps.limits
        sentences = cfg.long_reply_max_sentences if turn.long_form else cfg.reply_max_sentences
        return ReplyLimits(max_sentences=sentences, max_chars=limits.max_reply_chars)

    async def say(self, turn: Turn, text: str, *, user_text: str | None) -> None:
        """A reply the server composes itself (a question asked again, an offer, a confirmation)."""

        async def speak(reply: Reply) -> None:
            await reply.say(text)

        await self.respond(turn, speak, user_text=user_text)

    async def play(self, turn: Turn, open_stream: Callable[[], Awaitable[TurnStream]], questions: QuestionHost, *,
                   user_text: str | None) -> None:
        """Answer with a stream (an agent, a network, an approval's continuation, a resumed workflow)."""

        async def speak(reply: Reply) -> None:
            started = self.ctx.now()
            stream = turn.stream = await open_stream()
            turn.recorder = "answerer" if stream.records else "session"
            if await self._play_actions(turn, reply, stream, questions, started):
                # Cut short (the reply is full, or a workflow took the conversation over): stop the model now, and
                # let memory keep exactly what will be spoken.
                await stream.cancel(heard_text=turn.reply or None)

        await self.respond(turn, speak, user_text=user_text)

    async def respond(self, turn: Turn, speak: Speak, *, user_text: str | None) -> None:
        """response.started -> speak -> response.done -> metrics and log -> record (the envelope)."""
        ctx = self.ctx
        turn.responding = True
        turn.user_text = user_text
        turn.recorder = "session"
        await ctx.outbox.put(ResponseStarted(turn.id))
        reply = Reply(turn, ctx, voice=ctx.voice(), output_format=ctx.config.output_format,
                      limits=self.limits_for(turn))
        try:
            failed = True
            try:
                await speak(reply)
                await reply.finish()  # the voice's own failure surfaces here (or in speak, once its queue fills)
                failed = False
            except ProviderError as exc:
                await self._failed(turn, reply, exc.code, exc.message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("reply failed")
                await self._failed(turn, reply, getattr(exc, "code", None) or "internal_error",
                                   f"{type(exc).__name__}: {exc}")
            if failed and not reply.voice_failed:
                await reply.finish()  # the apology
        finally:
            await reply.close()
        if turn.recorder == "session":
            await ctx.record(user_text, turn.reply, error_code=turn.error_code)
        await ctx.outbox.put(ResponseDone(turn.id, turn.reply, interrupted=False))
        await report_turn(ctx, turn)

    async def apologise(self, turn: Turn, code: str, message: str) -> None:
        """A turn that failed before anything could be answered (nothing was understood): the error and the apology
        go out as one response, recorded with the error code."""

        async def speak(reply: Reply) -> None:
            await self._failed(turn, reply, code, message)

        await self.respond(turn, speak, user_text=None)

    async def _failed(self, turn: Turn, reply: Reply, code: str, message: str) -> None:
        """No provider was left: tell the client, apologise aloud when the voice still works, carry on.

        When the model failed, its run saved nothing: the session records what the caller said and the apology,
        with the code. When the voice failed, the answer itself was complete: the answerer keeps what was sent
        (its text) as usual, and the code is in the turn's log line and metrics."""
        log.warning(f"turn failed: {code}: {message}")
        turn.error_code = code
        voice = code.startswith("tts_") or reply.voice_failed
        if not voice:
            turn.recorder = "session"
        if turn.stream is not None:
            with contextlib.suppress(Exception):
                await turn.stream.cancel(heard_text=(turn.reply or None) if voice else None)
        await self.ctx.error(code, message, turn.id)
        apology = self.ctx.deps.turn.apology
        if apology and not voice:
            await reply.say(apology)

    async def _play_actions(self, turn: Turn, reply: Reply, stream: TurnStream, questions: QuestionHost,
                            started: float) -> bool:
        """Speak a stream's actions; True when the reply was cut short and the stream must be stopped."""
        async for action in stream:
            if isinstance(action, SayText):
                if "llm_first_token_ms" not in turn.metrics:
                    turn.metrics["llm_first_token_ms"] = (self.ctx.now() - started) * 1000
                await reply.delta(action.text)
                if reply.full:
                    return True
            elif isinstance(action, SayLine):
                await reply.say(action.text)
            elif isinstance(action, AskApproval):
                await reply.say(questions.hold_approval(action, turn))
            elif isinstance(action, AskWorkflow):
                await reply.say(questions.hold_workflow(action))
                if action.hand_over:
                    return True
            elif isinstance(action, AnswerRejected):
                await reply.say(questions.rejected())
            elif isinstance(action, WorkflowProgress):
                await self.ctx.outbox.put(WorkflowEvent(action.run_id, action.event, turn.id))
            elif isinstance(action, TurnStats):
                turn.metrics.update(action.values)
            elif isinstance(action, TurnFailed):
                raise ProviderError(action.code, action.message)
        return False
