"""OpenAI-compatible Chat Completions backend (OpenRouter, Ollama ``/v1``, vLLM, llama.cpp server).

Uses the official ``openai`` SDK with ``base_url``.  Messages in the internal (Anthropic) shape
are translated: ``tool_use`` blocks become ``tool_calls`` of the assistant message,
``tool_result`` blocks become ``role: tool`` messages and ``image`` blocks become ``image_url``
content parts with a ``data:`` URL
(https://platform.openai.com/docs/guides/images-vision, "Passing a Base64 encoded image"); the
router sends images only when the backend is configured as vision-capable.  Streaming format:
https://platform.openai.com/docs/api-reference/chat/streaming — tool-call arguments arrive as
string fragments per ``index``; usage arrives in a last chunk with no choices when
``stream_options.include_usage`` is set.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from agent.llm.base import (
    Completion,
    LLMBackend,
    LLMError,
    LLMRequest,
    TextDelta,
    ToolUse,
    content_text,
)
from wire.route_reasons import ROUTE_REASON_HEADER

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}


def to_openai_messages(system: str, messages: list[dict]) -> list[dict]:
    """Translate internal messages to Chat Completions messages (system first)."""
    out: list[dict] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        if message["role"] == "assistant":
            text = "".join(b["text"] for b in content if b["type"] == "text")
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": json.dumps(b["input"])}}
                     for b in content if b["type"] == "tool_use"]
            entry: dict = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        for block in content:
            if block["type"] == "tool_result":
                inner = block.get("content", "")
                text = inner if isinstance(inner, str) else content_text(inner)
                out.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": ("ERROR: " + text) if block.get("is_error") else text})
        texts = [b["text"] for b in content if b["type"] == "text"]
        if any(b["type"] == "image" for b in content):
            out.append({"role": "user", "content": [_part(b) for b in content
                                                    if b["type"] in ("text", "image")]})
        elif texts:
            out.append({"role": "user", "content": "\n".join(texts)})
    return out


def _part(block: dict) -> dict:
    """A Chat Completions user content part for a ``text`` or base64 ``image`` block."""
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    source = block["source"]
    return {"type": "image_url",
            "image_url": {"url": f"data:{source['media_type']};base64,{source['data']}"}}


def to_openai_tools(tools: list[dict]) -> list[dict]:
    """Translate internal tool definitions to Chat Completions ``function`` tools."""
    return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["input_schema"]}} for t in tools]


class OpenAICompatBackend(LLMBackend):
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``https://openrouter.ai/api/v1`` or ``http://localhost:11434/v1``.
        api_key: bearer key; keyless servers (Ollama, llama.cpp) get a placeholder.
        model: model id as the server names it.
        timeout: seconds for the whole request.
        supports_tools: False for servers/models without function calling.
        supports_images: True for a vision model (``HERMES_OPENAI_VISION``); the server cannot
            tell us, and a text-only model would answer an image with an error or a guess.
        context_window: tokens the model accepts.
    """

    name = "openai_compat"

    def __init__(self, base_url: str, api_key: str = "", model: str = "", timeout: float = 120.0,
                 supports_tools: bool = True, context_window: int = 128_000,
                 supports_images: bool = False):
        self.model = model or "default"
        self.supports_tools = supports_tools
        self.supports_images = supports_images
        self.context_window = context_window
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed",
                                    timeout=timeout, max_retries=0)

    def stream(self, request: LLMRequest):
        """See ``LLMBackend.stream``."""
        kwargs: dict[str, Any] = {"model": request.model or self.model, "max_tokens": request.max_tokens,
                  "messages": to_openai_messages(request.system, request.messages),
                  "stream": True, "stream_options": {"include_usage": True}}
        if request.tools and self.supports_tools:
            kwargs["tools"] = to_openai_tools(request.tools)
        if request.route_reason:
            kwargs["extra_headers"] = {ROUTE_REASON_HEADER: request.route_reason}
        parts: list[str] = []
        calls: dict[int, dict] = {}
        usage = None
        finish = ""
        model = kwargs["model"]
        try:
            for chunk in self.client.chat.completions.create(**kwargs):
                model = chunk.model or model
                usage = chunk.usage or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                delta = choice.delta
                if delta.content:
                    parts.append(delta.content)
                    yield TextDelta(delta.content)
                for call in delta.tool_calls or ():
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = call.id or slot["id"]
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
        except openai.APIStatusError as exc:
            raise LLMError(f"openai-compatible API error {exc.status_code}: {exc.message}",
                           retryable=exc.status_code in RETRYABLE_STATUS) from exc
        except openai.APIConnectionError as exc:
            raise LLMError(f"openai-compatible API unreachable: {exc}", retryable=True) from exc
        tool_uses = []
        for index in sorted(calls):
            slot = calls[index]
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except ValueError:
                arguments = {"_unparsed": slot["arguments"]}
            use = ToolUse(id=slot["id"] or f"call_{index}", name=slot["name"], input=arguments)
            tool_uses.append(use)
            yield use
        return Completion(
            text="".join(parts), model=model,
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            stop_reason={"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}.get(finish, finish),
            tool_uses=tuple(tool_uses),
        )
