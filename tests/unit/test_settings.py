"""Settings precedence (flags > environment > file > defaults) and readable errors."""

import json

import pytest

from voiceserver.settings import SettingsError, load_settings

README_EXAMPLE_FILE = {
    "agent": {"name": "Assistant", "instructions": "You are a helpful voice assistant.",
              "model": "local/qwen2.5-coder-0.5b",
              "voice": {"provider": "local", "voice": "en_US-joe-medium", "speed": 1.0},
              "memory": {"type": "lancedb", "url": "file:./data/memory"}}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("VOICESERVER_") or key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GOOGLE_AI_API_KEY",
                                                     "VOICE_PROVIDER", "VOICE_QUALITY", "LANCEDB_URI"):
            monkeypatch.delenv(key)


def write(tmp_path, data, name="cfg.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_defaults_run_local_without_keys():
    s = load_settings()
    assert s.voice_provider == "local" and s.stt_provider == "local" and s.tts_provider == "local"
    assert s.agent.model == "local/qwen2.5-coder-0.5b"
    assert s.openai_api_key is None
    assert s.lancedb_uri == "./data/memory"


def test_the_readme_example_config_file_is_accepted(tmp_path):
    s = load_settings(write(tmp_path, README_EXAMPLE_FILE))
    assert s.agent.voice.voice == "en_US-joe-medium"
    assert s.agent.memory.url == "file:./data/memory"
    assert s.agent.instructions == "You are a helpful voice assistant."


def test_yaml_file(tmp_path):
    path = write(tmp_path, "port: 9001\nagent:\n  name: Kiosk\n  model: openai/gpt-4o-mini\n", "cfg.yaml")
    s = load_settings(path)
    assert s.port == 9001 and s.agent.name == "Kiosk" and s.agent.model == "openai/gpt-4o-mini"


def test_environment_beats_file_and_flags_beat_environment(tmp_path, monkeypatch):
    path = write(tmp_path, {"port": 9001, "voice_quality": "low", "agent": {"name": "FromFile"}})
    monkeypatch.setenv("VOICESERVER_PORT", "9002")
    monkeypatch.setenv("VOICE_QUALITY", "high")
    s = load_settings(path)
    assert s.port == 9002, "the environment wins over the file"
    assert s.voice_quality == "high"
    assert s.agent.name == "FromFile", "file values the environment does not set are kept"
    s = load_settings(path, overrides={"port": 9003})
    assert s.port == 9003, "flags win over the environment"


def test_nested_environment_merges_with_file(tmp_path, monkeypatch):
    path = write(tmp_path, {"agent": {"name": "FromFile", "instructions": "Be brief."}})
    monkeypatch.setenv("VOICESERVER_AGENT__MODEL", "openai/gpt-4o-mini")
    s = load_settings(path)
    assert s.agent.model == "openai/gpt-4o-mini"
    assert s.agent.name == "FromFile" and s.agent.instructions == "Be brief."


def test_known_environment_names(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GOOGLE_AI_API_KEY", "g-key-123")
    monkeypatch.setenv("VOICE_PROVIDER", "openai")
    monkeypatch.setenv("LANCEDB_URI", "s3://bucket/memory")
    s = load_settings()
    assert s.openai_api_key.get_secret_value() == "sk-test-123456789"
    assert s.openai_base_url == "http://127.0.0.1:9/v1"
    assert s.voice_provider == "openai" and s.stt_provider == "openai"
    assert s.lancedb_uri == "s3://bucket/memory"
    assert "sk-test-123456789" in s.secrets() and "g-key-123" in s.secrets()
    assert "sk-test-123456789" not in repr(s), "secrets never show in reprs"


def test_invalid_value_names_field_and_allowed_values(monkeypatch):
    monkeypatch.setenv("VOICE_PROVIDER", "azure")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "VOICE_PROVIDER" in message and "'local'" in message and "'openai'" in message and "azure" in message


def test_invalid_nested_value_in_file(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, {"agent": {"voice": {"provider": "bogus"}}}))
    assert "agent.voice.provider" in str(err.value) and "'local'" in str(err.value)


def test_unknown_key_and_bad_number(tmp_path):
    with pytest.raises(SettingsError, match="agent.colour: unknown setting"):
        load_settings(write(tmp_path, {"agent": {"colour": "red"}}))
    with pytest.raises(SettingsError, match="port"):
        load_settings(overrides={"port": 70000})


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(SettingsError, match="not valid JSON"):
        load_settings(write(tmp_path, "{not json", "bad.json"))
    with pytest.raises(SettingsError, match="mapping at the top level"):
        load_settings(write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_storage_section_from_the_environment_and_the_journal_directory(monkeypatch):
    from pathlib import Path

    defaults = load_settings()
    assert defaults.journal_dir_for("./data/memory") == Path("data/journal")
    assert defaults.journal_dir_for("/srv/voice/memory") == Path("/srv/voice/journal")
    assert defaults.journal_dir_for("s3://bucket/memory") == Path("data/journal")
    assert defaults.storage.fsync is False and defaults.storage.claim_lease_s == 60.0
    monkeypatch.setenv("VOICESERVER_STORAGE__JOURNAL_DIR", "/var/lib/voice/journal")
    monkeypatch.setenv("VOICESERVER_STORAGE__FSYNC", "filesystem")
    monkeypatch.setenv("VOICESERVER_STORAGE__OP_TIMEOUT_S", "2.5")
    s = load_settings()
    assert s.journal_dir_for("s3://bucket/memory") == Path("/var/lib/voice/journal")
    assert s.storage.fsync == "filesystem" and s.storage.op_timeout_s == 2.5
    monkeypatch.setenv("VOICESERVER_STORAGE__JOURNAL_DIR", "null")
    assert load_settings().journal_dir_for("s3://bucket/memory") is None
    monkeypatch.setenv("VOICESERVER_STORAGE__FSYNC", "sometimes")
    with pytest.raises(SettingsError) as bad:
        load_settings()
    assert "storage.fsync" in str(bad.value)
