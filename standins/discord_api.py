"""Local Discord stand-ins for tests and the demo: the REST API, the Gateway, and a request signer.

REST (``DiscordApiStandin``), in Discord's wire format (https://discord.com/developers/docs/reference):
``POST /interactions/{id}/{token}/callback`` (types 1, 4, 5; a deferred response creates the
"is thinking..." original message), ``PATCH``/``POST`` ``/webhooks/{app}/{token}[/messages/{id|@original}]``
(``?wait=true`` returns the message), ``GET /webhooks/{app}/{token}/messages/{id|@original}``,
``GET``/``PUT /applications/{app}/commands`` (bulk overwrite),
``POST``/``PATCH /channels/{id}/messages[/{id}]`` (``nonce`` + ``enforce_nonce`` dedupe),
``GET /channels/{id}/messages`` (``after``/``before``, ``limit`` 1-100, newest first; no
ephemeral messages), ``POST /channels/{id}/messages/{id}/threads`` (Start Thread from Message:
only in a guild text channel, the thread's id is the message's, one thread per message),
``GET /users/@me``, ``POST /channels/{id}/typing``, and
``GET /gateway/bot``.  Messages live in real channels: an interaction's original response and
follow-ups in the channel it was invoked in (a guild text channel when it has ``guild_id``, a
DM otherwise), a thread's messages in the thread; ``user_message`` adds a person's message.
Snowflakes encode their creation time, as Discord's.  Every answer carries
``X-RateLimit-Limit/Remaining/Reset-After/Bucket``;
``rate_limit_next`` scripts 429 answers (JSON ``retry_after``, ``Retry-After`` header) and
``spend_bucket`` an answer with ``Remaining: 0``.  Errors are ``{"message", "code"}`` with
Discord's JSON codes (10003 Unknown Channel, 10008 Unknown Message, 50024 Cannot execute action
on this channel type, 50027 Invalid Webhook Token, 160004 thread already created, 0 for 401).

CDN (https://discord.com/developers/docs/reference#signed-attachment-cdn-urls): ``add_attachment``
makes an attachment object (``id``, ``filename``, ``size``, ``url``, ``proxy_url``,
``content_type``) whose signed ``url`` (``/attachments/{channel}/{id}/{filename}?ex=&is=&hm=``)
serves the bytes with no authentication; an unknown or tampered link is 404 "This content is no
longer available.", as Discord's.  ``fail_cdn`` scripts error statuses; ``cdn_requests`` logs
every CDN GET with its status and monotonic arrival time.

Gateway (``DiscordGatewayStandin``) over websockets with the real payloads
(https://discord.com/developers/docs/events/gateway): HELLO (op 10, ``heartbeat_interval``),
IDENTIFY (op 2) → READY (op 0 with ``session_id`` and ``resume_gateway_url``), heartbeats
(op 1 → op 11), RESUME (op 6) → the dispatches after the client's ``seq`` then RESUMED, a
wrong session → INVALID SESSION (op 9, ``d: false``), ``reconnect`` (op 7) and ``drop`` (the
TCP connection cut with no close frame).  ``dm`` emits a MESSAGE_CREATE for a DM (fields from
the docs' message object, ``standins/payloads/discord/message_object_example.json``, without
``guild_id``/``member`` as the docs' field table says for a DM); dispatches while no session is
connected are kept and replayed on RESUME.

``InteractionSigner`` holds an Ed25519 private key and signs interaction bodies the way Discord
does; the app under test gets ``public_key_hex``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from nacl.signing import SigningKey

from standins.scripted_server import ScriptedServer, send_json, wait_notified

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1_420_070_400_000  # snowflake time 0 (https://discord.com/developers/docs/reference#snowflakes)
EPHEMERAL = 1 << 6


class _Snowflakes:
    """Increasing snowflakes whose top bits are the milliseconds since the Discord epoch."""

    def __init__(self):
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
            return str(self._last)


_ids = _Snowflakes()


def snowflake() -> str:
    """Return a fresh snowflake: later ones are greater, and its time is now."""
    return _ids.next()


class InteractionSigner:
    """Signs interaction bodies as Discord does: Ed25519 over ``timestamp + body``.

    Attributes:
        public_key_hex: what the app is configured with (``DISCORD_PUBLIC_KEY``).
    """

    def __init__(self):
        self._key = SigningKey.generate()
        self.public_key_hex = self._key.verify_key.encode().hex()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Return the ``X-Signature-*`` headers for ``body`` (timestamp default: now)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + body).signature.hex()
        return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp,
                "Content-Type": "application/json"}


def command_interaction(name: str, user_id: str, options: dict | None = None, *,
                        application_id: str = "775799577604522054",
                        channel_id: str = "645027906669510667",
                        guild_id: str | None = "290926798626357999") -> dict:
    """Return an APPLICATION_COMMAND interaction shaped like the docs' example
    (``standins/payloads/discord/interaction_application_command.json``) with a fresh id and
    token, ``name`` and string ``options``; ``guild_id=None`` makes it a DM invocation
    (``user`` instead of ``member``)."""
    user = {"id": user_id, "username": "Mason", "avatar": None, "discriminator": "0",
            "public_flags": 0}
    payload = {
        "type": 2, "token": f"itoken-{uuid.uuid4().hex}{uuid.uuid4().hex}", "id": snowflake(),
        "application_id": application_id, "app_permissions": "442368", "locale": "en-US",
        "data": {"options": [{"type": 3, "name": key, "value": value}
                             for key, value in (options or {}).items()],
                 "type": 1, "name": name, "id": snowflake()},
        "channel_id": channel_id, "version": 1,
    }
    if guild_id is None:
        payload["user"] = user
    else:
        payload.update(guild_id=guild_id, guild_locale="en-US", member={
            "user": user, "roles": [], "premium_since": None, "permissions": "2147483647",
            "pending": False, "nick": None, "mute": False,
            "joined_at": "2017-03-13T19:19:14.040000+00:00", "is_pending": False, "deaf": False})
    return payload


@dataclass
class CdnFile:
    """An attachment the CDN serves: bytes, type, whether ``Content-Length`` is sent."""

    content: bytes
    content_type: str
    announce_length: bool = True


@dataclass
class DiscordMessage:
    """A message as users see it now; ``history`` holds every text it showed, in order.

    ``author_id`` is a person's user id, or ``""`` for the bot; ``thread`` the thread channel
    started from it, if any.
    """

    id: str
    channel_id: str
    content: str
    flags: int = 0
    interaction_id: str | None = None
    nonce: str | None = None
    history: list = field(default_factory=list)
    author_id: str = ""
    thread: dict | None = None

    def as_json(self, application_id: str) -> dict:
        """The message object Discord returns (an interaction's carry ``webhook_id``, the
        application's id, as Discord's do)."""
        author = ({"id": self.author_id, "username": "Mason", "discriminator": "0", "avatar": None}
                  if self.author_id else {"id": application_id, "username": "Hermes", "bot": True,
                                          "discriminator": "0", "avatar": None})
        return {"id": self.id, "channel_id": self.channel_id, "content": self.content,
                "flags": self.flags, "type": 0, "tts": False, "embeds": [], "attachments": [],
                "mentions": [], "mention_roles": [], "pinned": False, "mention_everyone": False,
                "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": None,
                "author": author, **({"nonce": self.nonce} if self.nonce else {}),
                **({"webhook_id": application_id} if self.interaction_id else {}),
                **({"thread": self.thread} if self.thread else {})}


class DiscordApiStandin(ScriptedServer):
    """Threaded HTTP server on 127.0.0.1 that behaves like Discord's REST API for one bot
    (``ScriptedServer``: ``start``/``stop``/context manager; ``base_url`` is the API base,
    ``DISCORD_API_BASE``).

    Args:
        bot_token: the token ``Authorization: Bot`` must carry on bot routes.
        application_id: the application's id.
        bucket_limit: ``X-RateLimit-Limit`` reported on every answer.
        nonce_window: seconds during which ``enforce_nonce`` returns the earlier message with
            the same nonce (Discord: "the past few minutes"; 0 models a retry after longer).

    Attributes:
        requests: ``(method, path, json)`` of every request, in order.
        messages: every message by id.
        threads: every thread started from a message, by id (its channel object).
        callbacks: ``interaction id -> callback body``.
        typing: channel ids of every ``POST /channels/{id}/typing``, in order.
        commands: the registered global commands (with ids).
        gateway_url: what ``GET /gateway/bot`` answers (set it to the Gateway stand-in's).
    """

    thread_name = "discord-api"
    base_path = "/api/v10"

    def __init__(self, bot_token: str = "discord-bot-token", application_id: str = "775799577604522054",
                 bucket_limit: int = 5, nonce_window: float = 300.0):
        super().__init__(responder=lambda body: None)
        self.bot_token = bot_token
        self.application_id = application_id
        self.bucket_limit = bucket_limit
        self.nonce_window = nonce_window
        self.requests: list[tuple[str, str, object]] = []
        self.messages: dict[str, DiscordMessage] = {}
        self.threads: dict[str, dict] = {}
        self.callbacks: dict[str, dict] = {}
        self.commands: list[dict] = []
        self.typing: list[str] = []
        self.dm_channels: dict[str, str] = {}  # recipient user id -> DM channel id
        self.gateway_url = "wss://gateway.discord.gg"
        self.cdn: dict[str, CdnFile] = {}  # signed path -> file
        self.cdn_requests: list[tuple[str, int, float]] = []
        self._cdn_failures: list[int] = []
        self._tokens: dict[str, str] = {}  # interaction token -> interaction id
        self._originals: dict[str, str] = {}  # interaction token -> original message id
        self._interaction_channels: dict[str, str] = {}  # interaction id -> its channel id
        self._channel_guilds: dict[str, str | None] = {}  # channel id -> guild id (None: a DM)
        self._rate_limits: list[tuple[float, bool]] = []
        self._spent_reset: float | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    # -- scripting and inspection -----------------------------------------------------------

    def expect_interaction(self, interaction: dict) -> dict:
        """Make the stand-in know ``interaction``'s token and channel (a guild text channel when
        it has ``guild_id``, else a DM), as Discord knows the ones it sent."""
        with self._lock:
            self._know(interaction)
        return interaction

    def _know(self, interaction: dict) -> None:
        channel_id = str(interaction.get("channel_id") or "")
        self._tokens[interaction["token"]] = interaction["id"]
        self._interaction_channels[interaction["id"]] = channel_id
        self._channel_guilds.setdefault(channel_id, interaction.get("guild_id") or None)

    def respond(self, interaction: dict, response: dict) -> None:
        """Apply the app's HTTP answer to ``interaction`` as Discord does (a type 4 or 5 answer
        creates the original response message), as if it had come through the callback route."""
        with self._changed:
            self._know(interaction)
            status, answer = self._callback(interaction["id"], interaction["token"], response)
            self._changed.notify_all()
        if status >= 400:
            raise ValueError(f"Discord would refuse this interaction response: {answer}")

    def add_attachment(self, channel_id: str, content: bytes, filename: str,
                       content_type: str | None = None, announce_length: bool = True) -> dict:
        """Put ``content`` on the CDN; return the attachment object a message carries (without
        ``content_type`` when None, as Discord omits it for types it does not know)."""
        attachment_id = snowflake()
        expires = f"{int(time.time()) + 86400:x}"
        digest = hashlib.sha256(f"{attachment_id}:{expires}".encode()).hexdigest()
        path = f"/attachments/{channel_id}/{attachment_id}/{filename}?ex={expires}&is={expires}&hm={digest}"
        with self._lock:
            self.cdn[path] = CdnFile(content, content_type or "application/octet-stream",
                                     announce_length)
        root = self.base_url.removesuffix("/api/v10")
        attachment = {"id": attachment_id, "filename": filename, "size": len(content),
                      "url": root + path, "proxy_url": root + path}
        if content_type:
            attachment["content_type"] = content_type
        return attachment

    def fail_cdn(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` CDN downloads with HTTP ``status``."""
        with self._lock:
            self._cdn_failures.extend([status] * times)

    def _cdn_get(self, path: str) -> tuple[int, CdnFile | None]:
        with self._changed:
            file = self.cdn.get(path)
            status = 200 if file is not None else 404
            if file is not None and self._cdn_failures:
                status, file = self._cdn_failures.pop(0), None
            self.cdn_requests.append((path, status, time.monotonic()))
            self._changed.notify_all()
        return status, file

    def rate_limit_next(self, retry_after: float, times: int = 1, is_global: bool = False) -> None:
        """Answer the next ``times`` requests with 429 and ``retry_after`` seconds."""
        with self._lock:
            self._rate_limits.extend([(retry_after, is_global)] * times)

    def spend_bucket(self, reset_after: float) -> None:
        """Answer the next request normally but with ``X-RateLimit-Remaining: 0``."""
        with self._lock:
            self._spent_reset = reset_after

    def original(self, interaction_id: str) -> DiscordMessage | None:
        """The original response message of an interaction, if it exists."""
        with self._lock:
            token = next((t for t, i in self._tokens.items() if i == interaction_id), None)
            message_id = self._originals.get(token)
            return self.messages.get(message_id) if message_id else None

    def interaction_messages(self, interaction_id: str) -> list[DiscordMessage]:
        """The original response and the follow-ups of an interaction, oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.interaction_id == interaction_id]

    def channel_messages(self, channel_id: str) -> list[DiscordMessage]:
        """The bot's messages in ``channel_id`` created through ``/channels`` (a DM, a thread),
        oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.channel_id == channel_id
                    and m.interaction_id is None and not m.author_id]

    def user_message(self, channel_id: str, user_id: str, content: str) -> DiscordMessage:
        """Add a person's message to ``channel_id``, as if they wrote it."""
        with self._changed:
            message = DiscordMessage(snowflake(), channel_id, content, history=[content],
                                     author_id=user_id)
            self.messages[message.id] = message
            self._changed.notify_all()
        return message

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Wait until ``predicate()`` is true after some request (or already); False on timeout."""
        return wait_notified(self._changed, predicate, timeout)

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers, raw: bytes) -> tuple[int, object, dict]:
        url = urlsplit(target)
        path = url.path.removeprefix("/api/v10")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 400, {"message": "400: Bad Request", "code": 50109}, {}
        with self._changed:
            self.requests.append((method, path, body))
            try:
                if self._rate_limits:
                    retry_after, is_global = self._rate_limits.pop(0)
                    return 429, {"message": "You are being rate limited.", "retry_after": retry_after,
                                 "global": is_global}, {
                        "Retry-After": str(max(1, round(retry_after))), **self._limit_headers(0, retry_after),
                        **({"X-RateLimit-Global": "true"} if is_global else {})}
                status, answer = self._route(method, path, query, headers, body)
                if self._spent_reset is not None and status < 400:
                    limits, self._spent_reset = self._limit_headers(0, self._spent_reset), None
                else:
                    limits = self._limit_headers(self.bucket_limit - 1, 1.0)
                return status, answer, limits
            finally:
                self._changed.notify_all()

    @staticmethod
    def _limit_headers(remaining: int, reset_after: float) -> dict[str, str]:
        return {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": "standin"}

    def _route(self, method, path, query, headers, body) -> tuple[int, object]:
        parts = path.strip("/").split("/")
        if parts[0] == "interactions" and len(parts) == 4 and method == "POST":
            return self._callback(parts[1], parts[2], body)
        if parts[0] == "webhooks" and len(parts) >= 3:
            return self._webhook(method, parts, query, body)
        if headers.get("Authorization") != f"Bot {self.bot_token}":
            return 401, {"message": "401: Unauthorized", "code": 0}
        if parts[:1] == ["gateway"] and method == "GET":
            return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}}
        if parts[0] == "applications" and parts[1:2] == [self.application_id] and parts[2:] == ["commands"]:
            if method == "GET":
                return 200, self.commands
            if method == "PUT":
                return self._put_commands(body)
        if parts == ["users", "@me", "channels"] and method == "POST":
            return self._create_dm(body)
        if parts == ["users", "@me"] and method == "GET":
            return 200, {"id": self.application_id, "username": "Hermes", "bot": True,
                         "discriminator": "0", "global_name": None, "avatar": None, "flags": 0}
        if parts[0] == "channels" and parts[2:] == ["typing"] and method == "POST":
            self.typing.append(parts[1])
            return 204, None
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            if method == "POST" and len(parts) == 3:
                return self._create_message(parts[1], body)
            if method == "GET" and len(parts) == 3:
                return self._list_messages(parts[1], query)
            if method == "PATCH" and len(parts) == 4:
                message = self.messages.get(parts[3])
                if message is not None and message.author_id:
                    return 403, {"message": "Cannot edit a message authored by another user",
                                 "code": 50005}
                in_channel = message is not None and message.channel_id == parts[1]
                return self._edit(message if in_channel else None, body)
            if method == "POST" and parts[4:] == ["threads"]:
                return self._start_thread(parts[1], parts[3], body)
        return 404, {"message": "404: Not Found", "code": 0}

    def _create_dm(self, body) -> tuple[int, object]:
        """Create DM: one DM channel (type 1) per recipient, the same on every call."""
        recipient = body.get("recipient_id") if isinstance(body, dict) else None
        if not isinstance(recipient, str) or not recipient.isdigit():
            return 400, {"message": "Invalid Form Body", "code": 50035}
        channel_id = self.dm_channels.setdefault(recipient, snowflake())
        self._channel_guilds[channel_id] = None
        return 200, {"id": channel_id, "type": 1, "last_message_id": None,
                     "recipients": [{"id": recipient, "username": f"user{recipient[-4:]}",
                                     "discriminator": "0", "global_name": None, "avatar": None}]}

    def _callback(self, interaction_id: str, token: str, body) -> tuple[int, object]:
        if self._tokens.get(token) != interaction_id:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}
        if interaction_id in self.callbacks:
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        if not isinstance(body, dict) or body.get("type") not in (1, 4, 5, 6, 7, 9):
            return 400, {"message": "Invalid Form Body", "code": 50035}
        self.callbacks[interaction_id] = body
        data = body.get("data") or {}
        if body["type"] in (4, 5):
            message = DiscordMessage(snowflake(), self._interaction_channels[interaction_id],
                                     data.get("content", ""), int(data.get("flags") or 0),
                                     interaction_id)
            message.history.append(message.content)
            self.messages[message.id] = message
            self._originals[token] = message.id
        return 204, None

    def _webhook(self, method, parts, query, body) -> tuple[int, object]:
        application_id, token = parts[1], parts[2]
        interaction_id = self._tokens.get(token)
        if application_id != self.application_id or interaction_id is None:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}
        if len(parts) == 3 and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("content"), str):
                return 400, {"message": "Cannot send an empty message", "code": 50006}
            if len(body["content"]) > 2000:
                return 400, {"message": "Invalid Form Body (content: 2000 or fewer)", "code": 50035}
            message = DiscordMessage(snowflake(), self._interaction_channels[interaction_id],
                                     body["content"], int(body.get("flags") or 0), interaction_id)
            message.history.append(message.content)
            self.messages[message.id] = message
            return (200, message.as_json(self.application_id)) if query.get("wait") == "true" else (204, None)
        if len(parts) == 5 and parts[3] == "messages" and method in ("GET", "PATCH"):
            target = self._originals.get(token) if parts[4] == "@original" else parts[4]
            message = self.messages.get(target) if target else None
            if message is not None and message.interaction_id != interaction_id:
                message = None
            if method == "PATCH":
                return self._edit(message, body)
            if message is None:
                return 404, {"message": "Unknown Message", "code": 10008}
            return 200, message.as_json(self.application_id)
        return 404, {"message": "404: Not Found", "code": 0}

    def _create_message(self, channel_id: str, body) -> tuple[int, object]:
        if not isinstance(body, dict) or not isinstance(body.get("content"), str) or not body["content"]:
            return 400, {"message": "Cannot send an empty message", "code": 50006}
        if len(body["content"]) > 2000:
            return 400, {"message": "Invalid Form Body (content: 2000 or fewer)", "code": 50035}
        nonce = body.get("nonce")
        if nonce and body.get("enforce_nonce"):
            since = (int((time.time() - self.nonce_window) * 1000) - DISCORD_EPOCH_MS) << 22
            for message in self.messages.values():
                if message.nonce == nonce and message.channel_id == channel_id \
                        and int(message.id) >= since:
                    return 200, message.as_json(self.application_id)
        message = DiscordMessage(snowflake(), channel_id, body["content"], nonce=nonce)
        message.history.append(message.content)
        self.messages[message.id] = message
        return 200, message.as_json(self.application_id)

    def _list_messages(self, channel_id: str, query: dict) -> tuple[int, object]:
        """Get Channel Messages: ``limit`` (1-100, default 50) of the channel's messages after
        ``after`` (the ones right after it) or before ``before`` (right before it), else the
        newest; answered newest first."""
        try:
            limit = int(query.get("limit") or 50)
            after, before = int(query.get("after") or 0), int(query.get("before") or 0)
        except ValueError:
            return 400, {"message": "Invalid Form Body", "code": 50035}
        if not 1 <= limit <= 100:
            return 400, {"message": "Invalid Form Body (limit: 1 to 100)", "code": 50035}
        shown = sorted((m for m in self.messages.values()
                        if m.channel_id == channel_id and not m.flags & EPHEMERAL
                        and int(m.id) > after and (not before or int(m.id) < before)),
                       key=lambda m: int(m.id))
        page = shown[:limit] if after else shown[-limit:]
        return 200, [m.as_json(self.application_id) for m in reversed(page)]

    def _start_thread(self, channel_id: str, message_id: str, body) -> tuple[int, object]:
        """Start Thread from Message in a guild text channel: a PUBLIC_THREAD (type 11) whose id
        is the message's."""
        if channel_id in self.threads or self._channel_guilds.get(channel_id, "") is None:
            return 400, {"message": "Cannot execute action on this channel type", "code": 50024}
        if channel_id not in self._channel_guilds:
            return 404, {"message": "Unknown Channel", "code": 10003}
        message = self.messages.get(message_id)
        if message is None or message.channel_id != channel_id or message.flags & EPHEMERAL:
            return 404, {"message": "Unknown Message", "code": 10008}
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            return 400, {"message": "Invalid Form Body (name: 1 to 100 characters)", "code": 50035}
        if message.thread is not None:
            return 400, {"message": "A thread has already been created for this message",
                         "code": 160004}
        message.thread = {
            "id": message.id, "type": 11, "guild_id": self._channel_guilds[channel_id],
            "parent_id": channel_id, "owner_id": self.application_id, "name": name,
            "last_message_id": None, "rate_limit_per_user": 0, "flags": 0, "message_count": 0,
            "member_count": 1, "total_message_sent": 0,
            "thread_metadata": {"archived": False, "locked": False,
                                "auto_archive_duration": body.get("auto_archive_duration") or 4320,
                                "archive_timestamp": "2026-01-01T00:00:00.000000+00:00",
                                "create_timestamp": "2026-01-01T00:00:00.000000+00:00"}}
        self.threads[message.id] = message.thread
        return 201, message.thread

    def _edit(self, message: DiscordMessage | None, body) -> tuple[int, object]:
        if message is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            return 400, {"message": "Invalid Form Body", "code": 50035}
        if len(body["content"]) > 2000:
            return 400, {"message": "Invalid Form Body (content: 2000 or fewer)", "code": 50035}
        if body["content"] != message.content:
            message.content = body["content"]
            message.history.append(message.content)
        return 200, message.as_json(self.application_id)

    def _put_commands(self, body) -> tuple[int, object]:
        if not isinstance(body, list):
            return 400, {"message": "Invalid Form Body", "code": 50035}
        known = {c["name"]: c["id"] for c in self.commands}
        commands = []
        for command in body:
            name, description = command.get("name", ""), command.get("description", "")
            if not (1 <= len(name) <= 32 and name == name.lower() and 1 <= len(description) <= 100):
                return 400, {"message": "Invalid Form Body", "code": 50035}
            commands.append({"id": known.get(name) or snowflake(), "application_id": self.application_id,
                             "version": snowflake(), "type": 1, **command})
        self.commands = commands
        return 200, commands


