"""A local Telegram Bot API stand-in for tests and ``hermes demo``.

Speaks the Bot API wire format (https://core.telegram.org/bots/api#making-requests): POST
``/bot<token>/<method>`` with a JSON body, answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ..., "parameters": {"retry_after": N}}``.
It keeps each chat's messages so tests can read what a user would see.

Message ids: by default one counter for all chats.  With ``chat_sequences=True`` each chat
has its own sequence shared by the user's and the bot's messages, as in Telegram's private
chats; ``user_message`` then records what the user sent (the bot cannot edit it).  Fault
tests use ``hold_next`` to freeze the answer to a call that Telegram already applied.

``setWebhook``/``getWebhookInfo`` and ``setMyCommands``/``getMyCommands`` keep the webhook and
the command menu (per scope and language) with the Bot API's validation, so ``hermes telegram
setup`` runs against it for real.

Files (https://core.telegram.org/bots/api#getfile): ``add_file`` makes a file known; ``getFile``
answers its File object (``file_id``, ``file_unique_id``, ``file_size``, ``file_path``), or 400
"Bad Request: invalid file_id", or 400 "Bad Request: file is too big" above 20 MB; ``GET
/file/bot<token>/<file_path>`` serves the bytes.  ``fail_downloads`` scripts error statuses,
and every download is logged in ``downloads`` with its arrival time.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

from standins.scripted_server import ApiServer, wait_notified

# Bot API limits (https://core.telegram.org/bots/api#setwebhook, #botcommand).
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")


def _bad_request(reason: str) -> tuple[int, dict]:
    return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {reason}"}


@dataclass
class BotApiCall:
    """One recorded request: method name, JSON params and monotonic arrival time (seconds)."""

    method: str
    params: dict
    at: float


# Bots may download files of at most 20 MB (Bot API, "getFile").
GETFILE_MAX_BYTES = 20 * 1024 * 1024


@dataclass
class StandinFile:
    """A file the stand-in serves: its bytes, ``file_path``, the ``Content-Type`` the file
    server answers, whether ``Content-Length`` is sent (False: the body ends at close) and
    whether ``getFile`` reports ``file_size`` (optional in the Bot API's File object)."""

    content: bytes
    file_path: str
    content_type: str = "application/octet-stream"
    announce_length: bool = True
    report_size: bool = True


@dataclass
class FileDownload:
    """One ``GET /file/...``: the file path, the answer's status, monotonic arrival (seconds)."""

    file_path: str
    status: int
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
        chat_sequences: number messages per chat (user and bot share the sequence) instead of
            with one counter for every chat.

    Attributes:
        on_call: optional ``callback(call: BotApiCall, status: int)`` run after each request
            was applied, before it is answered (benchmarks time deliveries with it).
    """

    def __init__(self, token: str = "123456:TEST", username: str = "HermesMaxBot",
                 chat_sequences: bool = False):
        self.token = token
        self.username = username
        self.chat_sequences = chat_sequences
        self.calls: list[BotApiCall] = []
        # Keyed by message id, or by (chat id, message id) with chat_sequences.
        self.messages: dict[object, ChatMessage] = {}
        self.user_messages: dict[tuple[str, int], str] = {}
        self._next_id = 1000
        self._chat_ids: dict[str, int] = {}
        self._holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self.on_call = None
        self._rate_limits: list[float] = []
        self._unusable_chats: set[str] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        # setWebhook / setMyCommands state, as getWebhookInfo / getMyCommands report it.
        self.webhook: dict = {"url": "", "allowed_updates": None, "secret_token": "",
                              "max_connections": 40}
        self.commands: dict[tuple[str, str], list[dict]] = {}
        self.files: dict[str, StandinFile] = {}
        self.downloads: list[FileDownload] = []
        self._download_failures: list[int] = []

    @property
    def base_url(self) -> str:
        """The API base to use as ``TELEGRAM_API_BASE``."""
        if self._server is None:
            raise RuntimeError("the Telegram stand-in is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> TelegramBotApiStandin:
        """Start serving on a free port; returns self."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body = standin._dispatch(self.path, raw)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the caller died (fault tests)
                    self.close_connection = True

            def do_GET(self):
                status, file = standin._download(self.path)
                try:
                    self.send_response(status)
                    if file is None:
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_header("Content-Type", file.content_type)
                    if file.announce_length:
                        self.send_header("Content-Length", str(len(file.content)))
                    else:
                        self.close_connection = True
                    self.end_headers()
                    self.wfile.write(file.content)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
                    self.close_connection = True

            def log_message(self, *args):
                return

        self._server = ApiServer(("127.0.0.1", 0), Handler)
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

    def answer_unusably(self, chat_id: str | int) -> None:
        """Answer every later ``sendMessage`` to ``chat_id`` with ``{"ok": true, "result": true}``
        and send nothing: the success shape Telegram gives an inline-message edit, which a
        caller expecting a Message object cannot use (a platform answer no error handler
        foresees)."""
        with self._lock:
            self._unusable_chats.add(str(chat_id))

    def hold_next(self, method: str) -> tuple[threading.Event, threading.Event]:
        """Apply the next ``method`` call but hold its answer until released.

        Returns:
            ``(accepted, release)``: ``accepted`` is set once the call took effect (e.g. the
            message exists); the answer is sent when the test sets ``release`` (or after 60 s).
        """
        accepted, release = threading.Event(), threading.Event()
        with self._lock:
            self._holds[method] = (accepted, release)
        return accepted, release

    def add_file(self, file_id: str, content: bytes, file_path: str | None = None,
                 content_type: str = "application/octet-stream",
                 announce_length: bool = True, report_size: bool = True) -> StandinFile:
        """Make ``file_id`` downloadable (``getFile`` + the file route); returns the file."""
        file = StandinFile(content, file_path or f"documents/file_{len(self.files)}",
                           content_type, announce_length, report_size)
        with self._lock:
            self.files[file_id] = file
        return file

    def fail_downloads(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` file downloads with HTTP ``status`` and no body."""
        with self._lock:
            self._download_failures.extend([status] * times)

    def _download(self, path: str) -> tuple[int, StandinFile | None]:
        prefix = f"/file/bot{self.token}/"
        file_path = path[len(prefix):] if path.startswith(prefix) else None
        with self._changed:
            file = next((f for f in self.files.values() if f.file_path == file_path), None)
            status = 404 if file is None else 200
            if file is not None and self._download_failures:
                status, file = self._download_failures.pop(0), None
            self.downloads.append(FileDownload(file_path or path, status, time.monotonic()))
            self._changed.notify_all()
        return status, file

    def user_message(self, chat_id: str | int, text: str) -> int:
        """Record a message the user sent to the bot in ``chat_id``; return its message id."""
        with self._changed:
            message_id = self._allocate_id(str(chat_id))
            self.user_messages[(str(chat_id), message_id)] = text
            self._changed.notify_all()
            return message_id

    def _allocate_id(self, chat_id: str) -> int:
        if not self.chat_sequences:
            self._next_id += 1
            return self._next_id
        self._chat_ids[chat_id] = self._chat_ids.get(chat_id, 0) + 1
        return self._chat_ids[chat_id]

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
        return wait_notified(self._changed, lambda: predicate(self), timeout)

    def _dispatch(self, path: str, raw: bytes) -> tuple[int, dict]:
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = path[len(prefix):]
        try:
            params = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid JSON"}
        call = BotApiCall(method, params, time.monotonic())
        with self._changed:
            self.calls.append(call)
            handler = self._HANDLERS.get(method)
            if handler is None:
                result = (404, {"ok": False, "error_code": 404, "description": "Not Found"})
            elif method == "sendMessage" and str(params.get("chat_id")) in self._unusable_chats:
                result = (200, {"ok": True, "result": True})
            elif method in ("sendMessage", "editMessageText") and self._rate_limits:
                wait = self._rate_limits.pop(0)
                result = (429, {"ok": False, "error_code": 429,
                                "description": f"Too Many Requests: retry after {int(wait)}",
                                "parameters": {"retry_after": wait}})
            else:
                result = handler(self, params)
            hold = self._holds.pop(method, None)
            self._changed.notify_all()
        if self.on_call is not None:
            self.on_call(call, result[0])
        if hold is not None:
            accepted, release = hold
            accepted.set()
            release.wait(60)
        return result

    def _send_message(self, params: dict) -> tuple[int, dict]:
        if not params.get("text"):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        msg = ChatMessage(self._allocate_id(str(params["chat_id"])), str(params["chat_id"]),
                          params["text"])
        msg.history.append(params["text"])
        self.messages[self._key(msg.chat_id, msg.message_id)] = msg
        return 200, {"ok": True, "result": self._message_json(msg)}

    def _edit_message_text(self, params: dict) -> tuple[int, dict]:
        chat_id, message_id = str(params.get("chat_id")), int(params.get("message_id") or 0)
        if (chat_id, message_id) in self.user_messages:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message can't be edited"}
        msg = self._bot_message(chat_id, message_id)
        if msg is None:
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

    def _key(self, chat_id: str, message_id: int) -> object:
        return (chat_id, message_id) if self.chat_sequences else message_id

    def _bot_message(self, chat_id: str, message_id: int) -> ChatMessage | None:
        msg = self.messages.get(self._key(chat_id, message_id))
        return msg if msg is not None and msg.chat_id == chat_id else None

    def _message_json(self, msg: ChatMessage) -> dict:
        return {"message_id": msg.message_id, "date": int(time.time()),
                "chat": {"id": int(msg.chat_id), "type": "private"},
                "from": {"id": int(self.token.split(":")[0]), "is_bot": True,
                         "first_name": "Hermes", "username": self.username},
                "text": msg.text}

    def _true(self, params: dict) -> tuple[int, dict]:
        return 200, {"ok": True, "result": True}

    def _get_file(self, params: dict) -> tuple[int, dict]:
        """``getFile``: the File object of a known ``file_id`` (module docstring)."""
        file = self.files.get(str(params.get("file_id") or ""))
        if file is None:
            return _bad_request("invalid file_id")
        if len(file.content) > GETFILE_MAX_BYTES:
            return _bad_request("file is too big")
        result = {"file_id": params["file_id"], "file_unique_id": f"u{params['file_id'][:16]}",
                  "file_path": file.file_path}
        if file.report_size:
            result["file_size"] = len(file.content)
        return 200, {"ok": True, "result": result}

    def _get_me(self, params: dict) -> tuple[int, dict]:
        return 200, {"ok": True, "result": {"id": int(self.token.split(":")[0]), "is_bot": True,
                                            "first_name": "Hermes", "username": self.username}}

    def _set_webhook(self, params: dict) -> tuple[int, dict]:
        """``setWebhook``: an HTTPS URL on port 443, 80, 88 or 8443 (or ``""`` to remove it),
        ``secret_token`` of 1-256 characters ``A-Za-z0-9_-`` (Bot API, "setWebhook")."""
        url = params.get("url", "")
        if not isinstance(url, str):
            return _bad_request("url must be a string")
        if url:
            parsed = urlsplit(url)
            if parsed.scheme != "https" or not parsed.hostname:
                return _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
            if (parsed.port or 443) not in (443, 80, 88, 8443):
                return _bad_request("bad webhook: Webhook can be set up only on ports 80, 88, "
                                    "443 or 8443")
        secret = params.get("secret_token", "")
        if secret and not _SECRET_TOKEN_RE.fullmatch(str(secret)):
            return _bad_request("secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, str):  # form-encoded callers send it JSON-serialized
            allowed = json.loads(allowed)
        description = "Webhook was set"
        if not url:
            description = ("Webhook was deleted" if self.webhook["url"]
                           else "Webhook is already deleted")
        elif (url, secret) == (self.webhook["url"], self.webhook["secret_token"]) and (
                allowed is None or allowed == self.webhook["allowed_updates"]):
            description = "Webhook is already set"
        self.webhook = {"url": url, "secret_token": secret if url else "",
                        "allowed_updates": (allowed if allowed is not None
                                            else self.webhook["allowed_updates"]) if url else None,
                        "max_connections": int(params.get("max_connections") or 40)}
        return 200, {"ok": True, "result": True, "description": description}

    def _get_webhook_info(self, params: dict) -> tuple[int, dict]:
        """``getWebhookInfo``: a WebhookInfo; the secret token is never returned."""
        info = {"url": self.webhook["url"], "has_custom_certificate": False,
                "pending_update_count": 0}
        if self.webhook["url"]:
            info["max_connections"] = self.webhook["max_connections"]
            if self.webhook["allowed_updates"] is not None:
                info["allowed_updates"] = list(self.webhook["allowed_updates"])
        return 200, {"ok": True, "result": info}

    def _set_my_commands(self, params: dict) -> tuple[int, dict]:
        """``setMyCommands``: at most 100 BotCommands, ``command`` 1-32 characters
        ``a-z0-9_``, ``description`` 1-256 characters; kept per scope and language code."""
        commands = params.get("commands")
        if isinstance(commands, str):
            commands = json.loads(commands)
        if not isinstance(commands, list) or len(commands) > 100:
            return _bad_request("commands must be an array of at most 100 BotCommand")
        for command in commands:
            if not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                return _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                return _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(params)] = [
            {"command": c["command"], "description": c["description"]} for c in commands]
        return 200, {"ok": True, "result": True}

    def _get_my_commands(self, params: dict) -> tuple[int, dict]:
        """``getMyCommands``: the BotCommands of that scope and language code (``[]`` if none)."""
        return 200, {"ok": True, "result": self.commands.get(self._commands_key(params), [])}

    @staticmethod
    def _commands_key(params: dict) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        if isinstance(scope, str):
            scope = json.loads(scope)
        return json.dumps(scope, sort_keys=True), params.get("language_code", "")

    _HANDLERS: ClassVar[dict] = {
        "sendMessage": _send_message,
        "editMessageText": _edit_message_text,
        "sendChatAction": _true,
        "setWebhook": _set_webhook,
        "getWebhookInfo": _get_webhook_info,
        "setMyCommands": _set_my_commands,
        "getMyCommands": _get_my_commands,
        "getMe": _get_me,
        "getFile": _get_file,
    }
