"""A local stand-in for the Anthropic Messages API (``POST /v1/messages``), for tests and demos.

It speaks the real wire format: server-sent events for ``"stream": true`` (``message_start``,
``content_block_start`` for text and ``tool_use`` blocks, ``ping``, ``content_block_delta`` with
``text_delta`` / ``input_json_delta``, ``content_block_stop``, ``message_delta`` carrying
``stop_reason`` and output ``usage``, ``message_stop``) and one JSON ``message`` object otherwise;
errors are the documented JSON body ``{"type": "error", "error": {"type", "message"}}`` with the
matching HTTP status (429 ``rate_limit_error``, 500 ``api_error``, 529 ``overloaded_error``, ...).
Sources: https://docs.anthropic.com/en/api/messages-streaming and
https://docs.anthropic.com/en/api/errors.

Usage::

    with AnthropicStandin() as api:                  # starts on 127.0.0.1, a free port
        api.script([tool_reply(("get_time", {})), text_reply("It is noon.")])
        backend = AnthropicBackend(api_key="test", base_url=api.base_url)
        ...
        api.requests[0]["json"]["messages"]          # what the client sent

Responses are taken from the script in order; when it is empty the ``responder`` callable
(``request_json -> Reply``) answers, by default echoing the last user text.

``GET /v1/models`` lists ``STANDIN_MODELS`` (the LLM gateway's health probe calls it).

Image content blocks (https://docs.anthropic.com/en/docs/build-with-claude/vision) are checked
as the API checks them — base64 source, a JPEG/PNG/GIF/WebP ``media_type`` that matches the
bytes, at most 5 MB of base64 — and refused with a 400 ``invalid_request_error`` otherwise;
``image_blocks(request_json)`` lists the ones a request carried.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standins.scripted_server import ScriptedServer, send_json

STANDIN_MODELS = ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-haiku-4-5")
"""What ``GET /v1/models`` lists."""

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}


@dataclass
class Reply:
    """One scripted answer.

    Attributes:
        text: assistant text (streamed in ``chunk`` sized pieces).
        tool_calls: ``[(name, input_dict)]`` or ``[(name, input_dict, id)]`` tool_use blocks,
            sent after the text.
        status: HTTP status; anything but 200 sends the error body instead of a message.
        error_type: error ``type`` (default from ``ERROR_TYPES``).
        input_tokens, output_tokens: the usage reported (default: rough counts, 4 chars/token).
        delay: seconds to wait before answering (to test timeouts and /stop).
        chunk: characters per ``text_delta``.
        chunk_delay: seconds between ``text_delta`` events (a slow stream, e.g. to test /stop).
        model: the model id reported (default: the requested one).
    """

    text: str = ""
    tool_calls: list[tuple] = field(default_factory=list)
    status: int = 200
    error_type: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    delay: float = 0.0
    chunk: int = 8
    chunk_delay: float = 0.0
    model: str | None = None


def text_reply(text: str, **kwargs) -> Reply:
    """Return a ``Reply`` answering with ``text`` (``end_turn``)."""
    return Reply(text=text, **kwargs)


def tool_reply(*calls: tuple, text: str = "", **kwargs) -> Reply:
    """Return a ``Reply`` asking for the tool ``calls`` (``(name, input)`` tuples; ``tool_use``)."""
    return Reply(text=text, tool_calls=list(calls), **kwargs)


def error_reply(status: int, message: str | None = None, error_type: str | None = None) -> Reply:
    """Return a ``Reply`` failing with HTTP ``status`` and the real error body."""
    return Reply(status=status, error_type=error_type, text=message or f"stand-in error {status}")


def echo_responder(request: dict) -> Reply:
    """Default responder: answer ``echo: <last user text>``."""
    return text_reply(f"echo: {last_user_text(request)}")


def last_user_text(request: dict) -> str:
    """Return the text of the last user message of a Messages API request body."""
    for message in reversed(request.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return "\n".join(texts)
    return ""


IMAGE_TYPES = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",),
               "image/gif": (b"GIF87a", b"GIF89a"), "image/webp": (b"RIFF",)}
IMAGE_MAX_BASE64 = 5 * 1024 * 1024


def image_blocks(request: dict) -> list[dict]:
    """Return every ``image`` content block of a Messages API request body, in order."""
    return [block for message in request.get("messages", []) if isinstance(message.get("content"), list)
            for block in message["content"] if block.get("type") == "image"]


def _image_problem(request: dict) -> str | None:
    """Return the API's complaint about the first bad image block, or None when all are fine."""
    for block in image_blocks(request):
        source = block.get("source") or {}
        if source.get("type") != "base64":
            return "image.source.type: Input should be 'base64'"
        media_type, data = source.get("media_type"), source.get("data") or ""
        if media_type not in IMAGE_TYPES:
            return ("image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                    "'image/gif' or 'image/webp'")
        if len(data) > IMAGE_MAX_BASE64:
            return f"image exceeds 5 MB maximum: {len(data)} bytes > {IMAGE_MAX_BASE64} bytes"
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            return "image.source.base64.data: invalid base64 data"
        if not raw.startswith(IMAGE_TYPES[media_type]):
            return f"Image does not match the provided media type {media_type}"
    return None


def _estimate_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


class AnthropicStandin(ScriptedServer):
    """Threaded HTTP server answering ``POST /v1/messages`` (see ``ScriptedServer``).

    Args:
        responder: ``request_json -> Reply`` used when the script is empty.
        host: bind address (loopback).
    """

    thread_name = "anthropic-standin"
    make_reply = staticmethod(text_reply)

    def __init__(self, responder: Callable[[dict], Reply] = echo_responder, host: str = "127.0.0.1"):
        super().__init__(responder, host)
        self._ids = itertools.count(1)

    def _tool_id(self) -> str:
        return f"toolu_{next(self._ids):04d}{uuid.uuid4().hex[:20]}"


class _MessagesHandler(http.server.BaseHTTPRequestHandler):
    owner: AnthropicStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Silence the default per-request stderr log."""

    def do_GET(self) -> None:
        """``GET /v1/models`` (https://docs.anthropic.com/en/api/models-list): the models this
        stand-in prices, as one page; a missing key is 401 like the API's."""
        if self.path.split("?")[0] != "/v1/models":
            self._error(404, "not_found_error", f"no route {self.path}")
            return
        if not self.headers.get("x-api-key"):
            self._error(401, "authentication_error", "x-api-key header is required")
            return
        models = [{"type": "model", "id": model, "display_name": model,
                   "created_at": "2025-10-01T00:00:00Z"} for model in STANDIN_MODELS]
        send_json(self, 200, {"data": models, "has_more": False, "first_id": models[0]["id"],
                              "last_id": models[-1]["id"]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "invalid_request_error", "body is not JSON")
            return
        self.owner.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
        if not self.path.startswith("/v1/messages"):
            self._error(404, "not_found_error", f"no route {self.path}")
            return
        problem = _image_problem(body)
        if problem is not None:
            self._error(400, "invalid_request_error", problem)
            return
        reply = self.owner._next_reply(body)
        if reply.delay:
            threading.Event().wait(reply.delay)
        if reply.status != 200:
            self._error(reply.status, reply.error_type or ERROR_TYPES.get(reply.status, "api_error"),
                        reply.text)
            return
        message = self._message(body, reply)
        if body.get("stream"):
            self._stream(message, reply)
        else:
            self._send_json(200, message)

    def _message(self, body: dict, reply: Reply) -> dict:
        content: list[dict] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            name, tool_input = call[0], call[1]
            tool_id = call[2] if len(call) > 2 else self.owner._tool_id()
            content.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        input_tokens = reply.input_tokens
        if input_tokens is None:
            input_tokens = _estimate_tokens([body.get("system"), body.get("messages")])
        output_tokens = reply.output_tokens if reply.output_tokens is not None else _estimate_tokens(content)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": reply.model or body.get("model", "claude-haiku-5-5"), "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }

    def _stream(self, message: dict, reply: Reply) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}}
        self._event("message_start", {"type": "message_start", "message": start})
        self._event("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            self._block(index, block, reply)
        self._event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        })
        self._event("message_stop", {"type": "message_stop"})
        self.close_connection = True

    def _block(self, index: int, block: dict, reply: Reply) -> None:
        chunk = reply.chunk
        if block["type"] == "text":
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "text", "text": ""}})
            text = block["text"]
            for i in range(0, len(text), max(1, chunk)):
                if reply.chunk_delay and i:
                    threading.Event().wait(reply.chunk_delay)
                self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "text_delta", "text": text[i:i + chunk]}})
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": start})
            raw = json.dumps(block["input"])
            for i in range(0, len(raw), 16):
                self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "input_json_delta",
                                                              "partial_json": raw[i:i + 16]}})
        self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _event(self, name: str, data: dict) -> None:
        try:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client hung up (e.g. /stop)
            self.close_connection = True

    def _error(self, status: int, error_type: str, message: str) -> None:
        self._send_json(status, {"type": "error", "error": {"type": error_type, "message": message}})

    def _send_json(self, status: int, payload: dict) -> None:
        headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
        if status in (429, 529):
            headers["retry-after"] = "0"
        send_json(self, status, payload, headers)


AnthropicStandin.handler_class = _MessagesHandler