class _ApiHandler(BaseHTTPRequestHandler):
    owner: DiscordApiStandin

    def _handle(self):
        if self.command == "GET" and self.path.startswith("/attachments/"):
            self._cdn()
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body, headers = self.owner._dispatch(self.command, self.path, self.headers, raw)
        if body is not None:
            send_json(self, status, body, headers)
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cdn(self):
        status, file = self.owner._cdn_get(self.path)
        body = file.content if file else b"This content is no longer available."
        self.send_response(status)
        self.send_header("Content-Type", file.content_type if file else "text/plain")
        if file is None or file.announce_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    def log_message(self, *args):
        pass


DiscordApiStandin.handler_class = _ApiHandler


class DiscordGatewayStandin:
    """A Gateway server for one bot on 127.0.0.1 (module docstring).

    Args:
        bot_token: the token IDENTIFY and RESUME must carry.
        heartbeat_interval: milliseconds in HELLO.
        user_id: the bot user's id in READY.

    Attributes:
        url: ``ws://127.0.0.1:port`` once started (``DISCORD_GATEWAY_URL``).
        identifies, resumes, heartbeats: counts of what clients sent.
        sent: every dispatch ``(seq, type, data)`` of the current session, in order.
    """

    def __init__(self, bot_token: str = "discord-bot-token", heartbeat_interval: int = 1000,
                 user_id: str = "775799577604522054"):
        self.bot_token = bot_token
        self.heartbeat_interval = heartbeat_interval
        self.user_id = user_id
        self.identifies = self.resumes = self.heartbeats = 0
        self.sent: list[tuple[int, str, dict]] = []
        self.session_id: str | None = None
        self.url = ""
        self._connection = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._hold = False
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    def start(self) -> DiscordGatewayStandin:
        """Run the server on its own event loop thread."""
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start_server())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="discord-gateway", daemon=True).start()
        ready.wait(10)
        return self

    async def _start_server(self):
        from websockets.asyncio.server import serve

        self._server = await serve(self._session, "127.0.0.1", 0, process_request=self._admit)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"

    def stop(self) -> None:
        """Close the server and its loop."""
        if self._loop is None:
            return

        async def close():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def connected(self) -> bool:
        """True while a client holds an identified or resumed session."""
        with self._lock:
            return self._connection is not None

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Wait until ``predicate()`` holds (checked after each gateway event); False on timeout."""
        return wait_notified(self._changed, predicate, timeout)

    def dm(self, user_id: str, channel_id: str, content: str, attachments: list | None = None,
           flags: int = 0) -> dict:
        """Dispatch MESSAGE_CREATE for a DM from ``user_id``; returns the message.

        ``attachments`` are attachment objects (``DiscordApiStandin.add_attachment``); ``flags``
        the message flags (``1 << 13``: a voice message).  Sent at once when a session is
        connected; otherwise kept for the next RESUME.
        """
        message = {"id": snowflake(), "channel_id": channel_id, "content": content,
                   "author": {"id": user_id, "username": "Mason", "discriminator": "0",
                              "avatar": None},
                   "attachments": list(attachments or ()), "embeds": [], "mentions": [],
                   "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
                   "type": 0, "timestamp": "2026-01-01T00:00:00.000000+00:00",
                   "edited_timestamp": None, "flags": flags, "components": [], "channel_type": 1}
        self._call(self._dispatch("MESSAGE_CREATE", message))
        return message

    def drop(self, hold: bool = False) -> None:
        """Cut the connection without a close frame (network loss); the session stays resumable.

        Args:
            hold: also refuse new connections (close them at once) until ``release``.
        """
        self._hold = hold

        async def cut():
            if self._connection is not None:
                self._connection.transport.abort()
                self._connection = None

        self._call(cut())

    def release(self) -> None:
        """Accept connections again after ``drop(hold=True)``."""
        self._hold = False

    def reconnect(self) -> None:
        """Send RECONNECT (op 7): the client must resume on a new connection."""
        async def send():
            if self._connection is not None:
                await self._connection.send(json.dumps({"op": 7, "d": None}))

        self._call(send())

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _dispatch(self, kind: str, data: dict) -> None:
        with self._changed:
            seq = len(self.sent) + 1
            self.sent.append((seq, kind, data))
            connection = self._connection
            self._changed.notify_all()
        if connection is not None:
            from websockets.exceptions import ConnectionClosed

            try:
                await connection.send(json.dumps({"op": 0, "t": kind, "s": seq, "d": data}))
            except ConnectionClosed:
                log.info("dispatch %s kept for RESUME: the client is gone", seq)

    def _admit(self, connection, request):
        """Refuse the handshake (503) while ``drop(hold=True)`` holds the Gateway down."""
        if self._hold:
            return connection.respond(503, "gateway unavailable\n")
        return None

    async def _session(self, connection) -> None:
        await connection.send(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval}}))
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in connection:
                await self._on_payload(connection, json.loads(raw))
        except ConnectionClosed:
            log.info("gateway client disconnected")
        finally:
            with self._changed:
                if self._connection is connection:
                    self._connection = None
                self._changed.notify_all()

    async def _on_payload(self, connection, payload: dict) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            with self._changed:
                self.heartbeats += 1
                self._changed.notify_all()
            await connection.send(json.dumps({"op": 11}))
        elif op == 2:
            if not isinstance(data, dict) or data.get("token") != self.bot_token:
                await connection.close(4004, "Authentication failed.")
                return
            with self._changed:
                self.identifies += 1
                self.session_id = uuid.uuid4().hex
                self.sent = []
                self._connection = connection
            await self._dispatch("READY", {
                "v": 10, "user": {"id": self.user_id, "username": "Hermes", "bot": True,
                                  "discriminator": "0", "avatar": None},
                "guilds": [], "session_id": self.session_id, "resume_gateway_url": self.url,
                "application": {"id": self.user_id, "flags": 0}})
        elif op == 6:
            if not isinstance(data, dict) or data.get("token") != self.bot_token \
                    or data.get("session_id") != self.session_id:
                await connection.send(json.dumps({"op": 9, "d": False}))
                return
            with self._changed:
                self.resumes += 1
                missed = [entry for entry in self.sent if entry[0] > int(data.get("seq") or 0)]
                self._connection = connection
            for seq, kind, body in missed:
                await connection.send(json.dumps({"op": 0, "t": kind, "s": seq, "d": body}))
            await self._dispatch("RESUMED", {})
