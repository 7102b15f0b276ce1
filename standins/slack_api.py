"""A local Slack Web API stand-in for tests, benchmarks and ``hermes demo``, plus request signing.

Speaks the Web API wire format (https://docs.slack.dev/apis/web-api/): ``POST /api/<method>``
with an ``application/x-www-form-urlencoded`` or ``application/json`` body, the token in
``Authorization: Bearer xoxb-...`` (or a ``token`` form field); every answer is HTTP 200 with
``{"ok": true, ...}`` or ``{"ok": false, "error": "<code>"}``, except a rate limit: HTTP 429
with a ``Retry-After`` header in seconds (https://docs.slack.dev/apis/web-api/rate-limits).
``oauth.v2.access`` takes the app's ``client_id``/``client_secret`` as HTTP Basic auth or form
fields and answers Slack's published response (``payloads/slack/oauth_v2_access_response.json``).

Methods: ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
``conversations.open``, ``conversations.history``, ``conversations.replies``, ``views.publish``,
``views.open``, ``oauth.v2.access``; a method is also answered on ``GET /api/<method>?<args>``
(slack_sdk reads history that way).  The stand-in keeps every channel's messages (the bot's
with their edit history; a person's from ``user_message``) with their ``thread_ts``, the
published App Home views and opened modals, so tests read what a user would see.

Reading history (https://docs.slack.dev/reference/methods/conversations.history,
https://docs.slack.dev/reference/methods/conversations.replies): ``oldest``/``latest`` bound
``ts`` (exclusive unless ``inclusive``), ``limit`` caps the page (default 100) and
``has_more`` says more matched; ``history`` lists a channel's top-level messages newest first,
``replies`` a thread's parent then its replies oldest first (``thread_not_found`` for an unknown
thread).  Each message is ``{"type": "message", "user", "text", "ts"}`` plus ``team``,
``bot_id`` for the bot's and ``thread_ts`` in a thread.  Cursors are not implemented (``next_cursor`` is
empty).

Files (https://docs.slack.dev/messaging/working-with-files#downloading_files): ``add_file``
returns a file object as a ``file_share`` message carries it; its ``url_private_download``
(``/files-pri/{team}-{id}/download/{name}``) serves the bytes to ``Authorization: Bearer`` with
a bot token of that workspace, and to anyone else Slack's HTML sign-in page with status 200.
``fail_files`` scripts error statuses; ``file_requests`` logs each download (path, status,
monotonic arrival time).

``sign`` / ``signed_headers`` sign a request body as Slack does (``v0=`` hex HMAC-SHA256 of
``v0:{timestamp}:{body}`` with the signing secret,
https://docs.slack.dev/authentication/verifying-requests-from-slack).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

from standins.scripted_server import ScriptedServer, send_json, wait_notified

# chat.postMessage truncates text beyond 40,000 characters; chat.update refuses it with
# ``msg_too_long`` (https://docs.slack.dev/reference/methods/chat.update#errors).
MAX_TEXT = 40000
RATE_LIMITED_METHODS = ("chat.postMessage", "chat.update")
# The bot the stand-in's tokens act as (``auth.test``; the author of every message it posts).
BOT_USER_ID, BOT_ID = "U0KRQLJ9H", "B0STANDIN"
HISTORY_LIMIT = 100  # conversations.history/replies' default ``limit``.


def published_payload(name: str) -> dict | str:
    """Return a published Slack payload from ``standins/payloads/slack`` (JSON decoded, or the
    raw text of ``slash_command.txt``)."""
    path = resources.files("standins") / "payloads" / "slack" / name
    text = path.read_text()
    return json.loads(text) if name.endswith(".json") else text


def oauth_response() -> dict:
    """Slack's published ``oauth.v2.access`` answer (team ``T9TK3CUKW``, bot ``U0KRQLJ9H``)."""
    return copy.deepcopy(published_payload("oauth_v2_access_response.json"))


