"""WordLlama embedder (offline, from models/) and embedder resolution."""

from __future__ import annotations

import numpy as np
import pytest

from voiceserver.memory import MemoryStoreError, OpenAIEmbedder, WordLlamaEmbedder, resolve_embedder


async def test_wordllama_vectors_are_normalised_and_meaningful(models_dir):
    embedder = WordLlamaEmbedder(models_dir)
    vectors = await embedder.embed(["my favorite color is blue", "what colour do I like", "the train is late", ""])
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not np.isnan(vectors).any()
    colour, query, train = vectors[0], vectors[1], vectors[2]
    assert float(colour @ query) > float(train @ query)
    assert (await embedder.embed([])).shape == (0, 256)


async def test_wordllama_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(MemoryStoreError, match="models fetch"):
        await WordLlamaEmbedder(tmp_path).embed(["x"])


def test_resolve_embedder(models_dir):
    assert isinstance(resolve_embedder("wordllama", models_dir=models_dir), WordLlamaEmbedder)
    openai_embedder = resolve_embedder("openai/text-embedding-3-large", openai_api_key="k")
    assert isinstance(openai_embedder, OpenAIEmbedder) and openai_embedder.dimensions == 3072
    assert resolve_embedder(None) is None
    for bad in ("bert", "openai/", 5):
        with pytest.raises(MemoryStoreError):
            resolve_embedder(bad)  # type: ignore[arg-type]
