"""The LLM interface every backend implements: a streaming chat turn with tool use.

Messages and tools use the Anthropic Messages API shapes as the one internal format
(https://docs.anthropic.com/en/api/messages): a message is ``{"role", "content"}`` where
``content`` is a string or a list of content blocks (``text``, ``image``, ``tool_use``,
``tool_result``); a tool is ``{"name", "description", "input_schema"}``.  Backends for other
APIs translate.  An ``image`` block (``{"type": "image", "source": {"type": "base64",
"media_type", "data"}}``, https://docs.anthropic.com/en/docs/build-with-claude/vision) reaches
only a backend with ``supports_images``; the router replaces it with a text note for the others.

A backend's ``stream`` yields ``TextDelta`` pieces and ``ToolUse`` requests in order and returns
a final ``Completion`` (``StopIteration.value``) carrying token counts for cost accounting.
"""

from __future__ import annotations

import abc
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any


class LLMError(Exception):
    """A backend failed to produce a reply.

    Attributes:
        retryable: True for rate limits, overload and 5xx (worth retrying or failing over).
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class BudgetExhausted(LLMError):
    """The tenant's daily budget is spent and no free backend is configured.

    ``str(exc)`` is a message meant for the user.
    """


@dataclass(frozen=True)
class LLMRequest:
    """One model call.

    Attributes:
        system: the system prompt.
        messages: the conversation, ``[{"role": "user"|"assistant", "content": str | blocks}]``,
            ending with a user message.
        max_tokens: upper bound on output tokens.
        tools: tool definitions ``{"name", "description", "input_schema"}``; empty = no tools.
        model: a model id overriding the backend's default (the tenant's ``/model`` choice).
        route_reason: why the router chose this backend (``wire.route_reasons``), sent to the
            LLM gateway in ``ROUTE_REASON_HEADER``; empty = none sent.
    """

    system: str
    messages: list[dict] = field(default_factory=list)
    max_tokens: int = 1024
    tools: list[dict] = field(default_factory=list)
    model: str | None = None
    route_reason: str = ""


@dataclass(frozen=True)
class TextDelta:
    """A piece of reply text, in order."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """The model asks to call tool ``name`` with ``input`` (a JSON object); ``id`` pairs the result."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Notice:
    """A note for the user from the router (e.g. budget spent, answering with the local model)."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The finished reply of one call.

    Attributes:
        text: the whole reply text.
        model: the model that produced it.
        input_tokens, output_tokens: token counts as the backend reports them.
        stop_reason: why generation stopped (``end_turn``, ``tool_use``, ``max_tokens``...).
        tool_uses: the tool calls requested, in order.
        backend: name of the backend that answered (set by the router).
        cost_cents: cost of the call in US cents (set by the router).
        latency_ms: wall time of the call in milliseconds (set by the router).
    """

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str = ""
    tool_uses: tuple[ToolUse, ...] = ()
    backend: str = ""
    cost_cents: float = 0.0
    latency_ms: int = 0

    @property
    def content(self) -> list[dict]:
        """The assistant message's content blocks (text first, then tool_use blocks)."""
        blocks: list[dict] = [{"type": "text", "text": self.text}] if self.text else []
        blocks += [{"type": "tool_use", "id": t.id, "name": t.name, "input": t.input}
                   for t in self.tool_uses]
        return blocks


class LLMBackend(abc.ABC):
    """A streaming chat model.

    Attributes:
        name: backend kind (``anthropic``, ``openai_compat``, ``local``).
        model: default model id.
        supports_tools: whether the backend can really call tools; the loop sends no tools
            to one that cannot (it then just answers in text).
        supports_images: whether the model can see ``image`` blocks (vision).
        context_window: input+output tokens the model accepts.
    """

    name: str = ""
    model: str = ""
    supports_tools: bool = True
    supports_images: bool = False
    context_window: int = 200_000

    @abc.abstractmethod
    def stream(self, request: LLMRequest) -> Generator[TextDelta | ToolUse, None, Completion]:
        """Yield the reply as ``TextDelta`` and ``ToolUse`` items and return the ``Completion``.

        Raises:
            LLMError: the backend failed (``retryable`` tells whether trying again may help).
        """


def complete_text(backend, prompt: str, *, system: str = "", max_tokens: int = 512) -> str:
    """Run one tool-less call of ``backend`` (or router) on ``prompt``; return the reply text.

    Raises:
        LLMError: the call failed.
    """
    stream = backend.stream(LLMRequest(system=system, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens))
    parts: list[str] = []
    while True:
        try:
            item = next(stream)
        except StopIteration as stop:
            return (stop.value.text if stop.value is not None else "") or "".join(parts)
        if isinstance(item, TextDelta):
            parts.append(item.text)


def content_text(content: str | list[dict]) -> str:
    """Return the plain text of a message ``content`` (string, or blocks flattened to text)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            parts.append(block["text"])
        elif kind == "tool_use":
            parts.append(f"[called tool {block['name']} with {block.get('input')}]")
        elif kind == "tool_result":
            inner = block.get("content", "")
            parts.append(f"[tool result: {content_text(inner) if not isinstance(inner, str) else inner}]")
    return "\n".join(parts)


# Replaces each image for a model that cannot see, so it neither guesses nor asks what it shows.
UNSEEN_IMAGE_NOTE = "(An image is attached here, but you cannot see it: do not describe or guess it.)"


def has_images(messages: list[dict]) -> bool:
    """Return True when any message's content holds an ``image`` block."""
    return any(isinstance(m["content"], list) and any(b.get("type") == "image" for b in m["content"])
               for m in messages)


def without_images(messages: list[dict]) -> list[dict]:
    """Return ``messages`` with every ``image`` block replaced by ``UNSEEN_IMAGE_NOTE`` text."""
    if not has_images(messages):
        return messages
    return [{**m, "content": [{"type": "text", "text": UNSEEN_IMAGE_NOTE} if b.get("type") == "image"
                              else b for b in m["content"]]} if isinstance(m["content"], list) else m
            for m in messages]


def cannot_see_notice(model: str) -> str:
    """Return the sentence that tells the user ``model`` did not look at their image."""
    return (f"(I can't see images with {model}, so I haven't looked at your image; this answer "
            "is from your words alone.)")


def cannot_see_reply(model: str) -> str:
    """Return the reply to a photo with no words when no backend can see (no model call)."""
    return (f"I can't see images with {model}, so I can't tell what's in your image. Describe "
            "it in words, or ask for a model that can see images, and I'll help.")
