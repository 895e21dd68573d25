"""What the caller has heard of a reply: phrase spans on the output timeline, pacing, and heard text on barge-in.

Pure bookkeeping (no I/O, time passed in). The session records each phrase and how many milliseconds of its audio
were sent; the client may report ``played_ms``. On an interruption :meth:`PlaybackTracker.heard_text` returns the
text of the phrases the caller heard in full, plus the words of a partly heard phrase in proportion to how much of
it played, so the conversation history keeps exactly what was said aloud.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PhraseSpan:
    text: str
    start_ms: float
    end_ms: float | None = None  # None while its audio is still being sent


class PlaybackTracker:
    """Timeline of one reply's audio."""

    def __init__(self) -> None:
        self.phrases: list[PhraseSpan] = []
        self.sent_ms = 0.0
        self.first_audio_at: float | None = None
        self.reported_played_ms: float | None = None
        self.paused_at: float | None = None  # sending is paused (a possible interruption): playback time stands still

    def begin_phrase(self, text: str) -> None:
        self.phrases.append(PhraseSpan(text, self.sent_ms))

    def add_audio(self, ms: float, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        self.sent_ms += ms

    def end_phrase(self) -> None:
        if self.phrases and self.phrases[-1].end_ms is None:
            self.phrases[-1].end_ms = self.sent_ms

    def report_played(self, played_ms: float) -> None:
        """The client says how much reply audio it actually played (monotonic, capped at what was sent)."""
        played = max(0.0, min(float(played_ms), self.sent_ms))
        if self.reported_played_ms is None or played > self.reported_played_ms:
            self.reported_played_ms = played

    def pause(self, now: float) -> None:
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        """Sending goes on: the paused time does not count as played."""
        if self.paused_at is not None:
            if self.first_audio_at is not None:
                self.first_audio_at += now - self.paused_at
            self.paused_at = None

    def elapsed_ms(self, now: float) -> float:
        """Real-time playback position if the client plays audio as it arrives."""
        if self.first_audio_at is None:
            return 0.0
        now = self.paused_at if self.paused_at is not None else now
        return min(self.sent_ms, (now - self.first_audio_at) * 1000.0)

    def ahead_ms(self, now: float) -> float:
        """How far sending is ahead of real-time playback (used to pace the output)."""
        if self.first_audio_at is None:
            return 0.0
        now = self.paused_at if self.paused_at is not None else now
        return self.sent_ms - (now - self.first_audio_at) * 1000.0

    def _expected_end(self, phrase: PhraseSpan) -> float:
        """Where a phrase still being sent will end: at least what was sent, and as long as its text at the speech
        rate of the phrases sent whole so far (so a partly played phrase is not counted as nearly all heard)."""
        done = [p for p in self.phrases if p.end_ms is not None and p.end_ms > p.start_ms]
        chars = sum(len(p.text) for p in done)
        rate = sum(p.end_ms - p.start_ms for p in done) / chars if chars else DEFAULT_MS_PER_CHAR  # type: ignore
        return max(self.sent_ms, phrase.start_ms + len(phrase.text) * rate)

    def heard_text(self) -> str:
        """Text heard so far: up to the client's played_ms when reported, else the phrases fully sent."""
        if self.reported_played_ms is None:
            done = [p.text for p in self.phrases if p.end_ms is not None and p.end_ms > p.start_ms]
            return _join(done)
        played = self.reported_played_ms
        parts: list[str] = []
        for phrase in self.phrases:
            end = phrase.end_ms if phrase.end_ms is not None else self._expected_end(phrase)
            if end <= phrase.start_ms:
                break  # no audio of it was sent yet
            if end <= played:
                parts.append(phrase.text)
                continue
            if phrase.start_ms < played and end > phrase.start_ms:
                words = phrase.text.split()
                share = (played - phrase.start_ms) / (end - phrase.start_ms)
                keep = int(len(words) * share)
                if keep:
                    parts.append(" ".join(words[:keep]))
            break
        return _join(parts)


DEFAULT_MS_PER_CHAR = 65.0  # speech rate before any phrase was sent whole (Piper's voice at speed 1: 55-75)


def _join(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())
