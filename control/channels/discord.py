"""Discord: interaction verification and parsing, the REST client and ``DiscordAdapter``.

Interactions (https://discord.com/developers/docs/interactions/receiving-and-responding):
Discord POSTs each slash command to the interactions endpoint signed with Ed25519 over
``X-Signature-Timestamp + raw body``, verified with the application's public key; an endpoint
must answer within 3 seconds, so commands for the agent are answered with a deferred response
(type 5, "is thinking...") and the reply streams by editing that original response through
``PATCH /webhooks/{application.id}/{token}/messages/@original``.  The interaction token is
valid for 15 minutes: a reply not finished by then is refused (401, "Invalid Webhook Token")
and lands as a permanent failure with an attention item.

Direct messages arrive through the Gateway (``control.channels.discord_gateway``) and are
answered with ``POST /channels/{channel.id}/messages``.  Reply chat ids (``Envelope.chat_id``):
``interaction:<interaction id>`` for a slash command (its token is looked up in the control
database, ``control.services.discord_interactions``), the DM channel id otherwise.

Long replies: a reply longer than one message (2,000 characters) goes on in further messages
(``send``).  In a DM they are plain messages of the DM: Discord has threads only in guild text
and announcement channels (https://discord.com/developers/docs/topics/threads).  A slash
command's reply that Discord shows in a guild channel goes on in a thread started from its
original response (``POST /channels/{channel.id}/messages/{message.id}/threads``,
https://discord.com/developers/docs/resources/channel#start-thread-from-message; the thread's
id is the message's), posted with the bot token (``POST /channels/{thread.id}/messages``:
interaction follow-ups cannot target a thread, ``thread_id`` is not supported for them).  Such
a message's id is ``<thread id>:<message id>``.  Where no thread can be started the reply goes
on in follow-up messages (``POST /webhooks/{application.id}/{token}``): an ephemeral reply (it
is no channel message), a command used in a DM (with the bot, or between users for a
user-installed app), a channel that is a thread or a forum itself, an app whose bot user is
not in the guild or lacks Create Public Threads.  Once the thread exists, a refusal to post in
it (Send Messages in Threads missing) fails the reply like any refused send.

Crash recovery (``find_sent``): a message posted with the bot token carries a nonce with
``enforce_nonce``, so Discord returns the existing message instead of a second one when a send
whose answer was lost is repeated within a few minutes
(https://discord.com/developers/docs/resources/message#create-message).  After longer, the
worker's search reads ``GET /channels/{channel.id}/messages?after=&limit=100`` (newest first,
https://discord.com/developers/docs/resources/message#get-channel-messages) in the DM, or in
the reply's thread, and adopts the earliest message by the bot user (``GET /users/@me``) with
the text sent and an id recorded nowhere.  ``after`` is the intent's ``pending_after`` (a
snowflake: they grow with their creation time,
https://discord.com/developers/docs/reference#snowflakes) or, with none known, the snowflake
of the ledger row's ``created_at`` less ``CLOCK_SKEW``.  Not recoverable, so sent again (a
duplicate is possible, never a loss): a follow-up message (a webhook's messages can only be
fetched one by one by id, ``GET /webhooks/{application.id}/{token}/messages/{message.id}``,
never listed; and the bot token often cannot read where it lies: an ephemeral message is in no
channel's history, a user-installed app's bot is not in the guild or DM); a message more than
``SEARCH_LIMIT`` messages after the bound; a channel whose history the bot may not read
(without Read Message History Discord returns no messages).  The first message of a slash
command's reply is never lost: it is the deferred original response, edited, not sent.

Rate limits (https://discord.com/developers/docs/topics/rate-limits): every answer carries
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset-After`` (seconds); when ``Remaining`` is 0 the
client refuses further calls on that route until the reset instead of earning a 429, and a
429's JSON ``retry_after`` (seconds, float; ``global`` for the whole bot) becomes the
``ChannelError.retry_after``.  The client never sleeps: the caller (the delivery worker's
per-chat clock, the setup command) decides when to try again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

import httpx
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from control.channels import downloads
from control.channels.base import (
    ChannelAdapter,
    ChannelError,
    ChannelLimits,
    InboundMessage,
    MediaFile,
    MediaTooLarge,
)
from control.errors import BadRequest, Unauthorized

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://discord.com/api/v10"
# Interaction and callback types
# (https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-interaction-type,
# #interaction-response-object-interaction-callback-type).
PING, APPLICATION_COMMAND = 1, 2
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE = 1, 4, 5
EPHEMERAL = 1 << 6  # message flag: only the invoking user sees it.
# Message content is at most 2000 characters
# (https://discord.com/developers/docs/resources/message#create-message-jsonform-params).
DISCORD_LIMITS = ChannelLimits(max_text=2000, can_edit=True, min_edit_interval=1.0, typing=True)
INTERACTION_TOKEN_TTL = 15 * 60  # seconds an interaction token may be used (docs: 15 minutes).
# Discord publishes no timestamp window; 5 minutes matches Slack's and Stripe's, and replaying
# a captured request later than that is refused with 401.
SIGNATURE_TOLERANCE = 300
# JSON error codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json).
UNKNOWN_MESSAGE = 10008
INTERACTION_PREFIX = "interaction:"
NONCE_LENGTH = 25  # a message nonce is at most 25 characters.
# Start Thread from Message: a thread name is 1-100 characters.
THREAD_NAME_LIMIT = 100
SEARCH_LIMIT = 100  # messages one recovery search reads: Get Channel Messages' maximum.
CLOCK_SKEW = 60.0  # seconds a search bound from our clock reaches back.
DISCORD_EPOCH_MS = 1_420_070_400_000  # snowflake time 0: 2015-01-01T00:00:00Z, in ms.


def verify_signature(public_key: str, signature: str | None, timestamp: str | None, raw: bytes,
                     now: float | None = None, tolerance: int = SIGNATURE_TOLERANCE) -> None:
    """Check Discord's Ed25519 signature of ``timestamp + raw`` and the timestamp's age.

    Args:
        public_key: the application's public key, hex (``DISCORD_PUBLIC_KEY``).
        signature: ``X-Signature-Ed25519`` (hex).
        timestamp: ``X-Signature-Timestamp`` (Unix seconds, decimal).
        raw: the request body exactly as received.
        now: Unix seconds (default: the clock).
        tolerance: seconds the timestamp may differ from ``now``.

    Raises:
        Unauthorized: no key configured, a header missing or malformed, a bad signature, or a
            timestamp outside the window (a replay).
    """
    if not public_key or not signature or not timestamp:
        raise Unauthorized("bad or missing X-Signature-Ed25519 / X-Signature-Timestamp")
    try:
        VerifyKey(bytes.fromhex(public_key)).verify(timestamp.encode() + raw, bytes.fromhex(signature))
        sent_at = int(timestamp)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise Unauthorized("bad X-Signature-Ed25519") from exc
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        raise Unauthorized("X-Signature-Timestamp is outside the accepted window")


@dataclass(frozen=True)
class Interaction:
    """The parts of an interaction the control plane acts on.

    Attributes:
        id, type, token, application_id: as Discord sent them (ids as strings).
        user_id: the invoking user (``member.user.id`` in a guild, ``user.id`` in a DM).
        channel_id: where it was invoked.
        name: the command's name (``data.name``), ``""`` for a PING.
        options: ``{option name: value}`` of the top-level options.
    """

    id: str
    type: int
    token: str
    application_id: str
    user_id: str = ""
    channel_id: str = ""
    name: str = ""
    options: tuple = ()

    def option(self, name: str) -> str:
        """Return option ``name``'s value as text (``""`` when absent)."""
        return next((str(value) for key, value in self.options if key == name), "")


