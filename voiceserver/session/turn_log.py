"""The end of every turn: the ``metrics`` event for the client, the stage histograms, and one log line.

The info line carries the turn's ids and every stage's time (endpoint, STT, prompt and cached tokens, recalled
messages, first token, first audio, voice-to-voice), so a slow turn can be explained from the log alone; at debug
level the transcript and the reply are logged too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..logs import get_logger, log_context
from .events import TurnMetrics

if TYPE_CHECKING:
    from .context import SessionContext
    from .turn import Turn

log = get_logger("SESSION")
MAIN_FIELDS = ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms")
# The per-turn log line, in this order (absent figures are left out).
LOG_FIELDS = ("endpoint_ms", "stt_ms", "stt_speculative", "prompt_tokens", "cached_tokens", "recalled_messages",
              "history_messages", "memory_ms", "prepare_ms",
              "llm_first_token_ms", "tts_first_audio_ms", "first_audio_ms", "voice_to_voice_ms")


def turn_fields(turn: Turn) -> dict[str, object]:
    """The fields of the per-turn log line (pure: a unit test checks them)."""
    m = turn.metrics
    fields: dict[str, object] = {"turn_id": turn.id, "outcome": turn.error_code or turn.outcome}
    for name in LOG_FIELDS:
        if name in m:
            value = m[name]
            fields[name] = int(value) if name.endswith("_tokens") or name.endswith("_messages") else round(value, 1)
    fields["reply_chars"] = len(turn.reply)
    return fields


async def report_turn(ctx: SessionContext, turn: Turn) -> None:
    """Send the metrics event, observe the stage histograms, log the turn."""
    m = turn.metrics
    if turn.endpoint_ms is not None:
        m.setdefault("endpoint_ms", turn.endpoint_ms)
    extra = {k: round(v, 1) for k, v in m.items() if k not in MAIN_FIELDS}
    await ctx.outbox.put(TurnMetrics(turn.id, _r(m.get("stt_ms")), _r(m.get("llm_first_token_ms")),
                                     _r(m.get("tts_first_audio_ms")), _r(m.get("voice_to_voice_ms")), extra))
    for stage in ("stt_ms", "llm_first_token_ms", "tts_first_audio_ms"):
        if stage in m:
            ctx.deps.metrics.stage_seconds.labels(f"turn_{stage[:-3]}").observe(m[stage] / 1000)
    log_turn(ctx, turn)


def log_turn(ctx: SessionContext, turn: Turn) -> None:
    with log_context(session_id=ctx.id, turn_id=turn.id):
        fields = turn_fields(turn)
        fields.update({"resource": ctx.config.resource, "thread": ctx.config.thread, "agent": ctx.agent_name})
        log.info("turn", fields=fields)
        log.debug("turn text", fields={"transcript": turn.user_text, "reply": turn.reply})


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
