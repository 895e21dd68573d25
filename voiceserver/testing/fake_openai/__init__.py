"""A loopback server that speaks the documented OpenAI HTTP wire format, for tests without network.

Route groups live in sibling modules (``chat``, ``audio``, ``embeddings``); compose the ones a test needs:

    async with FakeOpenAI(chat_routes(script)) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")

Every request body is recorded in ``fake.requests`` as (path, parsed JSON or form fields).
"""

from .server import FakeOpenAI

__all__ = ["FakeOpenAI"]