def parse_interaction(data: object, application_id: str = "") -> Interaction:
    """Parse a decoded interaction body.

    Args:
        data: the JSON body.
        application_id: used when the body has no ``application_id`` (the docs' examples omit it).

    Raises:
        BadRequest: not an object, no snowflake ``id``, no integer ``type``, no ``token``, or a
            command without a name or user.
    """
    if not isinstance(data, dict) or not _snowflake(data.get("id")):
        raise BadRequest("not a Discord interaction: an object with a snowflake id is required")
    kind, token = data.get("type"), data.get("token")
    if not isinstance(kind, int) or isinstance(kind, bool) or not _text(token):
        raise BadRequest("a Discord interaction needs an integer type and a token")
    app = data.get("application_id") or application_id
    if kind == PING:
        return Interaction(data["id"], kind, str(token), str(app))
    command = _object(data.get("data"))
    member = _object(data.get("member"))
    user = _object(member.get("user")) or data.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    channel = _object(data.get("channel"))
    channel_id = data.get("channel_id") or channel.get("id")
    if kind == APPLICATION_COMMAND and not (_text(command.get("name")) and _snowflake(user_id)
                                            and _snowflake(channel_id)):
        raise BadRequest("a Discord command needs data.name, a user id and a channel id")
    options = []
    for option in command.get("options") or ():
        if isinstance(option, dict) and _text(option.get("name")) and "value" in option:
            value = option["value"]
            if isinstance(value, str) and "\x00" in value:
                raise BadRequest("an option value must not contain NUL characters")
            options.append((option["name"], value))
    return Interaction(data["id"], kind, str(token), str(app), str(user_id or ""), str(channel_id or ""),
                       str(command.get("name") or ""), tuple(options))


