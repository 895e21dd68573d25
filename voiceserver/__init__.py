"""voiceserver: a realtime voice assistant server and the agent library inside it.

    from voiceserver import Agent, create_tool, Memory, LanceDBStore, CompositeVoice, create_step, create_workflow

Names are imported on first use, so ``import voiceserver`` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # agents and tools
    "Agent": "voiceserver.agent",
    "AgentStream": "voiceserver.agent",
    "AgentChunk": "voiceserver.agent",
    "AgentResult": "voiceserver.agent",
    "create_tool": "voiceserver.agent",
    "tool": "voiceserver.agent",
    "Tool": "voiceserver.agent",
    "ToolContext": "voiceserver.agent",
    "Processor": "voiceserver.agent",
    "TripWire": "voiceserver.agent",
    # memory
    "Memory": "voiceserver.memory",
    "LanceDBStore": "voiceserver.memory",
    "Message": "voiceserver.memory",
    "TokenLimiter": "voiceserver.memory",
    "ToolCallFilter": "voiceserver.memory",
    # voice
    "CompositeVoice": "voiceserver.voice",
    # workflows and networks
    "create_step": "voiceserver.workflows",
    "create_workflow": "voiceserver.workflows",
    "Workflow": "voiceserver.workflows",
    "Step": "voiceserver.workflows",
    "StepContext": "voiceserver.workflows",
    "Run": "voiceserver.workflows",
    "WorkflowResult": "voiceserver.workflows",
    "run_network": "voiceserver.network",
    # the application container, server and client
    "VoiceApp": "voiceserver.voice_app",
    "build_server": "voiceserver.server.composition",
    "create_app": "voiceserver.server.composition",
    "VoiceClient": "voiceserver.client",
    "Settings": "voiceserver.settings",
    "load_settings": "voiceserver.settings",
    "ChatModel": "voiceserver.llm.base",
    "SpeechToText": "voiceserver.stt.base",
    "TextToSpeech": "voiceserver.tts.base",
    "ProviderError": "voiceserver.engines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voiceserver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
