"""The embeddings route group of the loopback OpenAI server: ``POST /v1/embeddings`` in OpenAI's documented shape.

    routes = embeddings_routes()
    async with FakeOpenAI(routes, api_key="test-key") as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test-key")
        await client.embeddings.create(model="text-embedding-3-small", input=["hello"])
    routes.calls   # answered requests, errors included

Request: ``model`` (required), ``input`` (a string, a list of strings, a list of token ids or a list of such lists;
no empty strings, at most 2048 items), optional ``dimensions`` and ``encoding_format`` ("float" or "base64": the
little-endian float32 bytes, base64-encoded, which the openai SDK asks for by default).

Response: ``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...] or "<base64>"}],
"model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}``.

The vectors are deterministic: a hashed bag of the lower-cased words (each word adds +-1 to a few positions chosen by
its SHA-256), normalised to unit length. Texts sharing words are similar, so recall tests behave like real ones,
and the same text always gives the same vector. Default sizes: 1536 (text-embedding-3-small, ada-002) and 3072
(text-embedding-3-large). A wrong bearer token gets 401; the first ``fail_first`` calls get ``fail_status``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

MODEL_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_INPUTS = 2048
_SLOTS_PER_WORD = 4


def fake_embedding(text: str, dimensions: int) -> np.ndarray:
    """The deterministic unit vector this server returns for ``text``."""
    vector = np.zeros(dimensions, dtype=np.float32)
    for word in re.findall(r"[a-z0-9']+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        for slot in range(_SLOTS_PER_WORD):
            position = int.from_bytes(digest[slot * 4: slot * 4 + 3], "little") % dimensions
            vector[position] += 1.0 if digest[slot * 4 + 3] & 1 else -1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


class EmbeddingsRoutes(list):  # a list[Route], so FakeOpenAI takes it as a route group
    """The route group plus ``calls`` (requests answered, errors included)."""

    def __init__(self, routes: list[BaseRoute]):
        super().__init__(routes)
        self.calls = 0


def _texts(value: Any) -> list[str] | None:
    """The inputs as texts (token ids become words "t<id>"), or None when the input is malformed."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [" ".join(f"t{v}" for v in value)]
    out = []
    for item in value:
        if isinstance(item, str) and item:
            out.append(item)
        elif isinstance(item, list) and item and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            out.append(" ".join(f"t{v}" for v in item))
        else:
            return None
    return out


def embeddings_routes(*, api_key: str | None = None, fail_first: int = 0, fail_status: int = 500) -> EmbeddingsRoutes:
    """Routes for ``POST /v1/embeddings`` (see the module docstring)."""
    state = {"failed": 0}
    holder: list[EmbeddingsRoutes] = []

    async def embeddings(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        request.app.state.fake.requests.append(("/v1/embeddings", body))
        holder[0].calls += 1
        expected = api_key if api_key is not None else getattr(request.app.state.fake, "api_key", None)
        if expected is not None:
            header = request.headers.get("authorization", "")
            if (header[7:] if header.lower().startswith("bearer ") else "") != expected:
                return _error(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        if state["failed"] < fail_first:
            state["failed"] += 1
            return _error(fail_status, "The server had an error while processing your request.", "server_error")
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter", "invalid_request_error", param="model")
        texts = _texts(body.get("input"))
        if texts is None:
            return _error(400, "'$.input' is invalid. Please check the API reference.", "invalid_request_error",
                          param="input")
        dimensions = body.get("dimensions", MODEL_DIMENSIONS.get(model, 1536))
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 3072:
            return _error(400, "dimensions must be an integer from 1 to 3072", "invalid_request_error",
                          param="dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return _error(400, "encoding_format must be 'float' or 'base64'", "invalid_request_error",
                          param="encoding_format")
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dimensions)
            embedding: Any = (base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                              if encoding == "base64" else [float(x) for x in vector])
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    routes = EmbeddingsRoutes([Route("/v1/embeddings", embeddings, methods=["POST"])])
    holder.append(routes)
    return routes
