"""Anthropic Messages API backend (streaming, tool use), via the official ``anthropic`` SDK.

Honours ``ANTHROPIC_BASE_URL`` through ``base_url`` so tests and proxies can stand in for the
API.  Streaming format: https://docs.anthropic.com/en/api/messages-streaming — text arrives as
``text`` events, a ``tool_use`` block is complete (its input JSON parsed) at its
``content_block_stop`` event.
"""

from __future__ import annotations

from typing import Any

import anthropic

from agent.config import DEFAULT_ANTHROPIC_MODEL
from agent.llm.base import Completion, LLMBackend, LLMError, LLMRequest, TextDelta, ToolUse
from wire.route_reasons import ROUTE_REASON_HEADER

# Models whose thinking cannot be turned off (platform.claude.com, "Thinking": Opus 5.5 and
# Fable 5.1 always think adaptively).  Every other model is sent ``thinking: disabled``:
# Haiku 5.5 thinks by default, thinking tokens count against ``max_tokens``, and the tool loop
# does not carry thinking blocks between steps, which the API requires once thinking is on.
ALWAYS_THINKING = ("claude-opus-5-5", "claude-fable-5-1")

# Status codes worth retrying, per Anthropic's error docs (429 rate limit, 529 overloaded, 5xx).
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}


class AnthropicBackend(LLMBackend):
    """Claude through the Messages API.

    Args:
        api_key: the Anthropic API key.
        base_url: API endpoint, or None for the SDK default.
        model: model id; default ``DEFAULT_ANTHROPIC_MODEL`` (Claude Haiku 5.5).
        timeout: seconds for the whole request.
    """

    name = "anthropic"
    supports_tools = True
    supports_images = True  # every current Claude model has vision (docs: build-with-claude/vision)
    context_window = 200_000

    def __init__(self, api_key: str, base_url: str | None = None, model: str | None = None,
                 timeout: float = 120.0):
        self.model = model or DEFAULT_ANTHROPIC_MODEL
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout,
                                          max_retries=0)

    def stream(self, request: LLMRequest):
        """See ``LLMBackend.stream``."""
        kwargs: dict[str, Any] = {"model": request.model or self.model, "max_tokens": request.max_tokens,
                  "system": request.system, "messages": request.messages}
        if request.tools:
            kwargs["tools"] = request.tools
        if not kwargs["model"].startswith(ALWAYS_THINKING):
            kwargs["thinking"] = {"type": "disabled"}
        if request.route_reason:
            kwargs["extra_headers"] = {ROUTE_REASON_HEADER: request.route_reason}
        tool_uses: list[ToolUse] = []
        try:
            with self.client.messages.stream(**kwargs) as stream:
                for event in stream:
                    if event.type == "text":
                        yield TextDelta(event.text)
                    elif event.type == "content_block_stop" and event.content_block.type == "tool_use":
                        block = event.content_block
                        use = ToolUse(id=block.id, name=block.name, input=dict(block.input or {}))
                        tool_uses.append(use)
                        yield use
                final = stream.get_final_message()
        except anthropic.APIStatusError as exc:
            raise LLMError(f"anthropic API error {exc.status_code}: {exc.message}",
                           retryable=exc.status_code in RETRYABLE_STATUS) from exc
        except anthropic.APIConnectionError as exc:
            raise LLMError(f"anthropic API unreachable: {exc}", retryable=True) from exc
        except anthropic.APIError as exc:
            # An ``error`` event inside a 200 stream (e.g. overloaded mid-stream).
            raise LLMError(f"anthropic stream error: {exc}", retryable=True) from exc
        text = "".join(block.text for block in final.content if block.type == "text")
        return Completion(
            text=text,
            model=final.model,
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            stop_reason=final.stop_reason or "",
            tool_uses=tuple(tool_uses),
        )
