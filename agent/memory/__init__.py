"""Long-term memory: SQLite store with hybrid (vector + keyword) retrieval, decay and extraction.

Public API: ``MemoryStore(path)`` with ``add``, ``search``, ``forget``, ``remember``,
``forget_matching``, ``list_recent``; ``extract_memories``; the ``Embedder`` interface with
``LocalEmbedder`` and ``OpenAICompatibleEmbedder``; ``MemoryRejected``.
"""

from agent.memory.embedders import (
    Embedder,
    LocalEmbedder,
    OpenAICompatibleEmbedder,
    default_embedder,
)
from agent.memory.errors import EmbedderMismatch, MemoryRejected, MemoryStoreError
from agent.memory.extraction import extract_memories, parse_memories
from agent.memory.guard import injection_reason, looks_like_instruction
from agent.memory.ranking import RetrievalConfig
from agent.memory.store import DUPLICATE_SIMILARITY, MemoryItem, MemoryStore

__all__ = [
    "DUPLICATE_SIMILARITY", "Embedder", "EmbedderMismatch", "LocalEmbedder", "MemoryItem",
    "MemoryRejected", "MemoryStore", "MemoryStoreError", "OpenAICompatibleEmbedder", "RetrievalConfig",
    "default_embedder", "extract_memories", "injection_reason", "looks_like_instruction", "parse_memories",
]