# Commands answered by the control plane itself, and which options carry the text for the agent.
CONTROL_COMMANDS = ("link", "help")
EPHEMERAL_COMMANDS = frozenset({"link", "usage", "memory"})


def interaction_message(interaction: Interaction) -> InboundMessage:
    """Return the ``InboundMessage`` of a slash command.

    ``/ask question`` becomes the question's text; every other command becomes the agent's own
    command text (``/remember TEXT``), which ``agent.commands`` answers; ``/link`` and ``/help``
    carry their command for ``control.services.channel_routing``.
    """
    argument = " ".join(str(value) for _, value in interaction.options).strip()
    text = argument if interaction.name == "ask" else f"/{interaction.name} {argument}".strip()
    return InboundMessage(channel="discord", event_id=interaction.id,
                          event_type=f"interaction:{interaction.name}",
                          identity=interaction.user_id, user_id=interaction.user_id,
                          chat_id=INTERACTION_PREFIX + interaction.id, message_id=interaction.id,
                          text=text,
                          command=None if interaction.name == "ask" else (interaction.name, argument))


def dm_message(message: dict) -> InboundMessage | None:
    """Return the ``InboundMessage`` of a Gateway ``MESSAGE_CREATE`` in a DM, else None.

    Guild messages (``guild_id`` present), bot authors (the bot's own replies included) and
    malformed payloads are None: only a person's direct message reaches routing.
    """
    author = _object(message.get("author"))
    if message.get("guild_id") or author.get("bot") or not _snowflake(message.get("id")) \
            or not _snowflake(author.get("id")) or not _snowflake(message.get("channel_id")):
        return None
    content = message.get("content")
    text = content.replace("\x00", "") if isinstance(content, str) else ""
    command = None
    if text.startswith("/"):
        head, _, argument = text.partition(" ")
        command = (head[1:].lower(), argument.strip())
    voice = isinstance(message.get("flags"), int) and message["flags"] & IS_VOICE_MESSAGE
    attachments = tuple(_attachment(item, bool(voice)) for item in message.get("attachments") or ()
                        if isinstance(item, dict) and _snowflake(item.get("id"))
                        and isinstance(item.get("url"), str) and item["url"].startswith("http"))
    return InboundMessage(channel="discord", event_id=message["id"], event_type="dm",
                          identity=author["id"], user_id=author["id"],
                          chat_id=message["channel_id"], message_id=message["id"], text=text,
                          command=command, attachments=attachments)


# Message flag of a voice message (https://discord.com/developers/docs/resources/message#message-object-message-flags).
IS_VOICE_MESSAGE = 1 << 13


