"""The ``openai.AsyncOpenAI`` client the OpenAI speech providers build when none is passed in.

A neutral module: stt/ and tts/ both use it and must not import each other. The SDK's own retries are off (the
provider base classes own timeout, retries and error mapping), and ``base_url`` is always passed so the SDK never
falls back to reading the environment.
"""

from __future__ import annotations

from typing import Any

from .engines import ProviderError

OPENAI_BASE_URL = "https://api.openai.com/v1"


def openai_client(api_key: str | None, base_url: str | None, timeout_s: float) -> Any:
    """An ``openai.AsyncOpenAI`` for ``base_url`` (OpenAI's own by default); ``api_key`` is required."""
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - openai is a core dependency
        raise ProviderError("not_installed", "the openai package is not installed") from exc
    if api_key is None:
        raise ValueError("api_key is required (for a server that needs none, pass any string)")
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url or OPENAI_BASE_URL, max_retries=0,
                              timeout=timeout_s)
