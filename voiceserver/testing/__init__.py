"""Test helpers shipped with the package so users can test their own agents, tools and clients.

- :mod:`voiceserver.testing.fake_llm`: ScriptedChatModel, a chat model that plays back a script with set delays.
- :mod:`voiceserver.testing.servers`: run an ASGI app on 127.0.0.1 port 0 inside the current event loop.
- :mod:`voiceserver.testing.fake_openai`: a loopback server speaking the OpenAI wire format (chat, audio, embeddings).
- :mod:`voiceserver.testing.faults`: FaultProxy, an HTTP proxy on 127.0.0.1 that delays, fails (5xx), resets after N
  bytes or blackholes what goes through it, for provider and storage faults (in front of the fake OpenAI server or
  moto S3).
"""
