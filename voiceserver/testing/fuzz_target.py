"""A complete server with scripted engines, for fuzzing and soaking: every gateway and every REST route is live.

Scripted STT / TTS (instant, deterministic), an agent over a scripted model with real LanceDB memory (threads,
messages, working memory), and a workflow that suspends for an answer, stored in the same LanceDB, so the memory
and workflow REST routes have something to read, resume and cancel. ``debug_stats`` is on (``/v1/debug/stats``).

    server = build_target(Path("/tmp/fuzz"))                       # in a test
    python -m voiceserver.testing.fuzz_target --data DIR --port-file FILE [--max-sessions N]   # a process
"""

from __future__ import annotations

import argparse
import itertools
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..agent import Agent
from ..memory import LanceDBStore, Memory
from ..server.composition import VoiceServer, build_server
from ..settings import LimitsConfig, Settings, WebRtcConfig
from ..workflows import create_step, create_workflow
from .fake_llm import Reply, ScriptedChatModel
from .fake_voice import ScriptedSTT, ToneTTS

REPLY = "Okay. I can help with that."
WORKFLOW_ID = "booking"


class Booking(BaseModel):
    name: str


class Booked(BaseModel):
    summary: str


class Day(BaseModel):
    day: str


def booking_workflow(storage: Any) -> Any:
    """greet -> ask-day (suspends until resumed with {"day": ...})."""

    async def greet(ctx: Any) -> dict[str, str]:
        return {"summary": f"booking for {ctx.input_data.name}"}

    async def ask_day(ctx: Any) -> dict[str, str]:
        if ctx.resume_data is None:
            ctx.suspend({"prompt": "Which day?"})
        return {"summary": f"{ctx.input_data.summary} on {ctx.resume_data.day}"}

    workflow = create_workflow(id=WORKFLOW_ID, input_schema=Booking, output_schema=Booked, storage=storage)
    workflow.then(create_step(id="greet", input_schema=Booking, output_schema=Booked, execute=greet)).then(
        create_step(id="ask-day", input_schema=Booked, output_schema=Booked, resume_schema=Day,
                    execute=ask_day)).commit()
    return workflow


def target_settings(**overrides: Any) -> Settings:
    """The target's settings: many sessions, quick WebRTC timeouts, the debug stats route."""
    values: dict[str, Any] = {"limits": LimitsConfig(max_sessions=2000), "debug_stats": True,
                              "webrtc": WebRtcConfig(ice_timeout_s=5.0, peer_timeout_s=3.0)}
    values.update(overrides)
    return Settings(**values)


def build_target(data_dir: Path, *, settings: Settings | None = None, ms_per_char: float = 20.0,
                 transcript: str = "hello there", reply: str = REPLY, compact_every: int = 32) -> VoiceServer:
    """The scripted server over LanceDB at ``data_dir/memory`` (created)."""
    store = LanceDBStore(Path(data_dir) / "memory", compact_every=compact_every)
    memory = Memory(storage=store, embedder=None,
                    options={"last_messages": 10, "semantic_recall": {"enabled": False},
                             "working_memory": {"enabled": True, "scope": "resource", "extract": False}})
    workflow = booking_workflow(store)
    numbered = itertools.count(1)
    # A different reply each turn (numbered), as a model gives: the same words every turn would make the agent's
    # repetition guard ask twice. The fakes keep only their last 100 records: the server runs for hours.
    model = ScriptedChatModel([Reply(respond=lambda _request: f"Reply {next(numbered)}. {reply}")],
                              keep_requests=100)
    agent = Agent(name="Assistant", instructions="Be brief.", model=model, memory=memory,
                  workflows={WORKFLOW_ID: workflow})
    return build_server(settings or target_settings(), stt=ScriptedSTT([transcript], keep_calls=100),
                        tts=ToneTTS(ms_per_char=ms_per_char, keep_phrases=100), agents={"Assistant": agent},
                        memory=memory, workflows={WORKFLOW_ID: workflow})


def main(argv: list[str] | None = None) -> int:
    """Serve the target on 127.0.0.1 (a free port, written to ``--port-file``) until SIGTERM; JSON logs on stderr."""
    from ..logs import configure_logging
    from ..server.composition import create_app
    from ..server.malloc_arenas import limit_malloc_arenas
    from ..server.run import serve_app_forever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--max-sessions", type=int, default=2000)
    parser.add_argument("--ms-per-char", type=float, default=20.0, help="reply audio per character (ToneTTS)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, "json")

    settings = target_settings(limits=LimitsConfig(max_sessions=args.max_sessions))
    limit_malloc_arenas(settings.malloc_arena_max)  # as `voiceserver serve` does, so the soak measures what is served
    server = build_target(args.data, settings=settings, ms_per_char=args.ms_per_char)
    # The socket is bound here (not forked into a worker: LanceDB's runtime must not cross a fork), so the port
    # is known before uvicorn starts.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    args.port_file.write_text(str(sock.getsockname()[1]))
    return serve_app_forever(create_app(server), host="127.0.0.1", port=0, voice=server, sockets=[sock])

if __name__ == "__main__":
    raise SystemExit(main())
