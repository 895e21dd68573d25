"""A VoiceApp for process-level tests (`voiceserver serve --app memory_app:app` with tests/support on PYTHONPATH):
a scripted model that remembers names through the working-memory tool, and LanceDB memory at LANCEDB_URI (with
VOICESERVER_LANCEDB_STORAGE_OPTIONS as JSON for S3, and the storage.* settings)."""

from __future__ import annotations

import os
import re

from voiceserver.agent import Agent
from voiceserver.memory import LanceDBStore, Memory
from voiceserver.settings import load_settings
from voiceserver.testing.fake_llm import Reply, ScriptedChatModel
from voiceserver.voice_app import VoiceApp


def remembering_model(delay_s: float = 0.0) -> ScriptedChatModel:
    """Stores "my name is X" with the update-working-memory tool and greets by the remembered name."""

    def respond(request):
        last = request.messages[-1]
        system = " ".join(m.content or "" for m in request.messages if m.role == "system")
        if last.role == "tool":
            return "Nice to meet you."
        said = (last.content or "").lower()
        match = re.search(r"my name is (\w+)", said)
        if match:
            name = match.group(1).capitalize()
            return Reply(tool_calls=[("update-working-memory", {"memory": f"# User\n- Name: {name}\n"})])
        # Like a real model, it knows the name from the working memory or from earlier in this conversation (the
        # prompt shows working memory as it was when the call's window started; what was said since is history).
        known = re.search(r"Name:[ \t]*(\w+)", system)
        said_before = [re.search(r"my name is (\w+)", (m.content or "").lower())
                       for m in request.messages[:-1] if m.role == "user"]
        name = known.group(1) if known else next((m.group(1).capitalize() for m in said_before if m), None)
        if name:
            return f"Welcome back, {name}! You said: {last.content}"
        return f"Hello, who is this? You said: {last.content}"

    return ScriptedChatModel([Reply(respond=respond, first_delay_s=delay_s, chunk_delay_s=delay_s / 10)])


def build(delay_s: float = 0.0) -> VoiceApp:
    # The server's own settings (LANCEDB_URI, VOICESERVER_LANCEDB_STORAGE_OPTIONS, VOICESERVER_STORAGE__*), as the
    # composition root builds its stores.
    store = LanceDBStore.from_settings(load_settings())
    memory = Memory(storage=store, embedder="wordllama", models_dir=os.environ.get("VOICESERVER_MODELS_DIR"),
                    options={"last_messages": 10, "semantic_recall": {"top_k": 2, "message_range": 1},
                             "working_memory": {"enabled": True, "scope": "resource"}})
    agent = Agent(name="Assistant", instructions="Remember the caller.", model=remembering_model(delay_s),
                  memory=memory)
    return VoiceApp(agents={"Assistant": agent}, memory=memory, storage=store)


def app() -> VoiceApp:
    return build(float(os.environ.get("MEMORY_APP_DELAY_S", "0")))
