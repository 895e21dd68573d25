"""An open-mic caller: drives a voice agent the way a phone or a browser does, to test and benchmark it.

The microphone never stops: 20 ms frames go out in real time for the whole call, silence between questions, and
each question is spoken into that stream. The caller waits for the reply, lets it play out (a client plays audio
as it arrives), leaves a short gap, and asks the next one::

    async with native_link("ws://127.0.0.1:8080/v1/voice", resource="ada", thread="call-1") as link:
        async with OpenMicCaller(link) as caller:
            heard = await caller.say(Utterance.from_pcm("What is my name?", pcm16_16k))
            print(heard.transcript, heard.reply_text, heard.voice_to_voice_ms)
            await caller.listen(heard)          # silence while the reply plays, then the gap

``voice_to_voice_ms`` runs from the moment the frame holding the end of the voiced audio was sent to the first
reply audio byte received: what the caller perceives, endpointing included.

A returning caller has a past: :func:`seed_history` writes earlier calls of varied small talk into a
:class:`voiceserver.memory.Memory`, so an agent can be tried with a long history in memory.

The transport is a seam (:class:`CallLink`): events use the native protocol's vocabulary (dicts with a ``type``,
see docs/protocol.md) and reply audio arrives as :class:`ReplyAudio`. :func:`native_link` speaks ``/v1/voice``; a
WebRTC, Twilio or Realtime link only has to translate its own wire into the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..audio.format import PCM16_16K, AudioFormat

RATE = 16000
VOICED_THRESHOLD = 500  # |sample| above this counts as voice (Piper's silence is exact zeros)
MAX_UTTERANCE_S = 30.0  # the server's default limits.max_utterance_s: a longer question is refused here
MAX_REPLY_S = 300.0  # once a reply's audio has started, it may take this long to finish (a story is long)


class CallClosed(Exception):
    """The call's connection ended."""


@dataclass(frozen=True, slots=True)
class ReplyAudio:
    """A chunk of reply audio as received."""

    data: bytes
    received_at: float
    turn_id: str | None = None


class CallLink(Protocol):
    """One connected call, whatever the transport."""

    output_format: AudioFormat

    async def send_audio(self, pcm16: bytes) -> None:
        """Send one frame of caller audio (pcm16 mono 16 kHz)."""

    async def next_event(self, timeout: float) -> dict[str, Any] | ReplyAudio:
        """The next server event; raises TimeoutError, or CallClosed when the call ended."""

    async def played(self, turn_id: str, played_ms: int) -> None:
        """Tell the server how much of a reply the caller heard."""

    async def end(self) -> None:
        """Hang up politely."""


def speech_end_ms(pcm16: bytes, *, rate: int = RATE, threshold: int = VOICED_THRESHOLD) -> float:
    """Stream position (ms) just after the last voiced sample of ``pcm16``; its full length when nothing is voiced."""
    import numpy as np

    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.int32)
    voiced = np.nonzero(np.abs(samples) > threshold)[0]
    end = int(voiced[-1]) + 1 if len(voiced) else len(samples)
    return end * 1000 / rate


@dataclass(frozen=True, slots=True)
class Utterance:
    """A question to speak: pcm16 mono 16 kHz audio and where its voice ends."""

    text: str
    audio: bytes
    speech_end_ms: float

    @classmethod
    def from_pcm(cls, text: str, audio: bytes) -> Utterance:
        return cls(text, audio, speech_end_ms(audio))


class Playout:
    """A client that plays reply audio as it arrives: each chunk starts when it arrives or when the previous one
    ends, whichever is later. ``end_at`` is when the last sound stops."""

    def __init__(self) -> None:
        self.end_at: float | None = None
        self.played_ms = 0.0

    def add(self, received_at: float, ms: float) -> None:
        start = received_at if self.end_at is None else max(received_at, self.end_at)
        self.end_at = start + ms / 1000
        self.played_ms += ms


@dataclass
class HeardTurn:
    """What the caller got back for one spoken question."""

    question: str
    speech_end_at: float | None = None
    turn_id: str | None = None
    transcripts: list[str] = field(default_factory=list)
    reply_text: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    first_audio_at: float | None = None
    done_at: float | None = None
    audio_ms: float = 0.0
    playout_end_at: float | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    interrupted_replies: int = 0  # replies cut because the server heard the question as two utterances
    failure: str | None = None

    @property
    def transcript(self) -> str:
        return " ".join(t for t in self.transcripts if t)

    @property
    def voice_to_voice_ms(self) -> float | None:
        """End of the caller's voice (frame sent) to the first reply audio byte received."""
        if self.failure or self.speech_end_at is None or self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.speech_end_at) * 1000