def sign(body: bytes, secret: str, timestamp: int | None = None) -> tuple[str, str]:
    """Sign ``body`` like Slack: return ``(timestamp, "v0=<hex HMAC-SHA256>")``.

    Args:
        body: the exact request body bytes.
        secret: the app's signing secret.
        timestamp: Unix seconds to sign with (default now; an old one makes a replay).
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    return ts, "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str, timestamp: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """Return the headers Slack sends with a signed request of ``body``."""
    ts, signature = sign(body, secret, timestamp)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": content_type}


@dataclass
class SlackCall:
    """One recorded request: method, decoded params, bearer token, monotonic arrival (seconds)."""

    method: str
    params: dict
    token: str
    at: float


@dataclass
class SlackFile:
    """A file the stand-in serves: its workspace, bytes, type and whether ``Content-Length`` is sent."""

    team: str
    content: bytes
    mimetype: str
    announce_length: bool = True


SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


@dataclass
class SlackMessage:
    """A message as the channel shows it now (``history``: every text it had); the bot's
    unless ``bot_id`` is None (a person's, ``user``)."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    team: str = ""
    history: list = field(default_factory=list)
    user: str = BOT_USER_ID
    bot_id: str | None = BOT_ID

    def as_json(self) -> dict:
        """The message object ``conversations.history``/``replies`` answer."""
        return {"type": "message", "user": self.user, "text": self.text, "ts": self.ts,
                **({"team": self.team} if self.team else {}),
                **({"bot_id": self.bot_id} if self.bot_id else {}),
                **({"thread_ts": self.thread_ts} if self.thread_ts else {})}


class SlackApiStandin(ScriptedServer):
    """Threaded HTTP server on 127.0.0.1 that behaves like the Slack Web API for one app
    (``ScriptedServer``: ``start``/``stop``/context manager).

    Args:
        client_id, client_secret: the app credentials ``oauth.v2.access`` accepts.
        codes: OAuth codes it accepts (default ``{"good-code"}``); each is single-use.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/api/`` (``SLACK_API_BASE``; slack_sdk's ``base_url``).
        tokens: ``{bot token: team id}`` accepted as ``Bearer``; ``oauth.v2.access`` adds the
            token it issues.
        messages: ``{(channel, ts): SlackMessage}``, the bot's and people's.
        home_views: ``{user id: the latest view published to the user's App Home}``.
        modals: views opened with ``views.open``, in order.
        ephemerals: ``[{"channel", "user", "text"}]`` from ``chat.postEphemeral``.
        on_call: optional ``callback(call, status)`` run after each request was applied.
    """

    thread_name = "slack-standin"
    base_path = "/api/"

    def __init__(self, client_id: str = "1234.5678", client_secret: str = "slack-client-secret",
                 codes: tuple[str, ...] = ("good-code",)):
        super().__init__(responder=lambda body: None)
        self.client_id = client_id
        self.client_secret = client_secret
        self.codes = set(codes)
        self.tokens: dict[str, str] = {}
        self.calls: list[SlackCall] = []
        self.messages: dict[tuple[str, str], SlackMessage] = {}
        self.home_views: dict[str, dict] = {}
        self.modals: list[dict] = []
        self.ephemerals: list[dict] = []
        self.on_call = None
        self.files: dict[str, SlackFile] = {}  # download path -> file
        self.file_requests: list[tuple[str, int, float]] = []
        self._file_failures: list[int] = []
        self._rate_limits: list[int] = []
        self._failures: list[tuple[str, str]] = []
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    # -- scripting and reading ---------------------------------------------------------------

    def add_token(self, token: str, team_id: str) -> None:
        """Accept ``token`` as a bot token of workspace ``team_id``."""
        with self._lock:
            self.tokens[token] = team_id

    def add_file(self, team: str, content: bytes, name: str, mimetype: str,
                 announce_length: bool = True) -> dict:
        """Store a file a person shared in ``team``; return its file object (the fields of
        https://docs.slack.dev/reference/objects/file-object a download reads)."""
        file_id = f"F{next(self._seq):08d}"
        path = f"/files-pri/{team}-{file_id}/download/{name}"
        root = self.base_url.removesuffix("/api/")
        with self._lock:
            self.files[path] = SlackFile(team, content, mimetype, announce_length)
        return {"id": file_id, "created": int(time.time()), "timestamp": int(time.time()),
                "name": name, "title": name, "mimetype": mimetype,
                "filetype": name.rsplit(".", 1)[-1], "pretty_type": name.rsplit(".", 1)[-1].upper(),
                "user": "U2147483697", "mode": "hosted", "editable": False, "is_external": False,
                "external_type": "", "is_public": False, "size": len(content),
                "url_private": f"{root}/files-pri/{team}-{file_id}/{name}",
                "url_private_download": root + path,
                "permalink": f"https://standin.slack.com/files/U2147483697/{file_id}/{name}"}

    def fail_files(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` file downloads with HTTP ``status``."""
        with self._lock:
            self._file_failures.extend([status] * times)

    def _download(self, path: str, auth: str) -> tuple[int, str, bytes, bool]:
        with self._changed:
            file = self.files.get(path)
            token = auth[7:] if auth.startswith("Bearer ") else ""
            if file is None:
                answer = (404, "text/plain", b"file_not_found", True)
            elif self.tokens.get(token) != file.team:
                answer = (200, "text/html; charset=utf-8", SIGN_IN_PAGE, True)
            elif self._file_failures:
                answer = (self._file_failures.pop(0), "text/plain", b"", True)
            else:
                answer = (200, file.mimetype, file.content, file.announce_length)
            self.file_requests.append((path, answer[0], time.monotonic()))
            self._changed.notify_all()
        return answer

    def rate_limit_next(self, retry_after: int, times: int = 1) -> None:
        """Answer the next ``times`` chat.postMessage/chat.update calls with 429 + Retry-After."""
        with self._lock:
            self._rate_limits.extend([retry_after] * times)

    def fail_next(self, method: str, error: str) -> None:
        """Answer the next call of ``method`` with ``{"ok": false, "error": error}``."""
        with self._lock:
            self._failures.append((method, error))

    def channel_messages(self, channel: str) -> list[SlackMessage]:
        """The bot's messages in ``channel``, oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.channel == channel and m.bot_id]

    def user_message(self, channel: str, user: str, text: str,
                     thread_ts: str | None = None) -> SlackMessage:
        """Add a person's message to ``channel`` (in thread ``thread_ts``), as if they wrote it."""
        with self._changed:
            message = SlackMessage(channel, self._ts(), text, thread_ts, history=[text],
                                   user=user, bot_id=None)
            self.messages[(channel, message.ts)] = message
            self._changed.notify_all()
        return message

    def calls_for(self, method: str) -> list[SlackCall]:
        """The recorded calls of ``method``."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Block until ``predicate(self)`` is true or ``timeout`` seconds pass; return the outcome."""
        return wait_notified(self._changed, lambda: predicate(self), timeout)

    # -- the wire ----------------------------------------------------------------------------

    def _dispatch(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict, dict]:
        url = urlsplit(path)
        method = url.path.removeprefix("/api/")
        headers = {k.lower(): v for k, v in headers.items()}
        params = _decode(headers.get("content-type", ""), raw)
        if params is None:
            return 200, {"ok": False, "error": "invalid_json"}, {}
        params = {**dict(parse_qsl(url.query, keep_blank_values=True)), **params}
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else str(params.pop("token", ""))
        call = SlackCall(method, params, token, time.monotonic())
        with self._changed:
            self.calls.append(call)
            status, body, extra = self._answer(method, params, token, auth)
            self._changed.notify_all()
        if self.on_call is not None:
            self.on_call(call, status)
        return status, body, extra

    def _answer(self, method: str, params: dict, token: str, auth: str) -> tuple[int, dict, dict]:
        handler = self._HANDLERS.get(method)
        if handler is None and method != "oauth.v2.access":
            return 200, {"ok": False, "error": "unknown_method"}, {}
        failure = next((f for f in self._failures if f[0] == method), None)
        if failure is not None:
            self._failures.remove(failure)
            return 200, {"ok": False, "error": failure[1]}, {}
        if method == "oauth.v2.access":  # authenticated by the app's credentials, not a token
            return 200, self._oauth_v2_access(params, auth), {}
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        team = self.tokens.get(token)
        if team is None:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if method in RATE_LIMITED_METHODS and self._rate_limits:
            wait = self._rate_limits.pop(0)
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(wait)}
        return 200, handler(self, params, team), {}

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def _auth_test(self, params: dict, team: str) -> dict:
        return {"ok": True, "url": "https://standin.slack.com/", "team": "Stand-in",
                "user": "hermes", "team_id": team, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                "is_enterprise_install": False}

    def _post_message(self, params: dict, team: str) -> dict:
        channel, text = str(params.get("channel") or ""), params.get("text")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not text and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        text = str(text or "")[:MAX_TEXT]
        message = SlackMessage(channel, self._ts(), text, params.get("thread_ts") or None, team,
                               [text])
        self.messages[(channel, message.ts)] = message
        return {"ok": True, "channel": channel, "ts": message.ts, "message": message.as_json()}

    def _update(self, params: dict, team: str) -> dict:
        channel, ts, text = str(params.get("channel") or ""), str(params.get("ts") or ""), params.get("text")
        message = self.messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if text is None or text == "":
            return {"ok": False, "error": "no_text"}
        if len(text) > MAX_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        if text != message.text:
            message.text = text
            message.history.append(text)
        return {"ok": True, "channel": channel, "ts": ts, "text": text,
                "message": {"type": "message", "text": text, "user": BOT_USER_ID}}

    def _post_ephemeral(self, params: dict, team: str) -> dict:
        if not params.get("channel") or not params.get("user"):
            return {"ok": False, "error": "channel_not_found" if not params.get("channel")
                    else "user_not_in_channel"}
        self.ephemerals.append({"channel": params["channel"], "user": params["user"],
                                "text": params.get("text", "")})
        return {"ok": True, "message_ts": self._ts()}

    def _conversations_open(self, params: dict, team: str) -> dict:
        users = str(params.get("users") or "")
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        # One DM channel per user, stable across calls (as Slack's own).
        return {"ok": True, "channel": {"id": "D" + users.lstrip("UW")}}

    def _history(self, params: dict, team: str) -> dict:
        channel = str(params.get("channel") or "")
        window = _window(params)
        if not channel or window is None:
            return {"ok": False, "error": "channel_not_found" if not channel else "invalid_arguments"}
        matched = [m for m in self.messages.values() if m.channel == channel
                   and m.thread_ts in (None, m.ts) and window(m.ts)]
        matched.sort(key=lambda m: Decimal(m.ts), reverse=True)
        return _page(matched, params)

    def _replies(self, params: dict, team: str) -> dict:
        channel, thread = str(params.get("channel") or ""), str(params.get("ts") or "")
        window = _window(params)
        if not channel or not thread or window is None:
            return {"ok": False, "error": "channel_not_found" if not channel else "invalid_arguments"}
        parent = self.messages.get((channel, thread))
        replies = sorted((m for m in self.messages.values() if m.channel == channel
                          and m.thread_ts == thread and m.ts != thread), key=lambda m: Decimal(m.ts))
        if parent is None and not replies:
            return {"ok": False, "error": "thread_not_found"}
        return _page([*([parent] if parent else []), *(m for m in replies if window(m.ts))], params)

    def _views_publish(self, params: dict, team: str) -> dict:
        view = _json_field(params.get("view"))
        if not params.get("user_id") or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        self.home_views[str(params["user_id"])] = view
        return {"ok": True, "view": {"id": f"V{next(self._seq)}", **view}}

    def _views_open(self, params: dict, team: str) -> dict:
        view = _json_field(params.get("view"))
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        if not isinstance(view, dict) or view.get("type") != "modal":
            return {"ok": False, "error": "invalid_arguments"}
        self.modals.append(view)
        return {"ok": True, "view": {"id": f"V{next(self._seq)}", **view}}

    def _oauth_v2_access(self, params: dict, auth: str) -> dict:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id:
            return {"ok": False, "error": "invalid_client_id"}
        if client_secret != self.client_secret:
            return {"ok": False, "error": "bad_client_secret"}
        if params.get("code") not in self.codes:
            return {"ok": False, "error": "invalid_code"}
        self.codes.discard(params["code"])
        answer = oauth_response()
        self.tokens[answer["access_token"]] = answer["team"]["id"]
        return answer

    _HANDLERS: ClassVar[dict] = {
        "auth.test": _auth_test, "chat.postMessage": _post_message, "chat.update": _update,
        "chat.postEphemeral": _post_ephemeral, "conversations.open": _conversations_open,
        "conversations.history": _history, "conversations.replies": _replies,
        "views.publish": _views_publish, "views.open": _views_open,
    }


class _Handler(BaseHTTPRequestHandler):
    owner: SlackApiStandin

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body, headers = self.owner._dispatch(self.path, dict(self.headers), raw)
        try:
            send_json(self, status, body, headers)
        except (BrokenPipeError, ConnectionResetError):  # the caller died (fault tests)
            self.close_connection = True

    def do_GET(self):
        if self.path.startswith(self.owner.base_path):
            self.do_POST()
            return
        status, content_type, body, announce = self.owner._download(
            self.path, self.headers.get("Authorization", ""))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if announce:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.close_connection = True

    def log_message(self, *args):
        return


SlackApiStandin.handler_class = _Handler


def _decode(content_type: str, raw: bytes) -> dict | None:
    """Decode a JSON or form body; None when a JSON body does not parse."""
    if content_type.startswith("application/json"):
        try:
            value = json.loads(raw or b"{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _window(params: dict):
    """``ts -> bool``: inside the ``oldest``/``latest``/``inclusive`` bounds of a history call;
    None when a bound is not a number."""
    inclusive = str(params.get("inclusive") or "").lower() in ("1", "true")
    try:
        oldest = Decimal(str(params.get("oldest") or "0"))
        latest = Decimal(str(params["latest"])) if params.get("latest") else None
    except InvalidOperation:
        return None

    def inside(ts: str) -> bool:
        value = Decimal(ts)
        above = value >= oldest if inclusive else value > oldest
        below = latest is None or (value <= latest if inclusive else value < latest)
        return above and below

    return inside


def _page(messages: list, params: dict) -> dict:
    """The answer of a history call: the first ``limit`` of ``messages`` and ``has_more``."""
    try:
        limit = int(params.get("limit") or HISTORY_LIMIT)
    except ValueError:
        return {"ok": False, "error": "invalid_limit"}
    return {"ok": True, "messages": [m.as_json() for m in messages[:limit]],
            "has_more": len(messages) > limit, "pin_count": 0,
            "response_metadata": {"next_cursor": ""}}


def _json_field(value):
    """A form body carries objects JSON-encoded (``view=...``); a JSON body carries them as is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