def _attachment(item: dict, voice: bool) -> dict:
    """An attachment object (https://discord.com/developers/docs/resources/message#attachment-object)
    → ``{"kind", "file_id", "url", "size"?, "mime_type"?, "name"?}``; ``kind`` from
    ``content_type`` (``voice`` for a voice message's audio)."""
    mime_type = item["content_type"] if isinstance(item.get("content_type"), str) else ""
    kind = downloads.kind_for(mime_type)
    if voice and kind == "audio":
        kind = "voice"
    attachment = {"kind": kind, "file_id": item["id"], "url": item["url"]}
    if isinstance(item.get("size"), int) and not isinstance(item["size"], bool):
        attachment["size"] = item["size"]
    if mime_type:
        attachment["mime_type"] = mime_type
    if isinstance(item.get("filename"), str):
        attachment["name"] = item["filename"]
    return attachment


def _snowflake(value) -> bool:
    return isinstance(value, str) and value.isdigit() and len(value) <= 20


def _text(value) -> bool:
    return isinstance(value, str) and bool(value) and "\x00" not in value


def _object(value) -> dict:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


class DiscordRestClient:
    """Synchronous Discord REST client that keeps to the rate limits (module docstring).

    Args:
        token: the bot token (``DISCORD_BOT_TOKEN``; sent as ``Authorization: Bot <token>``).
        api_base: ``DISCORD_API_BASE``.
        timeout: seconds per request.
        clock: monotonic clock in seconds.
    """

    def __init__(self, token: str, api_base: str = DEFAULT_API_BASE, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._http = httpx.Client(base_url=api_base.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bot {token}",
                                           "User-Agent": "DiscordBot (https://hermes.example, 1)"})
        self.clock = clock
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def request(self, method: str, path: str, json: object = None,
                params: dict | None = None) -> object:
        """Call ``method path``; return the decoded JSON answer (None for 204).

        Raises:
            ChannelError: rate limited (now, or the route's budget is spent: ``retry_after``
                set, status 429), refused (4xx; ``permanent`` except 429, ``message_gone`` on
                Unknown Message), 5xx, or unreachable (status 0).
        """
        key = _route_key(path)
        with self._lock:
            wait = max(self._blocked.get(key, 0.0), self._blocked.get("*", 0.0)) - self.clock()
        if wait > 0:
            raise ChannelError(f"{method} {key}: rate limit budget spent", status=429,
                               retry_after=wait)
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ChannelError(f"{method} {key} failed: {type(exc).__name__}") from exc
        self._note_limits(key, response)
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError as exc:
            raise ChannelError(f"{method} {key}: unreadable answer ({response.status_code})",
                               status=0 if response.status_code < 400 else response.status_code) from exc
        if response.status_code < 400:
            return body
        body = body if isinstance(body, dict) else {}
        description = f"{method} {key}: {response.status_code} {body.get('message', '')}".strip()
        if response.status_code == 429:
            retry_after = float(body.get("retry_after")
                                or response.headers.get("Retry-After") or 1.0)
            if body.get("global"):
                with self._lock:
                    self._blocked["*"] = self.clock() + retry_after
            raise ChannelError(description, status=429, retry_after=retry_after)
        gone = response.status_code == 404 and body.get("code") == UNKNOWN_MESSAGE
        raise ChannelError(description, status=response.status_code, message_gone=gone,
                           permanent=response.status_code < 500 and not gone)

    def _note_limits(self, key: str, response: httpx.Response) -> None:
        remaining = response.headers.get("X-RateLimit-Remaining")
        reset_after = response.headers.get("X-RateLimit-Reset-After")
        if remaining is None or reset_after is None:
            return
        try:
            spent, reset = int(remaining) <= 0, float(reset_after)
        except ValueError:
            return
        with self._lock:
            if spent:
                self._blocked[key] = self.clock() + reset
            else:
                self._blocked.pop(key, None)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()


def _route_key(path: str) -> str:
    """The rate-limit route of ``path``: its top-level resource and major parameter
    (channel id, or webhook id + token), which is how Discord shares buckets."""
    parts = path.strip("/").split("?")[0].split("/")
    return "/".join(parts[:3] if parts[0] == "webhooks" else parts[:2])


