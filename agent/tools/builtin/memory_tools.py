"""``memory_search`` and ``memory_remember``: the agent's long-term memory as tools.

The store is ``agent.memory.MemoryStore`` (the ``memory`` service); text that reads like an
instruction to the agent is refused by the store (``MemoryRejected``) and reported as an error.
"""

from __future__ import annotations

from agent.memory import MemoryRejected
from agent.tools.registry import ToolContext, ToolError, tool


@tool("memory_search", "Search the user's long-term memories (facts, preferences, past events). "
      "Returns the best matches with their ids.",
      {"type": "object", "properties": {"query": {"type": "string"},
                                        "k": {"type": "integer", "minimum": 1, "maximum": 20}},
       "required": ["query"]}, private=True)
def memory_search(args: dict, ctx: ToolContext) -> str:
    """Return one line per hit, ``[id] text``, or a note that nothing matched."""
    query = str(args.get("query", "")).strip()
    if not query:
        raise ToolError("query is required")
    hits = ctx.service("memory").search(query, k=int(args.get("k", 5)))
    if not hits:
        return "No memories match."
    return "\n".join(f"[{hit.id}] {hit.text}" for hit in hits)


@tool("memory_remember", "Store a durable fact or preference about the user for future "
      "conversations (one short sentence).",
      {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
def memory_remember(args: dict, ctx: ToolContext) -> str:
    """Store ``args["text"]``; return its id and whether it merged with an existing memory.

    Raises:
        ToolError: empty text, or the store refused it as instruction-like.
    """
    text = str(args.get("text", "")).strip()
    if not text:
        raise ToolError("text is required")
    try:
        memory_id, merged = ctx.service("memory").remember(text, source=f"tool:{ctx.envelope_id}")
    except MemoryRejected as exc:
        raise ToolError(str(exc)) from exc
    return f"{'Merged into' if merged else 'Stored as'} memory {memory_id}."
