"""The command line: help for every command, and a configuration error as one line."""

import subprocess
import sys

import pytest

from voiceserver.__main__ import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["models", "--help"], ["models", "fetch", "--help"],
                                  ["talk", "--help"], ["token", "issue", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: voiceserver" in out


def test_top_level_help_lists_commands():
    help_text = build_parser().format_help()
    for command in ("serve", "models", "talk"):
        assert command in help_text


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "voiceserver", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "serve" in proc.stdout


def test_bad_setting_is_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("VOICE_QUALITY", "ultra")
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "list"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voiceserver: configuration error:") and "VOICE_QUALITY" in err and "'high'" in err
    assert "\n" not in err and "Traceback" not in err


def test_models_list(models_dir, capsys):
    assert main(["models", "list", "--models-dir", str(models_dir)]) == 0
    out = capsys.readouterr().out
    for name in ("whisper-base", "piper-joe", "qwen2.5-coder-0.5b", "smollm2", "wordllama"):
        assert name in out
    assert "missing" not in out and "corrupt" not in out


def test_models_fetch_is_idempotent(models_dir, capsys):
    assert main(["models", "fetch", "--models-dir", str(models_dir)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_serve_with_missing_models_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "voiceserver", "serve", "--port", "0", "--models-dir",
                           str(tmp_path / "empty")], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANCEDB_URI": str(tmp_path / "mem"), "HOME": str(tmp_path)})
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("voiceserver: model whisper-base is missing"), err
    assert "voiceserver models fetch" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_serve_with_unwritable_memory_directory_is_one_line(tmp_path, models_dir):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the memory directory should be")
    proc = subprocess.run([sys.executable, "-m", "voiceserver", "serve", "--port", "0", "--models-dir",
                           str(models_dir)], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANCEDB_URI": str(blocker / "memory"), "HOME": str(tmp_path)})
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("voiceserver: memory directory") and "not writable" in err and "LANCEDB_URI" in err, err
    assert len(err.splitlines()) == 1


def test_talk_needs_a_source(capsys):
    assert main(["talk"]) == 2
    assert "--mic" in capsys.readouterr().err


def test_talk_kiosk_flags_parse():
    args = build_parser().parse_args(["talk", "--mic", "--push-to-talk", "--input-device", "2", "--output-device",
                                      "USB Audio", "--echo", "gate", "--barge-in-dbfs", "-30"])
    assert args.mic and args.push_to_talk and args.input_device == "2" and args.output_device == "USB Audio"
    assert args.echo == "gate" and args.barge_in_dbfs == -30.0


def test_token_issue_prints_a_token_the_server_accepts(monkeypatch, capsys):
    import time

    from voiceserver.identity import Authenticator

    secret = "cli-secret-0123456789abcdef0123456789"
    monkeypatch.setenv("VOICESERVER_AUTH__TOKEN_SECRET", secret)
    assert main(["token", "issue", "--resource", "alice", "--ttl", "120", "--agent", "Sales", "--thread", "t-1"]) == 0
    printed = capsys.readouterr().out.strip()
    caller = Authenticator([], [secret]).identify(printed)
    assert (caller.role, caller.resource, caller.thread, caller.agent) == ("token", "alice", "t-1", "Sales")
    assert abs(caller.expires_at - (time.time() + 120)) < 5


def test_token_issue_refuses_without_a_secret_or_with_a_bad_request(monkeypatch, capsys):
    monkeypatch.delenv("VOICESERVER_AUTH__TOKEN_SECRET", raising=False)
    assert main(["token", "issue", "--resource", "alice"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voiceserver: no token secret") and "\n" not in err
    monkeypatch.setenv("VOICESERVER_AUTH__TOKEN_SECRET", "cli-secret-0123456789abcdef0123456789")
    assert main(["token", "issue", "--resource", "not an id"]) == 2
    assert "invalid resource id" in capsys.readouterr().err
    assert main(["token", "issue", "--resource", "alice", "--ttl", str(10**9)]) == 2
    assert "--ttl must be" in capsys.readouterr().err
    assert capsys.readouterr().out == ""
