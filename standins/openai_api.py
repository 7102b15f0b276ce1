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

``GET /v1/models`` lists ``default`` and the transcription models (the LLM gateway's health
probe calls it).  It also answers ``POST /v1/audio/transcriptions`` (the Whisper API,
https://platform.openai.com/docs/api-reference/audio/createTranscription): a multipart form with
``file`` and ``model``; ``{"text": ...}`` (or the bare text for ``response_format=text``).  It
checks what the real API checks — a known model (404 ``model_not_found``), a file (400), a
supported format by extension, with bytes that look like that format (400), at most 25 MB
(413) — and answers deterministically: ``transcripts[sha256 of the audio]``, else
``default_transcript``.  ``script_transcriptions([str | Reply])`` queues answers (a ``Reply``
with an error status fails); every request is recorded in ``transcriptions``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import time
import uuid

from standins.anthropic_api import Reply, last_user_text, text_reply
from standins.scripted_server import ScriptedServer, send_json

TRANSCRIBE_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
TRANSCRIBE_MAX_BYTES = 25 * 1024 * 1024
# The formats the API lists in its "Invalid file format" error, and the signatures their bytes
# start with (Ogg ``OggS``, RIFF WAVE, FLAC ``fLaC``, EBML for WebM, MP3 ID3 tag or frame sync,
# ISO BMFF ``ftyp`` at offset 4 for MP4/M4A).
TRANSCRIBE_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_SIGNATURES = {"ogg": (b"OggS",), "oga": (b"OggS",), "wav": (b"RIFF",), "flac": (b"fLaC",),
               "webm": (b"\x1a\x45\xdf\xa3",), "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
               "mpga": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
               "mpeg": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")}


def _looks_like(extension: str, data: bytes) -> bool:
    if extension in ("mp4", "m4a"):
        return data[4:8] == b"ftyp"
    return data.startswith(_SIGNATURES.get(extension, (b"",)))


def _form(content_type: str, raw: bytes) -> dict[str, dict]:
    """Parse a ``multipart/form-data`` body (RFC 7578): ``{field: {"value": bytes, "filename",
    "type"}}``; ``{}`` for any other body.  Split on the boundary, not through ``email``, whose
    parser costs ~100 ms per MB and would blur the benchmark of our side."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or boundary is None:
        return {}
    fields = {}
    for part in raw.split(b"--" + boundary.group(1).encode())[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = head.decode("latin-1")
        name = re.search(r';\s*name="([^"]*)"', headers)
        filename = re.search(r';\s*filename="([^"]*)"', headers)
        kind = re.search(r"(?im)^content-type:\s*([^\r\n;]+)", headers)
        if name is not None:
            fields[name.group(1)] = {"value": value.removesuffix(b"\r\n"),
                                     "filename": filename.group(1) if filename else None,
                                     "type": kind.group(1).strip() if kind else "text/plain"}
    return fields


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
        self.transcripts: dict[str, str] = {}
        self.default_transcript = "This is a voice note."
        self.transcriptions: list[dict] = []
        self._transcription_script: list = []

    def script_transcriptions(self, replies: list) -> None:
        """Queue transcription answers: a ``str`` is the transcript, a ``Reply`` with an error
        ``status`` fails with the OpenAI error body."""
        with self._lock:
            self._transcription_script.extend(replies)

    def _next_transcription(self, sha256: str):
        with self._lock:
            if self._transcription_script:
                return self._transcription_script.pop(0)
        return self.transcripts.get(sha256, self.default_transcript)


class _CompletionsHandler(http.server.BaseHTTPRequestHandler):
    owner: OpenAIStandin
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms on Linux) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        """Silence the default per-request stderr log."""

    def do_GET(self) -> None:
        """``GET /v1/models`` (https://platform.openai.com/docs/api-reference/models/list): the
        transcription models and ``default``, as a list object."""
        if self.path.split("?")[0] != "/v1/models":
            send_json(self, 404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                            "code": None}})
            return
        send_json(self, 200, {"object": "list", "data": [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": "standin"}
            for model in ("default", *sorted(TRANSCRIBE_MODELS))]})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.split("?")[0] == "/v1/audio/transcriptions":
            self._transcribe(raw)
            return
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

    def _transcribe(self, raw: bytes) -> None:
        form = _form(self.headers.get("Content-Type", ""), raw)
        fields = {k: v["value"].decode(errors="replace") for k, v in form.items() if k != "file"}
        upload = form.get("file")
        data = upload["value"] if upload else b""
        record = {"path": self.path, "headers": dict(self.headers), "fields": fields,
                  "filename": upload["filename"] if upload else None,
                  "content_type": upload["type"] if upload else None,
                  "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.owner.transcriptions.append(record)
        model = fields.get("model", "")
        extension = os.path.splitext((upload or {}).get("filename") or "")[1].lstrip(".").lower()
        if upload is None or not upload["filename"]:
            self._error(400, "1 validation error for Request\nbody -> file\n  field required "
                             "(type=value_error.missing)", param="file")
        elif model not in TRANSCRIBE_MODELS:
            self._error(404, f"The model `{model}` does not exist or you do not have access to it.",
                        code="model_not_found")
        elif len(data) > TRANSCRIBE_MAX_BYTES:
            self._error(413, f"Maximum content size limit ({TRANSCRIBE_MAX_BYTES}) exceeded "
                             f"({len(data)} bytes read)")
        elif extension not in TRANSCRIBE_FORMATS:
            self._error(400, f"Invalid file format. Supported formats: {list(TRANSCRIBE_FORMATS)}",
                        param="file")
        elif not _looks_like(extension, data):
            self._error(400, "Audio file might be corrupted or unsupported", param="file")
        else:
            answer = self.owner._next_transcription(record["sha256"])
            if isinstance(answer, Reply):
                kind = answer.error_type or ("rate_limit_exceeded" if answer.status == 429
                                             else "server_error")
                self._error(answer.status, answer.text, kind=kind, code=kind)
            elif fields.get("response_format") == "text":
                body = answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._json(200, {"text": answer})

    def _error(self, status: int, message: str, *, kind: str = "invalid_request_error",
               param: str | None = None, code: str | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "param": param,
                                      "code": code}})

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