class TurnCollector:
    """Follows the server's events for one spoken question until its reply is complete (pure: feed it events).

    A turn is complete at its ``metrics`` event after a ``response.done`` that was not interrupted. Events of
    turns in ``finished`` (earlier questions) are ignored. A turn error or a closed session ends it as a failure.
    """

    def __init__(self, heard: HeardTurn, output_format: AudioFormat = PCM16_16K, finished: set[str] | None = None):
        self.heard = heard
        self.output_format = output_format
        self.finished = finished if finished is not None else set()
        self._first_audio: dict[str | None, float] = {}
        self._playouts: dict[str | None, Playout] = {}
        self._replied: dict[str, str] = {}  # turn id -> reply text of a response.done that was not interrupted
        self._open: set[str] = set()
        self.seen: set[str] = set()  # every turn id of this question (a split question has two)
        self.done = False

    def feed(self, item: dict[str, Any] | ReplyAudio, *, utterance_sent: bool = True) -> bool:
        """Take one event; True once the reply is complete (or failed)."""
        if self.done:
            return True
        if isinstance(item, ReplyAudio):
            if item.turn_id not in self.finished:
                self._first_audio.setdefault(item.turn_id, item.received_at)
                self._playouts.setdefault(item.turn_id, Playout()).add(
                    item.received_at, self.output_format.ms_for_bytes(len(item.data)))
            return False
        kind = item.get("type")
        turn_id = item.get("turn_id")
        if turn_id is not None and turn_id in self.finished:
            return False
        if turn_id is not None:
            self.seen.add(turn_id)
        heard = self.heard
        if kind == "speech.started" and turn_id:
            self._open.add(turn_id)
        elif kind == "transcript":
            text = (item.get("text") or "").strip()
            heard.transcripts.append(text)
            if not text and turn_id:
                self._open.discard(turn_id)
                if utterance_sent and not self._open and not self._replied:
                    return self._fail("nothing heard (empty transcript)")
        elif kind == "response.done" and turn_id:
            if item.get("interrupted"):
                heard.interrupted_replies += 1
                self._first_audio.pop(turn_id, None)
                self._playouts.pop(turn_id, None)
            else:
                self._replied[turn_id] = item.get("text") or ""
                heard.done_at = item.get("_received_at")
        elif kind == "metrics" and turn_id in self._replied:
            heard.turn_id = turn_id
            heard.reply_text = self._replied[turn_id]
            heard.metrics = {k: v for k, v in item.items() if k not in ("type", "turn_id", "_received_at")}
            heard.first_audio_at = self._first_audio.get(turn_id)
            playout = self._playouts.get(turn_id)
            if playout is not None:
                heard.audio_ms, heard.playout_end_at = playout.played_ms, playout.end_at
            self.done = True
        elif kind == "error":
            heard.errors.append({k: v for k, v in item.items() if k != "_received_at"})
            if turn_id or item.get("fatal"):
                return self._fail(f"error {item.get('code')}: {item.get('message')}")
        elif kind == "session.closed":
            return self._fail(f"session closed ({item.get('reason')})")
        return self.done

    @property
    def replying(self) -> bool:
        """Reply audio of this question has arrived (and was not cut)."""
        return bool(self._first_audio)

    def idle(self, *, utterance_sent: bool) -> bool:
        """A quiet second: once the whole question was sent, every turn it started ended without words, and no
        reply is under way, nothing more will come."""
        if not self.done and utterance_sent and self.heard.transcripts and not self._open and not self._replied:
            return self._fail("nothing heard (empty transcript)")
        return self.done

    def _fail(self, why: str) -> bool:
        self.heard.failure = why
        self.done = True
        return True


