"""Chat models: the base (messages, tools, streamed chunks), providers, fallback chains and model strings.

    from voiceserver.llm import ModelContext, ModelRegistry
    registry = ModelRegistry(ModelContext(models_dir=Path("models")))
    model = registry.resolve("local/smollm2")            # or "openai/gpt-4o-mini", or a list for fallback
    async for chunk in model.stream(ChatRequest([ChatMessage("user", "Hello")])):
        ...

Importing this package does not import llama.cpp; the local model imports it when it loads.
"""

from .base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResult,
    Finish,
    ModelCapabilities,
    TextDelta,
    ToolCall,
    ToolCallChunk,
    ToolChoice,
    ToolSpec,
    UnknownModelError,
    Usage,
)
from .fallback import FallbackChatModel
from .llama_cpp import LlamaCppModel
from .openai_compatible import RAW_ARGUMENTS_KEY, OpenAICompatibleModel
from .registry import PREFIXES, ModelContext, ModelRegistry, default_registry

__all__ = [
    "PREFIXES",
    "RAW_ARGUMENTS_KEY",
    "ChatChunk",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "FallbackChatModel",
    "Finish",
    "LlamaCppModel",
    "ModelCapabilities",
    "ModelContext",
    "ModelRegistry",
    "OpenAICompatibleModel",
    "TextDelta",
    "ToolCall",
    "ToolCallChunk",
    "ToolChoice",
    "ToolSpec",
    "UnknownModelError",
    "Usage",
    "default_registry",
]
