"""Memory: each caller's conversations in LanceDB — threads, history, working memory, semantic recall.

    from voiceserver.memory import Memory, LanceDBStore
    memory = Memory(storage=LanceDBStore(uri="./data/memory"), embedder="wordllama",
                    options={"last_messages": 10,
                             "semantic_recall": {"top_k": 3, "message_range": 2, "scope": "resource"},
                             "working_memory": {"enabled": True, "template": "# User\\n- Name:\\n"}},
                    models_dir="models")
    context = await memory.prepare(resource_id="user-123", thread_id="conv-1", query="what colour do I like")
    await memory.save_messages([Message("user", "My favorite color is blue.", "conv-1", "user-123")])
"""

from .embedders import Embedder, OpenAIEmbedder, WordLlamaEmbedder, resolve_embedder
from .memory import Memory
from .options import MemoryOptions, SemanticRecallOptions, WorkingMemoryOptions
from .processors import MemoryProcessor, TokenLimiter, ToolCallFilter, estimate_tokens
from .store import LanceDBStore
from .types import (
    ClonedThread,
    MemoryContext,
    MemoryStoreError,
    Message,
    ReadOnlyMemoryError,
    RecallResult,
    SearchHit,
    Thread,
    ThreadNotFoundError,
    ThreadOwnerError,
    ThreadPage,
    WorkingMemoryError,
)
from .working import TOOL_NAME as WORKING_MEMORY_TOOL_NAME

__all__ = [
    "ClonedThread", "Embedder", "LanceDBStore", "Memory", "MemoryContext", "MemoryOptions", "MemoryProcessor",
    "MemoryStoreError", "Message", "OpenAIEmbedder", "ReadOnlyMemoryError", "RecallResult", "SearchHit",
    "SemanticRecallOptions", "Thread", "ThreadNotFoundError", "ThreadOwnerError", "ThreadPage", "TokenLimiter",
    "ToolCallFilter", "WORKING_MEMORY_TOOL_NAME", "WordLlamaEmbedder", "WorkingMemoryError", "WorkingMemoryOptions",
    "estimate_tokens", "resolve_embedder",
]
