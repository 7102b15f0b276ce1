"""Errors raised by the memory store."""


class MemoryStoreError(Exception):
    """Base class of every memory-store error."""


class MemoryRejected(MemoryStoreError, ValueError):
    """Text was refused as a memory because it reads like an instruction to the agent.

    Carries ``text`` (the refused text) and ``reason`` (the rule that matched), so a
    command handler can tell the user why nothing was stored.
    """

    def __init__(self, text: str, reason: str):
        super().__init__(f"not stored as a memory: it looks like an instruction to the agent ({reason})")
        self.text = text
        self.reason = reason


class EmbedderMismatch(MemoryStoreError):
    """The database was built with a different embedder (name or dimension) than the one given."""
