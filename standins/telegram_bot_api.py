"""A local Telegram Bot API stand-in for tests and ``hermes demo``.

Speaks the Bot API wire format (https://core.telegram.org/bots/api#making-requests): POST
``/bot<token>/<method>`` with a JSON body, answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ..., "parameters": {"retry_after": N}}``.
It keeps each chat's messages so tests can read what a user would see.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class BotApiCall:
    """One recorded request: method name, JSON params and monotonic arrival time (seconds)."""

    method: str
    params: dict
    at: float


@dataclass
class ChatMessage:
    """A message the bot sent, as the user sees it now (``edits`` counts editMessageText calls)."""

    message_id: int
    chat_id: str
    text: str
    edits: int = 0
    history: list = field(default_factory=list)


class TelegramBotApiStandin:
    """Threaded HTTP server on 127.0.0.1 that behaves like the Bot API for one bot.

    Args:
        token: the bot token requests must carry.
        username: the bot's username (``getMe``).
    """

    def __init__(self, token: str = "123456:TEST", username: str = "HermesMaxBot"):
        self.token = token
        self.username = username
        self.calls: list[BotApiCall] = []
        self.messages: dict[int, ChatMessage] = {}
        self._next_id = 1000
        self._rate_limits: list[float] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """The API base to use as ``TELEGRAM_API_BASE``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "TelegramBotApiStandin":
        """Start serving on a free port; returns self."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body = standin._dispatch(self.path, raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="telegram-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def rate_limit_next(self, retry_after: float, times: int = 1) -> None:
        """Answer the next ``times`` send/edit calls with 429 and ``retry_after`` seconds."""
        with self._lock:
            self._rate_limits.extend([retry_after] * times)

    def chat_messages(self, chat_id: str | int) -> list[ChatMessage]:
        """Return the bot's messages in a chat, oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.chat_id == str(chat_id)]

    def calls_for(self, method: str) -> list[BotApiCall]:
        """Return the recorded calls of ``method``."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Block until ``predicate(self)`` is true or ``timeout`` seconds pass; return the outcome."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.2))
        return True

    def _dispatch(self, path: str, raw: bytes) -> tuple[int, dict]:
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = path[len(prefix):]
        try:
            params = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid JSON"}
        with self._changed:
            self.calls.append(BotApiCall(method, params, time.monotonic()))
            handler = self._HANDLERS.get(method)
            if handler is None:
                result = (404, {"ok": False, "error_code": 404, "description": "Not Found"})
            elif method in ("sendMessage", "editMessageText") and self._rate_limits:
                wait = self._rate_limits.pop(0)
                result = (429, {"ok": False, "error_code": 429,
                                "description": f"Too Many Requests: retry after {int(wait)}",
                                "parameters": {"retry_after": wait}})
            else:
                result = handler(self, params)
            self._changed.notify_all()
            return result

    def _send_message(self, params: dict) -> tuple[int, dict]:
        if not params.get("text"):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        self._next_id += 1
        msg = ChatMessage(self._next_id, str(params["chat_id"]), params["text"])
        msg.history.append(params["text"])
        self.messages[msg.message_id] = msg
        return 200, {"ok": True, "result": self._message_json(msg)}

    def _edit_message_text(self, params: dict) -> tuple[int, dict]:
        msg = self.messages.get(int(params.get("message_id") or 0))
        if msg is None or msg.chat_id != str(params.get("chat_id")):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
        if msg.text == params.get("text"):
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: message is not modified: specified new message "
                                        "content and reply markup are exactly the same as a current "
                                        "content and reply markup of the message"}
        msg.text = params["text"]
        msg.edits += 1
        msg.history.append(params["text"])
        return 200, {"ok": True, "result": self._message_json(msg)}

    def _message_json(self, msg: ChatMessage) -> dict:
        return {"message_id": msg.message_id, "date": int(time.time()),
                "chat": {"id": int(msg.chat_id), "type": "private"},
                "from": {"id": int(self.token.split(":")[0]), "is_bot": True,
                         "first_name": "Hermes", "username": self.username},
                "text": msg.text}

    def _true(self, params: dict) -> tuple[int, dict]:
        return 200, {"ok": True, "result": True}

    def _get_me(self, params: dict) -> tuple[int, dict]:
        return 200, {"ok": True, "result": {"id": int(self.token.split(":")[0]), "is_bot": True,
                                            "first_name": "Hermes", "username": self.username}}

    _HANDLERS = {
        "sendMessage": _send_message,
        "editMessageText": _edit_message_text,
        "sendChatAction": _true,
        "setWebhook": _true,
        "getMe": _get_me,
    }
