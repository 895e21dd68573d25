"""``voiceserver talk --mic | --pipe | --file WAV --conversation``: a continuous conversation from the terminal,
with a one-line status (listening, hearing, thinking, speaking, the last voice-to-voice time)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any, TextIO

from .audio_io import PacedSink, PipeSink, PipeSource, WavFileSink, WavFileSource
from .conversation import Conversation, ConversationError, ConversationEvent, Status
from .echo import AecUnavailable, EchoCanceller, EchoGate, aec_available
from .sounddevice_io import AudioDeviceUnavailable, SoundDeviceAudio, list_devices

SYMBOLS = {"connecting": "..", "listening": "o ", "hearing": "* ", "thinking": "~ ", "speaking": "> ",
           "reconnecting": "<>", "ended": "- "}


def render_status(status: Status) -> str:
    """The status line: ``o listening | voice-to-voice 812 ms | 3 turns``."""
    parts = [f"{SYMBOLS.get(status.state, '  ')} {status.state}"]
    if status.state == "reconnecting" and status.retry_in_s is not None:
        parts[0] += f" in {status.retry_in_s:.1f} s"
        if status.error:
            parts.append(status.error[:60])
    if status.last_voice_to_voice_ms is not None:
        parts.append(f"voice-to-voice {status.last_voice_to_voice_ms:.0f} ms")
    parts.append(f"{status.turns} turn{'s' if status.turns != 1 else ''}")
    return " | ".join(parts)


class StatusLine:
    """One line rewritten in place on a terminal (nothing when the stream is not a terminal), with the
    conversation's lines (you / assistant / errors) printed above it."""

    def __init__(self, stream: TextIO = sys.stderr, *, enabled: bool | None = None):
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._last = ""

    def update(self, status: Status) -> None:
        line = render_status(status)
        if self.enabled and line != self._last:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
        self._last = line

    def print(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K" + text + "\n" + self._last)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, event: ConversationEvent) -> None:
        if event.kind == "you":
            self.print(f"you: {event.text}")
        elif event.kind == "assistant":
            self.print(f"assistant: {event.text}" + (" [interrupted]" if event.data.get("interrupted") else ""))
        elif event.kind in ("error", "approval"):
            self.print(f"{event.kind}: {event.text}")


def _echo(args: Any, live_mic: bool) -> tuple[EchoGate | None, EchoCanceller | None]:
    mode = args.echo
    if mode == "auto":
        mode = ("aec" if aec_available() else "gate") if live_mic else "off"
    gate = EchoGate(open_dbfs=args.barge_in_dbfs) if mode in ("gate", "aec") else None
    canceller = EchoCanceller() if mode == "aec" else None
    return gate, canceller


def build_conversation(args: Any, status_line: StatusLine) -> Conversation:
    """The source, sink and echo handling the flags ask for."""
    if args.mic:
        device = SoundDeviceAudio(input_device=args.input_device, output_device=args.output_device)
        gate, device.canceller = _echo(args, live_mic=True)
        source: Any = device
        sink: Any = WavFileSink(args.out) if args.out else device
    elif args.pipe:
        gate, _ = _echo(args, live_mic=False)
        source = PipeSource(sys.stdin.buffer, rate=args.pipe_rate)
        sink = PipeSink(sys.stdout.buffer)
    else:
        gate, _ = _echo(args, live_mic=False)
        source = WavFileSource(args.file, realtime=True)
        sink = WavFileSink(args.out) if args.out else PacedSink()  # played in real time, to nowhere
    return Conversation(args.url, source=source, sink=sink, resource=args.resource, thread=args.thread,
                        agent=args.agent, api_key=args.api_key, echo_gate=gate, push_to_talk=args.push_to_talk,
                        on_status=status_line.update, on_event=status_line.event)


def _push_to_talk_keys(conversation: Conversation, status_line: StatusLine) -> Any:
    """Space or Enter toggles push-to-talk: terminals report key presses, not releases, so the second press
    stands for the release (it sends input.commit). Returns a function restoring the terminal."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        key = sys.stdin.read(1)
        if key in (" ", "\n", "\r"):
            if conversation.pressed:
                conversation.release()
                status_line.print("(sent)")
            else:
                conversation.press()
                status_line.print("(talking... press space to send)")

    loop.add_reader(fd, on_key)
    status_line.print("push-to-talk: press space to talk, space again to send")

    def restore() -> None:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


async def run_kiosk(args: Any) -> int:
    """The continuous modes of ``voiceserver talk``. Returns the exit code."""
    if args.list_devices:
        try:
            print(list_devices())
        except AudioDeviceUnavailable as exc:
            print(f"voiceserver talk: {exc}", file=sys.stderr)
            return 1
        return 0
    status_line = StatusLine(sys.stderr, enabled=False if args.no_status else None)
    try:
        conversation = build_conversation(args, status_line)
    except (AudioDeviceUnavailable, AecUnavailable, OSError, ValueError) as exc:
        print(f"voiceserver talk: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, conversation.stop)
    restore = None
    if args.push_to_talk and sys.stdin.isatty():
        restore = _push_to_talk_keys(conversation, status_line)
    try:
        await conversation.run()
    except (ConversationError, AudioDeviceUnavailable) as exc:
        status_line.print(f"voiceserver talk: {exc}")
        return 1
    finally:
        if restore is not None:
            restore()
        if status_line.enabled:
            status_line.stream.write("\n")
    return 0
