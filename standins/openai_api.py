"""A local stand-in for an OpenAI-compatible Chat Completions API (``POST /v1/chat/completions``),
as served by OpenRouter, Ollama (``/v1``), vLLM and the llama.cpp server.

Streaming follows https://platform.openai.com/docs/api-reference/chat/streaming: ``data:`` lines
carrying ``chat.completion.chunk`` objects (role first, then ``content`` pieces, ``tool_calls``
with an ``index``, ``id`` and ``function.name`` in the first fragment and ``arguments`` split
over later ones, a chunk with ``finish_reason``, a usage chunk with empty ``choices`` when
``stream_options.include_usage`` is set) and ``data: [DONE]``.  Errors use the documented body
``{"error": {"message", "type", "code"}}``.

Scripting mirrors ``standins.anthropic_api``: ``script([Reply | str])``, a ``responder``
fallback, ``requests``, ``start()``/``stop()`` or a ``with`` block.
"""

from __future__ import annotations

import http.server
import json
import time
import uuid

from standins.anthropic_api import Reply, last_user_text, text_reply
from standins.scripted_server import ScriptedServer, send_json


def _last_user_text(body: dict) -> str:
    return last_user_text({"messages": [m for m in body.get("messages", []) if m.get("role") == "user"]})


def echo_responder(body: dict) -> Reply:
    """Default responder: ``echo: <last user text>``."""
    return text_reply(f"echo: {_last_user_text(body)}")


class OpenAIStandin(ScriptedServer):
    """Threaded HTTP server answering ``POST /v1/chat/completions`` (see ``ScriptedServer``);
    ``base_url`` ends in ``/v1`` as the ``openai`` SDK expects.

    Args:
        responder: ``request_json -> Reply`` used when the script is empty.
        host: bind address (loopback).
    """

    thread_name = "openai-standin"
    base_path = "/v1"
    make_reply = staticmethod(text_reply)

    def __init__(self, responder=echo_responder, host: str = "127.0.0.1"):
        super().__init__(responder, host)


class _CompletionsHandler(http.server.BaseHTTPRequestHandler):
    owner: OpenAIStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Silence the default per-request stderr log."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error",
                                       "code": None}})
            return
        self.owner.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
        reply = self.owner._next_reply(body)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            kind = reply.error_type or ("rate_limit_exceeded" if reply.status == 429 else "server_error")
            self._json(reply.status, {"error": {"message": reply.text, "type": kind, "code": kind}})
            return
        calls = [{"id": c[2] if len(c) > 2 else f"call_{uuid.uuid4().hex[:12]}", "name": c[0],
                  "arguments": json.dumps(c[1])} for c in reply.tool_calls]
        usage = {"prompt_tokens": reply.input_tokens or max(1, len(json.dumps(body.get("messages"))) // 4),
                 "completion_tokens": reply.output_tokens or max(1, len(reply.text) // 4 + 10 * len(calls))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = "tool_calls" if calls else "stop"
        model = reply.model or body.get("model", "default")
        if body.get("stream"):
            self._stream(body, reply, calls, usage, finish, model)
            return
        message = {"role": "assistant", "content": reply.text or None}
        if calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function",
                                      "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        self._json(200, {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                         "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})

    def _stream(self, body, reply, calls, usage, finish, model) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def chunk(delta, finish_reason=None):
            self._data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

        chunk({"role": "assistant", "content": ""})
        for i in range(0, len(reply.text), max(1, reply.chunk)):
            chunk({"content": reply.text[i:i + reply.chunk]})
        for index, call in enumerate(calls):
            chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": call["name"], "arguments": ""}}]})
            for i in range(0, len(call["arguments"]), 10):
                chunk({"tool_calls": [{"index": index, "function": {"arguments": call["arguments"][i:i + 10]}}]})
        chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            self._data({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _data(self, payload: dict) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, payload: dict) -> None:
        send_json(self, status, payload)


OpenAIStandin.handler_class = _CompletionsHandler