class OpenMicCaller:
    """Streams frames of ``frame_ms`` in real time for the whole call (silence unless a question is being said).

    ``reply_timeout_s`` bounds each question: no reply audio that long after the question was said is recorded as
    a failure, never a hang; a reply that has started has ``max_reply_s`` from its first audio to finish.
    ``gap_s`` is the pause after a reply has played out before the next question. ``max_late_ms`` is the worst
    delay of a frame behind its real-time slot (a starved client would distort the figures).
    """

    def __init__(self, link: CallLink, *, frame_ms: int = 20, reply_timeout_s: float = 60.0, gap_s: float = 1.0,
                 max_reply_s: float = MAX_REPLY_S):
        self.link = link
        self.frame_ms = frame_ms
        self.reply_timeout_s = reply_timeout_s
        self.max_reply_s = max_reply_s
        self.gap_s = gap_s
        self.max_late_ms = 0.0
        self.sent_ms = 0.0
        self._frame_bytes = PCM16_16K.bytes_for_ms(frame_ms)
        self._pending = bytearray()
        self._drained = asyncio.Event()  # nothing pending (set by the pacer, and when it stops)
        self._marks: list[tuple[float, asyncio.Future[float]]] = []  # (stream ms, time the frame holding it went)
        self._finished: set[str] = set()
        self._pacer: asyncio.Task | None = None

    async def __aenter__(self) -> OpenMicCaller:
        self._pacer = asyncio.create_task(self._pace(), name="open-mic")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError, CallClosed, OSError):
                await self._pacer

    async def _pace(self) -> None:
        silence = bytes(self._frame_bytes)
        start = time.perf_counter()
        sent = 0
        try:
            while True:
                if not self._pending:
                    self._drained.set()
                delay = start + sent * self.frame_ms / 1000 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.max_late_ms = max(self.max_late_ms, -delay * 1000)
                frame = bytes(self._pending[: self._frame_bytes]) or silence
                del self._pending[: self._frame_bytes]
                if len(frame) < self._frame_bytes:
                    frame += bytes(self._frame_bytes - len(frame))
                await self.link.send_audio(frame)
                sent += 1
                self.sent_ms += self.frame_ms
                now = time.perf_counter()
                while self._marks and self._marks[0][0] <= self.sent_ms:
                    _, future = self._marks.pop(0)
                    if not future.done():
                        future.set_result(now)
        finally:
            self._drained.set()  # nobody waits for a mic that stopped

    @property
    def speaking(self) -> bool:
        return bool(self._pending)

    async def say(self, utterance: Utterance) -> HeardTurn:
        """Speak ``utterance`` into the stream and wait for its complete reply (or a failure)."""
        if self._pacer is None or self._pacer.done():
            raise RuntimeError("use the caller as `async with OpenMicCaller(link) as caller`")
        if len(utterance.audio) > PCM16_16K.bytes_for_ms(MAX_UTTERANCE_S * 1000):
            raise ValueError(f"utterance over {MAX_UTTERANCE_S:g} s")
        await self._drained.wait()  # after a failed turn the previous question may still be going out
        mark: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._marks.append((self.sent_ms + utterance.speech_end_ms, mark))
        self._pending += utterance.audio
        self._drained.clear()
        heard = HeardTurn(question=utterance.text)
        collector = TurnCollector(heard, self.link.output_format, self._finished)
        deadline = time.perf_counter() + PCM16_16K.ms_for_bytes(len(utterance.audio)) / 1000 + self.reply_timeout_s
        replying = False
        try:
            while not collector.done:
                if collector.replying and not replying:  # the reply is under way: give it time to finish
                    replying, deadline = True, max(deadline, time.perf_counter() + self.max_reply_s)
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    heard.failure = (f"reply not finished {self.max_reply_s:g} s after its first audio" if replying
                                     else f"no reply in {self.reply_timeout_s:g} s")
                    break
                if self._pacer.done():
                    raise CallClosed("the microphone stopped")
                try:  # wake at least every second to check the deadline, the pacer and a silent server
                    item = await self.link.next_event(timeout=min(remaining, 1.0))
                except TimeoutError:
                    collector.idle(utterance_sent=not self._pending)
                    continue
                collector.feed(item, utterance_sent=not self._pending)
        except CallClosed as exc:
            heard.failure = f"connection closed ({exc})"
        return self._finish(collector, mark)

    def _finish(self, collector: TurnCollector, mark: asyncio.Future[float]) -> HeardTurn:
        heard = collector.heard
        if mark.done():
            heard.speech_end_at = mark.result()
        else:
            mark.cancel()
            self._marks = [(ms, f) for ms, f in self._marks if f is not mark]
        self._finished.update(collector.seen)  # late events of these turns are not the next question's
        return heard

    async def listen(self, heard: HeardTurn) -> None:
        """Keep the mic open (silence) until the reply has played out, report it as heard, then wait the gap."""
        now = time.perf_counter()
        end = max(t for t in (heard.playout_end_at, heard.done_at, now) if t is not None)
        await asyncio.sleep(min(end - now, self.max_reply_s))
        if heard.turn_id and heard.audio_ms:
            with contextlib.suppress(CallClosed, OSError):
                await self.link.played(heard.turn_id, int(heard.audio_ms))
        await self.pause(self.gap_s)

    async def pause(self, seconds: float) -> None:
        """Silence for ``seconds`` (the mic keeps streaming)."""
        await asyncio.sleep(max(seconds, 0.0))


