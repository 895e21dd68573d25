"""WebRTC (POST /v1/webrtc/offer), through voiceserver.testing.webrtc_caller: the question goes out as Opus on the
microphone track (real time, 20 ms frames, silence after it), the reply comes back on the reply track and the events
on the data channel. The client voice-to-voice runs from the moment the microphone track sent the frame holding
the end of the question to the first reply frame received above -60 dBFS (the track carries silence between
replies, so "the first byte" would mean nothing here)."""

from __future__ import annotations

import time

from voiceserver.testing.webrtc_caller import WebRtcCaller, WebRtcCallerError

from . import TurnTiming

NAME = "webrtc"
FIRST_AUDIO_DBFS = -60.0


async def ask(port: int, audio: bytes, end_ms: float, *, resource: str) -> TurnTiming:
    timing = TurnTiming()
    async with WebRtcCaller.connect(f"http://127.0.0.1:{port}", resource=resource) as caller:
        caller.say(audio)
        deadline = time.perf_counter() + 120
        try:
            while True:
                event = await caller.next_event(max(deadline - time.perf_counter(), 0.001))
                kind = event.get("type")
                if kind == "transcript":
                    timing.transcript = event.get("text")
                    if not (timing.transcript or "").strip():
                        break
                elif kind == "response.done":
                    timing.reply_text = event.get("text", "")
                elif kind == "metrics":
                    timing.metrics = {k: v for k, v in event.items() if k not in ("type", "_received_at")}
                    break
                elif kind == "error":
                    timing.errors.append(event)
                    break
        except (TimeoutError, WebRtcCallerError) as exc:
            timing.errors.append(str(exc))
        sent = caller.mic.sent_at(end_ms)
        first = next((f.received_at for f in list(caller.frames)
                      if sent is not None and f.received_at >= sent and f.dbfs > FIRST_AUDIO_DBFS), None)
    if sent is not None and first is not None:
        timing.client_voice_to_voice_ms = (first - sent) * 1000
    return timing