@dataclass(frozen=True)
class InteractionTarget:
    """Where a slash command's reply goes: the application id, the interaction token, and
    whether the reply is ephemeral (follow-ups then carry the flag too)."""

    application_id: str
    token: str
    ephemeral: bool = False


class DiscordAdapter(ChannelAdapter):
    """Sends and edits replies on Discord (chat ids in the module docstring).

    Args:
        client: the REST client.
        targets: ``interaction id -> InteractionTarget``; raises ``ChannelError`` (permanent)
            for an unknown or expired interaction (``control.services.discord_interactions``).
    """

    name = "discord"
    limits = DISCORD_LIMITS

    def __init__(self, client: DiscordRestClient, targets: Callable[[str], InteractionTarget]):
        self.client = client
        self.targets = targets
        self._downloads: httpx.Client | None = None
        self._dm_channels: dict[str, str] = {}
        # interaction id -> (monotonic expiry, the thread its reply goes on in or None).
        self._threads: dict[str, tuple[float, str | None]] = {}
        self._bot_user_id: str | None = None
        self._lock = threading.Lock()

    def send(self, chat_id: str, text: str, reply_to: str | None = None) -> str:
        """Post ``text`` in a DM, or go on with a slash command's reply after its original
        response (module docstring, "Long replies": in its thread, else a follow-up); return
        the new message's id (``<thread id>:<message id>`` in a thread).

        A message posted with the bot token carries a nonce derived from the chat, the message
        answered and the text, with ``enforce_nonce``: Discord then returns the existing
        message instead of creating a second one when a send whose answer was lost is repeated
        within a few minutes.

        Raises:
            ChannelError: Discord refused (permanent), rate limited or could not be reached.
        """
        nonce = hashlib.sha256(f"{chat_id}:{reply_to}:{text}".encode()).hexdigest()[:NONCE_LENGTH]
        if not chat_id.startswith(INTERACTION_PREFIX):
            return self._post(chat_id, text, nonce)
        interaction_id = chat_id.removeprefix(INTERACTION_PREFIX)
        target = self.targets(interaction_id)
        thread = self._thread(interaction_id, target, start=True)
        if thread is not None:
            return f"{thread}:{self._post(thread, text, nonce)}"
        payload = {"content": text, **({"flags": EPHEMERAL} if target.ephemeral else {})}
        return _message_id(self.client.request(
            "POST", f"/webhooks/{target.application_id}/{target.token}", json=payload,
            params={"wait": "true"}))

    def find_sent(self, ledger, recorded: frozenset[str]) -> str | None:
        """Return the id of the message a lost send created in a DM or a reply's thread, or
        None (module docstring, "Crash recovery": what is searched and what cannot be).

        Raises:
            ChannelError: (transient, rate limited) Discord could not be read now;
                (permanent) the interaction's token is unknown or expired, as ``send``.
        """
        after, text = _search_after(ledger), ledger.pending_text or ""
        if not ledger.chat_id.startswith(INTERACTION_PREFIX):
            return self._search(ledger.chat_id, text, after, recorded)
        interaction_id = ledger.chat_id.removeprefix(INTERACTION_PREFIX)
        thread = self._thread(interaction_id, self.targets(interaction_id), start=False)
        if thread is None:  # follow-ups cannot be listed
            return None
        prefix = f"{thread}:"
        found = self._search(thread, text, after, frozenset(
            value.removeprefix(prefix) for value in recorded if value.startswith(prefix)))
        return prefix + found if found else None

    def _post(self, channel_id: str, text: str, nonce: str) -> str:
        """Create Message with the bot token and a nonce; return the message id."""
        return _message_id(self.client.request(
            "POST", f"/channels/{channel_id}/messages",
            json={"content": text, "nonce": nonce, "enforce_nonce": True}))

    def _thread(self, interaction_id: str, target: InteractionTarget, start: bool) -> str | None:
        """Return the thread a slash command's reply goes on in, or None for follow-ups.

        The original response (``GET /webhooks/{application.id}/{token}/messages/@original``,
        https://discord.com/developers/docs/interactions/receiving-and-responding#get-original-interaction-response)
        names its ``thread`` once one was started from it; else, with ``start``, one is started
        (``_start_thread``).  The answer is kept for the token's life.

        Raises:
            ChannelError: (transient, rate limited) Discord could not be asked now.
        """
        if target.ephemeral:
            return None
        now = time.monotonic()
        with self._lock:
            known = self._threads.get(interaction_id)
        if known is not None and known[0] > now:
            return known[1]
        try:
            original = _object(self.client.request(
                "GET", f"/webhooks/{target.application_id}/{target.token}/messages/@original"))
        except ChannelError as exc:
            if not (exc.permanent or exc.message_gone):
                raise
            log.info("interaction %s: no original response to start a thread from (%s)",
                     interaction_id, exc)
            original = {}
        thread = _object(original.get("thread")).get("id")
        if thread is None and not start:
            return None
        if thread is None and original:
            thread = self._start_thread(interaction_id, original)
        with self._lock:
            self._threads = {key: value for key, value in self._threads.items() if value[0] > now}
            self._threads[interaction_id] = (now + INTERACTION_TOKEN_TTL, thread)
        return thread

    def _start_thread(self, interaction_id: str, original: dict) -> str | None:
        """Start a thread from the original response (Start Thread from Message), named after
        its first line; return its id (the message's), or None when Discord refuses (a DM, a
        thread or forum, no bot user in the guild, no Create Public Threads).

        Raises:
            ChannelError: (transient, rate limited) Discord could not be asked now.
        """
        channel_id, message_id = original.get("channel_id"), original.get("id")
        try:
            self.client.request("POST", f"/channels/{channel_id}/messages/{message_id}/threads",
                                json={"name": _thread_name(original.get("content"))})
        except ChannelError as exc:
            if not (exc.permanent or exc.message_gone):
                raise
            log.info("interaction %s: no thread in channel %s (%s); the reply goes on in "
                     "follow-up messages", interaction_id, channel_id, exc)
            return None
        return str(message_id)

    def _search(self, channel_id: str, text: str, after: str, skip: frozenset[str]) -> str | None:
        """Return the earliest message id after ``after`` in ``channel_id`` by the bot user with
        content ``text`` and not in ``skip``; None when there is none or the bot may not read
        the channel (logged).

        Raises:
            ChannelError: (transient, rate limited) Discord could not be read now.
        """
        try:
            messages = self.client.request("GET", f"/channels/{channel_id}/messages",
                                           params={"after": after, "limit": SEARCH_LIMIT})
        except ChannelError as exc:
            if not (exc.permanent or exc.message_gone):
                raise
            log.warning("cannot read Discord channel %s to look for a lost message (%s); "
                        "sending again", channel_id, exc)
            return None
        me = self._bot_user()
        found = [str(m["id"]) for m in (messages if isinstance(messages, list) else ())
                 if isinstance(m, dict) and _snowflake(m.get("id")) and m.get("content") == text
                 and _object(m.get("author")).get("id") == me and m["id"] not in skip]
        return min(found, key=int) if found else None

    def _bot_user(self) -> str:
        """The bot user's id (``GET /users/@me``,
        https://discord.com/developers/docs/resources/user#get-current-user; cached).

        Raises:
            ChannelError: Discord could not be asked, or answered no id.
        """
        with self._lock:
            known = self._bot_user_id
        if known is None:
            known = _message_id(self.client.request("GET", "/users/@me"))
            with self._lock:
                self._bot_user_id = known
        return known

    def direct_chat(self, identity: str) -> str:
        """Open (or find) the DM channel with the user ``identity`` (a user id): Create DM,
        ``POST /users/@me/channels`` (https://discord.com/developers/docs/resources/user#create-dm);
        the answer is cached per user.

        Raises:
            ChannelError: Discord refused (a user who shares no server with the bot or blocks
                DMs: permanent) or could not be reached.
        """
        with self._lock:
            known = self._dm_channels.get(identity)
        if known:
            return known
        body = self.client.request("POST", "/users/@me/channels", json={"recipient_id": identity})
        if not isinstance(body, dict) or not body.get("id"):
            raise ChannelError("Discord opened a DM but returned no channel id", status=0)
        with self._lock:
            self._dm_channels[identity] = str(body["id"])
        return str(body["id"])

    def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Edit the original response or a follow-up (interaction), or a DM message.

        An ``@original`` that Discord does not know yet is transient, not gone: the agent can
        answer before Discord has processed the deferred response that creates it.  A reply's
        message in its thread (``<thread id>:<message id>``) is edited with the bot token.
        """
        if chat_id.startswith(INTERACTION_PREFIX) and ":" in message_id:
            thread, _, message = message_id.partition(":")
            path = f"/channels/{thread}/messages/{message}"
        elif chat_id.startswith(INTERACTION_PREFIX):
            target = self.targets(chat_id.removeprefix(INTERACTION_PREFIX))
            path = f"/webhooks/{target.application_id}/{target.token}/messages/{message_id}"
        else:
            path = f"/channels/{chat_id}/messages/{message_id}"
        try:
            self.client.request("PATCH", path, json={"content": text})
        except ChannelError as exc:
            if exc.message_gone and message_id == "@original":
                raise ChannelError(str(exc), status=exc.status) from exc
            raise

    def typing(self, chat_id: str) -> None:
        """``POST /channels/{id}/typing`` in a DM (shows for about 10 s); nothing for a slash
        command, whose deferred response already shows "is thinking..."."""
        if not chat_id.startswith(INTERACTION_PREFIX):
            self.client.request("POST", f"/channels/{chat_id}/typing")

    def existing_message(self, chat_id: str) -> str | None:
        """``@original`` for a slash command: the deferred response is the reply's first message."""
        return "@original" if chat_id.startswith(INTERACTION_PREFIX) else None

    def fetch_media(self, attachment: dict, max_bytes: int) -> MediaFile:
        """GET the attachment's CDN ``url`` (no bot token: CDN links are signed themselves and
        expire, https://discord.com/developers/docs/reference#signed-attachment-cdn-urls).

        Raises:
            MediaTooLarge: the announced ``size`` or the bytes received exceed ``max_bytes``.
            ChannelError: refused (permanent: an expired or deleted link, 403/404) or unreachable.
        """
        size = attachment.get("size")
        if isinstance(size, int) and size > max_bytes:
            raise MediaTooLarge(size, max_bytes)
        url = attachment.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ChannelError("the attachment has no URL", permanent=True)
        with self._lock:
            if self._downloads is None:
                self._downloads = downloads.new_client()
            http = self._downloads
        content, served_type = downloads.download(http, url, max_bytes)
        return MediaFile(content, str(attachment.get("mime_type") or served_type),
                         str(attachment.get("name") or ""))

    def close(self) -> None:
        """Close the REST client."""
        self.client.close()
        if self._downloads is not None:
            self._downloads.close()


def _message_id(body: object) -> str:
    """The ``id`` of a message (or user) object Discord answered.

    Raises:
        ChannelError: (status 0) no id in the answer: the outcome is unknown.
    """
    if not isinstance(body, dict) or not body.get("id"):
        raise ChannelError("Discord answered no id", status=0)
    return str(body["id"])


def _thread_name(content: object) -> str:
    """A thread's name: the first non-blank line of ``content``, at most ``THREAD_NAME_LIMIT``
    characters, or ``Reply`` (a name must not be empty)."""
    lines = str(content or "").splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    return first[:THREAD_NAME_LIMIT] or "Reply"


def _search_after(ledger) -> str:
    """The ``after`` snowflake of a recovery search (module docstring): ``pending_after``, else
    the snowflake of the ledger row's ``created_at`` (naive UTC) less ``CLOCK_SKEW``."""
    if ledger.pending_after and str(ledger.pending_after).isdigit():
        return str(ledger.pending_after)
    millis = int((ledger.created_at.replace(tzinfo=UTC).timestamp() - CLOCK_SKEW) * 1000)
    return str(max(millis - DISCORD_EPOCH_MS, 0) << 22)