class NativeLink:
    """:class:`CallLink` over the native protocol (``/v1/voice``), on :class:`voiceserver.client.VoiceClient`."""

    def __init__(self, client: Any):
        self.client = client
        self.output_format: AudioFormat = client.output_format
        self.session: dict[str, Any] = client.session

    async def send_audio(self, pcm16: bytes) -> None:
        import websockets

        try:
            await self.client.ws.send(pcm16)  # not VoiceClient.send_audio: it keeps every send time of the call
        except websockets.ConnectionClosed as exc:
            raise CallClosed(str(exc)) from None

    async def next_event(self, timeout: float) -> dict[str, Any] | ReplyAudio:
        from ..client import AudioFrame, VoiceClientError

        try:
            item = await self.client.next_event(timeout)
        except VoiceClientError as exc:
            raise CallClosed(str(exc)) from None
        if isinstance(item, AudioFrame):
            return ReplyAudio(item.data, item.received_at, item.turn_id)
        return item

    async def played(self, turn_id: str, played_ms: int) -> None:
        import websockets

        try:
            await self.client.played(turn_id, played_ms)
        except websockets.ConnectionClosed as exc:
            raise CallClosed(str(exc)) from None

    async def end(self) -> None:
        import websockets

        with contextlib.suppress(websockets.ConnectionClosed):
            await self.client.end()


@contextlib.asynccontextmanager
async def native_link(url: str, *, resource: str | None = None, thread: str | None = None,
                      agent: str | None = None, api_key: str | None = None) -> AsyncIterator[NativeLink]:
    """Connect to ``url`` (``ws://host:port/v1/voice``), start the session, and yield its link."""
    from ..client import VoiceClient

    async with VoiceClient.connect(url, resource=resource, thread=thread, agent=agent, api_key=api_key) as client:
        yield NativeLink(client)


# --- a caller's past ---------------------------------------------------------------------------------------------

