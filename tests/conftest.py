"""Shared fixtures. Tests never skip for missing models: scripts/test fetches them first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The fetched models (VOICESERVER_MODELS_DIR or <repo>/models), verified by size."""
    from voiceserver.model_files import require_models

    path = Path(os.environ.get("VOICESERVER_MODELS_DIR") or REPO / "models")
    require_models(path, ["whisper-base", "piper-joe", "qwen2.5-coder-0.5b", "smollm2", "wordllama"], deep=False)
    return path
