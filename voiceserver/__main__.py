"""The command line: ``voiceserver serve | models fetch | models list | token issue | talk``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from .logs import LEVELS


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "log_level": getattr(args, "log_level", None),
        "log_format": getattr(args, "log_format", None),
        "log_file": getattr(args, "log_file", None),
        "models_dir": getattr(args, "models_dir", None),
        "app": getattr(args, "app", None),
        "workers": getattr(args, "workers", None),
    }


def _load(args: argparse.Namespace):
    from .settings import SettingsError, load_settings

    try:
        return load_settings(getattr(args, "config", None), _settings_overrides(args))
    except SettingsError as exc:
        print(f"voiceserver: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.run import run_server

    return run_server(_load(args))


def cmd_models(args: argparse.Namespace) -> int:
    from .model_files import ModelError, fetch, status_table

    settings = _load(args)
    models_dir = Path(settings.models_dir)
    if args.models_command == "fetch":
        try:
            fetch(models_dir, _models_to_fetch(args, settings))
        except ModelError as exc:
            print(f"voiceserver: {exc}", file=sys.stderr)
            return 1
        return 0
    rows = status_table(models_dir)
    width = max(len(r[0]) for r in rows)
    for name, kind, status, description in rows:
        print(f"{name:<{width}}  {kind:<8}  {status:<8}  {description}")
    # An optional model that was never fetched is fine; a missing required one, or anything corrupt, is not.
    return 0 if all(r[2] == "ok" or (r[2] == "missing" and r[3].endswith("(optional)")) for r in rows) else 1


def _models_to_fetch(args: argparse.Namespace, settings: Any) -> list[str] | None:
    """Named models; every model with --all; else what the settings use (an --app's agents are only known once
    it is built, so then the manifest's non-optional models)."""
    from .model_files import default_models
    from .server.composition import required_models

    if args.names:
        return list(args.names)
    if args.all:
        return None
    if settings.app:
        return default_models()
    return required_models(settings)


def cmd_token(args: argparse.Namespace) -> int:
    """``token issue``: print a caller token signed with auth.token_secret (docs/security.md)."""
    import time

    from .identity import issue_token

    settings = _load(args)
    secret = settings.auth.token_secret
    if secret is None:
        print("voiceserver: no token secret: set VOICESERVER_AUTH__TOKEN_SECRET (or auth.token_secret in --config)",
              file=sys.stderr)
        return 2
    limit = settings.auth.max_token_ttl_s
    if not 0 < args.ttl <= limit:
        print(f"voiceserver: --ttl must be from 1 to {limit} seconds (auth.max_token_ttl_s)", file=sys.stderr)
        return 2
    try:
        token = issue_token(secret.get_secret_value(), args.resource, now=time.time(), ttl_s=args.ttl,
                            thread=args.thread, agent=args.agent)
    except ValueError as exc:
        print(f"voiceserver: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_talk(args: argparse.Namespace) -> int:
    from .client import talk_main

    return asyncio.run(talk_main(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceserver",
        description="Realtime voice assistant server: speech in, agent, speech out. Runs offline on local models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="settings file (YAML or JSON); the environment wins over it")
        p.add_argument("--models-dir", metavar="DIR", help="where model files live (default models/)")
        p.add_argument("--log-level", choices=list(LEVELS), help="debug is the debug mode; default info")
        p.add_argument("--log-format", choices=["json", "pretty"], help="default json (one object per line)")
        p.add_argument("--log-file", metavar="FILE", help="also write logs to this file")

    serve = sub.add_parser("serve", help="run the server", description="Run the voice server (uvicorn + uvloop).")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (default 1)")
    serve.add_argument("--app", metavar="MODULE:OBJECT",
                       help="serve your own voiceserver.VoiceApp (agents, tools, workflows), e.g. myapp.main:app")
    common(serve)
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="fetch or list the embedded models")
    msub = models.add_subparsers(dest="models_command", required=True)
    fetch = msub.add_parser("fetch", help="download, assemble and verify the models (idempotent)")
    fetch.add_argument("names", nargs="*", help="only these models (default: the ones the settings use)")
    fetch.add_argument("--all", action="store_true", help="every model of the manifest, optional ones too")
    common(fetch)
    lst = msub.add_parser("list", help="show each model as ok / missing / corrupt")
    common(lst)
    models.set_defaults(func=cmd_models)

    token = sub.add_parser("token", help="issue caller tokens (signed with auth.token_secret)")
    tsub = token.add_subparsers(dest="token_command", required=True)
    issue = tsub.add_parser(
        "issue", help="print a token that lets its holder act as one caller",
        description="Print a caller token: its holder's sessions and REST calls are bound to --resource (and to "
                    "--thread / --agent when given) until it expires. Needs VOICESERVER_AUTH__TOKEN_SECRET.")
    issue.add_argument("--resource", required=True, help="the caller's resource id (whose memory it is)")
    issue.add_argument("--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    issue.add_argument("--agent", metavar="NAME", help="bind the token to this agent")
    issue.add_argument("--thread", metavar="ID", help="bind the token to this conversation")
    common(issue)
    token.set_defaults(func=cmd_token)

    talk = sub.add_parser(
        "talk", help="talk to a server: one turn from a file or text, or a conversation from a microphone",
        description="One turn (--file WAV or --text, reply saved with --out), or a continuous conversation until "
                    "Ctrl-C: --mic (speaker out), --pipe (raw pcm16 on stdin/stdout), --file WAV --conversation. "
                    "Conversations reconnect when the server goes away and show a one-line status.")
    talk.add_argument("--url", default="ws://127.0.0.1:8080/v1/voice", help="server WebSocket URL")
    source = talk.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="WAV", help="question as a WAV file (any rate, mono or stereo)")
    source.add_argument("--text", help="question as text")
    source.add_argument("--mic", action="store_true",
                        help="continuous conversation with the microphone and speaker (extra 'kiosk')")
    source.add_argument("--pipe", action="store_true",
                        help="continuous conversation: raw pcm16 mono from stdin, replies (16 kHz) to stdout")
    talk.add_argument("--conversation", action="store_true",
                      help="with --file: every utterance of the file, replies to --out, until the file ends")
    talk.add_argument("--out", metavar="WAV", help="write the reply audio here")
    talk.add_argument("--resource", help="caller id (a conversation keeps it across reconnections)")
    talk.add_argument("--thread", help="conversation id")
    talk.add_argument("--agent", help="agent name")
    talk.add_argument("--realtime", action="store_true",
                      help="pace the audio in real time (default: as fast as possible)")
    talk.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")
    talk.add_argument("--api-key", help="API key or caller token (voiceserver token issue) if the server requires one")
    talk.add_argument("--push-to-talk", action="store_true",
                      help="send audio only while talking: space starts, space again sends (input.commit)")
    talk.add_argument("--input-device", metavar="ID", help="microphone: a number or a name from --list-devices")
    talk.add_argument("--output-device", metavar="ID", help="speaker: a number or a name from --list-devices")
    talk.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    talk.add_argument("--echo", choices=["auto", "aec", "gate", "off"], default="auto",
                      help="echo handling: aec (echo cancellation + gate), gate (mic held back while the assistant "
                           "speaks unless loud), off; auto: aec if available, else gate, for --mic; off otherwise")
    talk.add_argument("--barge-in-dbfs", type=float, default=-35.0,
                      help="how loud speech over the assistant must be to interrupt it (dBFS, default -35)")
    talk.add_argument("--pipe-rate", type=int, default=16000, help="sample rate of --pipe input (default 16000)")
    talk.add_argument("--no-status", action="store_true", help="no status line")
    talk.set_defaults(func=cmd_talk)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