SMALL_TALK = (  # (caller, assistant), slots filled from WORDS; the caller never says a name or a favourite colour
    ("I went {activity} {past} and it was {feeling}.", "That sounds {reaction}. Would you go {activity} again?"),
    ("Do you think it will {weather} {when}?", "It might. Take {gear} just in case."),
    ("My {relative} is visiting {when}.", "How lovely. Are you planning anything with your {relative}?"),
    ("I'm cooking {dish} for dinner tonight.", "{dish} sounds delicious. Enjoy your dinner."),
    ("Can you remind me to {task} {when}?", "Sure, I will remind you to {task} {when}."),
    ("I just finished reading {book}.", "Did you enjoy {book}? What did you like about it?"),
    ("What's a good film to watch {when}?", "You could try {film}. It is a lot of fun."),
    ("The {appliance} in my kitchen is making a strange noise.", "That is annoying. Someone should look at the "
                                                                 "{appliance} before it gets worse."),
    ("I'm thinking about a trip to {city}.", "{city} is a great choice. When would you like to go?"),
    ("How long should I boil {food}?", "About {minutes} minutes should do it."),
    ("I'm feeling a bit {mood} today.", "I'm sorry to hear that. A short walk and some water might help."),
    ("My {pet} knocked over a plant {past}.", "Oh no! A {pet} can be very curious."),
    ("{team} won their match {past}.", "That is great news for {team} fans."),
    ("I started learning {skill}.", "Good for you. How is {skill} going so far?"),
    ("What should I pack for {city}?", "Comfortable shoes, {gear} and a good book for the journey."),
    ("My train was {minutes} minutes late {past}.", "That is frustrating. I hope the rest of the day went well."),
    ("I'm trying to drink more water.", "That is a good habit. A bottle on your desk helps."),
    ("Is {food} good for breakfast?", "It can be, with some fruit on the side."),
    ("My {relative} gave me {book} for my birthday.", "What a thoughtful present from your {relative}."),
    ("I need a new {appliance}.", "Look for an energy-efficient {appliance}; it pays off over the years."),
    ("We had a picnic {past}.", "Picnics are lovely when the weather plays along."),
    ("Should I go {activity} {when}?", "Why not? It is a nice way to spend some time."),
    ("The neighbours were {noise} {past}.", "That must have been annoying. Did you manage to sleep?"),
    ("I'm saving up for a trip to {city}.", "Good plan. {city} will be worth it."),
)
WORDS = {
    "activity": ["hiking", "swimming", "cycling", "to the market", "to the cinema", "running", "fishing", "bowling"],
    "past": ["yesterday", "last night", "on Sunday", "last weekend", "this morning", "on Tuesday"],
    "when": ["tomorrow", "this weekend", "on Friday", "next week", "tonight", "on Monday morning", "after work"],
    "feeling": ["lovely", "exhausting", "great fun", "a bit boring", "really relaxing", "wet but fun"],
    "reaction": ["wonderful", "like a good day", "tiring but fun", "very pleasant"],
    "weather": ["rain", "snow", "be sunny", "be windy", "get colder", "stay dry"],
    "gear": ["an umbrella", "a warm coat", "sunglasses", "a light jacket", "a hat"],
    "relative": ["sister", "brother", "mother", "cousin", "grandfather", "aunt", "uncle"],
    "dish": ["pasta", "a vegetable curry", "roast chicken", "mushroom risotto", "tacos", "lentil soup", "pancakes"],
    "task": ["call the dentist", "buy milk", "water the plants", "pay the electricity bill", "send the report",
             "book a haircut"],
    "book": ["The Hobbit", "Moby Dick", "a mystery novel", "a book about space", "a cookbook", "a travel guide"],
    "film": ["Paddington", "a classic western", "a documentary about the ocean", "an old comedy", "a heist film"],
    "appliance": ["fridge", "dishwasher", "oven", "washing machine", "kettle", "toaster"],
    "city": ["Lisbon", "Tokyo", "Edinburgh", "Vienna", "Toronto", "Marrakesh", "Oslo"],
    "food": ["eggs", "rice", "potatoes", "spaghetti", "broccoli", "porridge"],
    "minutes": ["5", "8", "10", "12", "20"],
    "mood": ["tired", "stressed", "sleepy", "restless", "cheerful"],
    "pet": ["cat", "dog", "parrot", "rabbit", "puppy"],
    "team": ["The Tigers", "The local football club", "The Rovers", "Our cricket team"],
    "skill": ["the piano", "Spanish", "watercolour painting", "chess", "to juggle"],
    "noise": ["very loud", "drilling all day", "playing music", "having a party"],
}
OPENERS = ("", "", "", "Hello again. ", "Good morning. ", "Hi there. ", "Right. ", "Okay. ", "Quick question. ")
AFTERTHOUGHTS = ("", "", "", " What do you think?", " It has been a long week.", " Anyway.", " Just so you know.")


def small_talk(turns: int, seed: int = 9) -> list[tuple[str, str]]:
    """``turns`` (caller, assistant) exchanges of varied small talk, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(turns):
        user, assistant = rng.choice(SMALL_TALK)
        slots = {k: rng.choice(v) for k, v in WORDS.items()}
        user, assistant = user.format(**slots), assistant.format(**slots)
        user = rng.choice(OPENERS) + user[0].upper() + user[1:] + rng.choice(AFTERTHOUGHTS)
        out.append((user, assistant[0].upper() + assistant[1:]))
    return out


async def seed_history(memory: Any, resource: str, turns: int, *, turns_per_thread: int = 20, seed: int = 9,
                       now: datetime | None = None) -> int:
    """Write ``turns`` earlier exchanges of ``resource`` into ``memory`` (a :class:`voiceserver.memory.Memory`):
    threads ``earlier-call-NNNN`` of ``turns_per_thread`` exchanges, one a day up to yesterday, saved (and
    embedded for semantic recall) by the memory itself. Returns the number of threads."""
    exchanges = small_talk(turns, seed)
    threads = (turns + turns_per_thread - 1) // turns_per_thread
    now = now or datetime.now(UTC)
    for t in range(threads):
        thread = f"earlier-call-{t:04d}"
        await memory.create_thread(resource, thread, title=f"Earlier call {t + 1}")
        day = now - timedelta(days=threads - t)
        chunk = exchanges[t * turns_per_thread:(t + 1) * turns_per_thread]
        messages = [{"role": role, "content": text, "thread_id": thread, "resource_id": resource,
                     "created_at": day + timedelta(seconds=20 * i + j)}
                    for i, pair in enumerate(chunk) for j, (role, text) in enumerate(zip(("user", "assistant"), pair,
                                                                                          strict=True))]
        await memory.save_messages(messages)
    return threads
