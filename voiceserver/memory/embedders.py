"""Text embedders for semantic recall: WordLlama (offline, the default) and OpenAI's embeddings endpoint.

An embedder turns texts into L2-normalised float32 vectors, so cosine similarity is a dot product and LanceDB's
cosine distance is ``1 - similarity``. ``name`` identifies the vector space: vectors of different embedders live in
different LanceDB tables and are never compared.
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..engines import ProviderError, call_with_policy
from ..logs import get_logger
from .types import MemoryStoreError

log = get_logger("MEMORY")

MAX_EMBED_BATCH = 256  # texts per call
MAX_EMBED_CHARS = 8_000  # per text; longer texts are cut (the head carries the meaning for recall)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows (empty text) stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class Embedder:
    """Base class. Subclasses set ``name`` and ``dimensions`` and implement ``_embed``."""

    name: str = "base"
    dimensions: int | None = None

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` into an (n, dimensions) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        texts = [t[:MAX_EMBED_CHARS] for t in texts]
        out = []
        for start in range(0, len(texts), MAX_EMBED_BATCH):
            out.append(await self._embed(texts[start:start + MAX_EMBED_BATCH]))
        vectors = normalise(np.concatenate(out))
        if self.dimensions is None:
            self.dimensions = int(vectors.shape[1])
        return vectors

    async def _embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    async def load(self) -> None:
        """Load weights or open clients ahead of the first call (optional)."""

    async def close(self) -> None:
        """Release resources (optional)."""


class WordLlamaEmbedder(Embedder):
    """WordLlama's bundled 256-dimension static embeddings, offline (never downloads).

    ``models_dir`` holds ``wordllama/weights/l2_supercat_256.safetensors`` and
    ``wordllama/tokenizers/l2_supercat_tokenizer_config.json`` (``python -m voiceserver models fetch``).
    """

    name = "wordllama-l2supercat-256"
    dimensions = 256

    def __init__(self, models_dir: str | Path = "models"):
        self.cache_dir = Path(models_dir) / "wordllama"
        self._model: Any = None
        self._lock = threading.Lock()

    def _load_sync(self) -> Any:
        with self._lock:
            if self._model is None:
                tokenizer = self.cache_dir / "tokenizers" / "l2_supercat_tokenizer_config.json"
                if not tokenizer.is_file():
                    raise MemoryStoreError(
                        f"WordLlama files not found under {self.cache_dir}: run `python -m voiceserver models fetch`",
                        code="model_missing")
                try:
                    from wordllama import WordLlama
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise MemoryStoreError("wordllama is not installed: pip install 'voiceserver[local]'",
                                           code="model_missing") from exc
                self._model = WordLlama.load(cache_dir=str(self.cache_dir), disable_download=True)
            return self._model

    def _embed_sync(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._load_sync().embed(texts), dtype=np.float32)

    async def load(self) -> None:
        await asyncio.to_thread(self._load_sync)

    async def _embed(self, texts: list[str]) -> np.ndarray:
        # About 40 microseconds per short text: cheap, but still tokenisation in Python, so off the loop.
        return await asyncio.to_thread(self._embed_sync, texts)


class OpenAIEmbedder(Embedder):
    """OpenAI's ``POST /v1/embeddings`` (or any server speaking it, via ``base_url``)."""

    _KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                         "text-embedding-ada-002": 1536}

    def __init__(self, model: str = "text-embedding-3-small", api_key: str | None = None,
                 base_url: str | None = None, *, dimensions: int | None = None, timeout_s: float = 20.0,
                 retries: int = 2):
        self.model = model
        self.name = "openai-" + re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-").lower()
        self.requested_dimensions = dimensions
        self.dimensions = dimensions or self._KNOWN_DIMENSIONS.get(model)
        if dimensions:
            self.name += f"-{dimensions}"
        self.timeout_s = timeout_s
        self.retries = retries
        self._api_key = api_key
        self._base_url = base_url
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(api_key=self._api_key or "missing", base_url=self._base_url,
                                              max_retries=0)
        return self._client

    async def _embed(self, texts: list[str]) -> np.ndarray:
        client = self._get_client()
        extra: dict[str, Any] = {"dimensions": self.requested_dimensions} if self.requested_dimensions else {}

        async def call() -> np.ndarray:
            response = await client.embeddings.create(model=self.model, input=texts, **extra)
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(texts):
                raise ProviderError("embeddings_failed", f"asked for {len(texts)} embeddings, got {len(rows)}")
            return np.asarray([r.embedding for r in rows], dtype=np.float32)

        return await call_with_policy(call, provider="openai", operation="embeddings", timeout_s=self.timeout_s,
                                      retries=self.retries)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def resolve_embedder(spec: str | Embedder | None, *, models_dir: str | Path | None = None,
                     openai_api_key: str | None = None, openai_base_url: str | None = None) -> Embedder | None:
    """``"wordllama"``, ``"openai/<model>"``, an Embedder, or None (no semantic recall)."""
    if spec is None or isinstance(spec, Embedder):
        return spec
    if spec == "wordllama":
        return WordLlamaEmbedder(models_dir or "models")
    if isinstance(spec, str) and spec.startswith("openai/") and len(spec) > len("openai/"):
        return OpenAIEmbedder(spec.split("/", 1)[1], api_key=openai_api_key, base_url=openai_base_url)
    raise MemoryStoreError(f"unknown embedder {spec!r}: use 'wordllama' or 'openai/<model>'",
                           code="invalid_options")
