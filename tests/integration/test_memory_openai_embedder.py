"""OpenAIEmbedder and Memory(embedder="openai/...") against the loopback /v1/embeddings route group."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from voiceserver.engines import ProviderError
from voiceserver.memory import LanceDBStore, Memory, Message, OpenAIEmbedder
from voiceserver.testing.fake_openai import FakeOpenAI
from voiceserver.testing.fake_openai.embeddings import embeddings_routes, fake_embedding


async def test_wire_format_float_and_base64():
    async with FakeOpenAI(embeddings_routes(), api_key="k") as fake:
        async with httpx.AsyncClient(base_url=fake.base_url, headers={"authorization": "Bearer k"}) as client:
            body = (await client.post("/embeddings", json={"model": "text-embedding-3-small", "input": ["a b", "c"],
                                                           "encoding_format": "float"})).json()
            assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
            assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 1536
            assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
            b64 = (await client.post("/embeddings", json={"model": "m", "input": "a b", "dimensions": 8,
                                                          "encoding_format": "base64"})).json()
            decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
            assert np.allclose(decoded, fake_embedding("a b", 8))
            for bad in [{"input": "x"}, {"model": "m", "input": ""}, {"model": "m", "input": [1.5]},
                        {"model": "m", "input": "x", "encoding_format": "hex"}]:
                response = await client.post("/embeddings", json=bad)
                assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        denied = await httpx.AsyncClient().post(fake.base_url + "/embeddings", json={"model": "m", "input": "x"})
        assert denied.status_code == 401


async def test_openai_sdk_and_embedder_agree_with_the_server():
    async with FakeOpenAI(embeddings_routes(fail_first=1), api_key="k") as fake:
        sdk = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            await sdk.embeddings.create(model="text-embedding-3-small", input="warm up the failure")
        response = await sdk.embeddings.create(model="text-embedding-3-small", input=["hello world"])  # base64
        assert np.allclose(response.data[0].embedding, fake_embedding("hello world", 1536), atol=1e-6)
        embedder = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=fake.base_url)
        vectors = await embedder.embed(["hello world", "the cat sat"])
        assert vectors.shape == (2, 1536) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert embedder.name == "openai-text-embedding-3-small" and embedder.dimensions == 1536
        wrong = OpenAIEmbedder(api_key="wrong", base_url=fake.base_url, retries=0)
        with pytest.raises(ProviderError) as info:
            await wrong.embed(["x"])
        assert info.value.code == "provider_auth"
        await embedder.close()


async def test_memory_recalls_with_openai_embeddings(tmp_path):
    async with FakeOpenAI(embeddings_routes(), api_key="k") as fake:
        memory = Memory(LanceDBStore(tmp_path / "mem"), embedder="openai/text-embedding-3-small",
                        openai_api_key="k", openai_base_url=fake.base_url,
                        options={"semantic_recall": {"top_k": 1, "message_range": 0}})
        await memory.save_messages([Message("user", "my favorite color is blue", "call-1", "ada"),
                                    Message("user", "the train leaves at nine", "call-1", "ada")])
        context = await memory.prepare(resource_id="ada", thread_id="call-2", query="what is my favorite color")
        assert [m.content for m in context.recalled] == ["my favorite color is blue"]
        assert await memory._vectors() == "vectors_openai_text_embedding_3_small"
        sent = [body for path, body in fake.requests if path == "/v1/embeddings"]
        assert sent[0]["model"] == "text-embedding-3-small" and sent[0]["input"] == [
            "my favorite color is blue", "the train leaves at nine"]
        await memory.close()
