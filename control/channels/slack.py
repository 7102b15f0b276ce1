"""Slack adapter: chat.postMessage / chat.update with each workspace's bot token (slack_sdk).

Chat ids (what ``control.web.slack`` puts in ``Envelope.chat_id``), all prefixed with the
workspace so the right installation's token is used:

* ``T123:D456`` — a conversation: the DM with the bot, or a channel;
* ``T123:C456:1595926230.009600`` — a thread of that channel (a reply to an ``@mention``);
* ``T123:@U789`` — the user's DM with the bot, opened with ``conversations.open`` when first
  sent to (the answer to ``/hermes`` or to the "Ask Hermes" modal).

A message's platform id is its ``ts``, unique within its channel.

Limits (https://docs.slack.dev/reference/methods/chat.postMessage#truncating): Slack truncates
``text`` beyond 40,000 characters and recommends at most 4,000 for readability, so replies are
split at 4,000 (``MAX_TEXT``).  Rate limits (https://docs.slack.dev/apis/web-api/rate-limits):
``chat.postMessage`` is "special": about one message per second per channel;
``chat.update`` is Tier 3 (50+ per minute); beyond them Slack answers HTTP 429 with a
``Retry-After`` header in seconds, which becomes ``ChannelError.retry_after``.  Text is
converted from Markdown to mrkdwn (``control.channels.slack_mrkdwn``).

Files: a message with files (``message`` subtype ``file_share``, ``app_mention``) lists them in
``files`` (https://docs.slack.dev/reference/objects/file-object); ``file_attachments`` keeps what
a download needs and ``fetch_media`` GETs ``url_private_download`` with the workspace's bot
token as ``Authorization: Bearer`` (https://docs.slack.dev/messaging/working-with-files#downloading_files),
which needs the ``files:read`` scope.  Without it Slack answers its HTML sign-in page with
status 200, which is taken as a refusal.

Crash recovery (``find_sent``): ``chat.postMessage`` has no idempotency key, so a post whose
answer was lost is looked for before posting again.  A thread chat reads
``conversations.replies`` (https://docs.slack.dev/reference/methods/conversations.replies),
any other chat ``conversations.history`` (https://docs.slack.dev/reference/methods/conversations.history),
from ``oldest`` = the intent's ``pending_after`` (the highest ``ts`` the ledger knew: every
message posted since has a higher one) or, when none is known, the ledger row's ``created_at``
less ``CLOCK_SKEW``; the lost post is the earliest message by our bot (its ``bot_id`` or bot
user from ``auth.test``) whose ``text`` is the mrkdwn ``send`` posts and whose ``ts`` is
recorded nowhere.  Scopes: ``im:history`` for the DM (in ``SLACK_SCOPES``), ``channels:history``
(public) or ``groups:history`` (private) for a channel thread, which the app does not ask for
by default.  What cannot be recovered, then posted a second time: a chat whose history the
token may not read (``missing_scope``, ``not_in_channel``: logged), a post that Slack stored
with a text other than the one sent, and one outside the ``SEARCH_LIMIT`` messages a search
reads (one call: ``history`` lists the newest first, so more than that many later messages hide
it; ``replies`` the oldest first).  ``SEARCH_LIMIT`` is 15 because Slack allows no more, and one
call a minute, to commercially distributed non-Marketplace apps since May 2025.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from control.channels import downloads
from control.channels.base import (
    ChannelAdapter,
    ChannelError,
    ChannelLimits,
    MediaFile,
    MediaTooLarge,
)
from control.channels.slack_mrkdwn import to_mrkdwn

log = logging.getLogger(__name__)

MAX_TEXT = 4000  # characters: Slack's readability recommendation (module docstring)
SLACK_API_BASE = "https://slack.com/api/"
# Error codes worth retrying (https://docs.slack.dev/reference/methods/chat.postMessage#errors:
# "internal_error", "fatal_error", "service_unavailable", "request_timeout"); every other
# ``ok: false`` answer refuses the call for good (bad channel, revoked token, missing scope...).
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "ratelimited"})
GONE_ERRORS = frozenset({"message_not_found"})
SEARCH_LIMIT = 15  # messages one recovery search reads (module docstring: Slack's cap).
CLOCK_SKEW = 60.0  # seconds a search bound from our clock reaches back (Slack's clock may lag).


def parse_chat_id(chat_id: str) -> tuple[str, str, str | None]:
    """Split a Slack chat id into ``(team id, conversation, thread ts or None)``.

    The conversation is a channel id, or ``@<user id>`` for the user's DM with the bot.

    Raises:
        ChannelError: (permanent) not a Slack chat id.
    """
    team, sep, rest = chat_id.partition(":")
    conversation, _, thread = rest.partition(":")
    if not sep or not team or not conversation:
        raise ChannelError(f"not a Slack chat id: {chat_id!r}", permanent=True)
    return team, conversation, thread or None


# Where Slack serves files (``url_private_download``); the bot token is sent nowhere else.
FILES_HOST = "files.slack.com"


def file_attachments(event: dict, team: str) -> tuple[dict, ...]:
    """The files of a message event as attachments: ``{"kind", "file_id", "url", "team",
    "size"?, "mime_type"?, "name"?}`` (``team`` picks the bot token for ``fetch_media``).

    Files without a download URL (``mode`` ``external``, ``tombstone``: deleted) are left out.
    """
    attachments = []
    for item in event.get("files") or ():
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) \
                or not isinstance(item.get("url_private_download"), str):
            continue
        mime_type = item["mimetype"] if isinstance(item.get("mimetype"), str) else ""
        attachment = {"kind": downloads.kind_for(mime_type), "file_id": item["id"],
                      "url": item["url_private_download"], "team": team}
        if isinstance(item.get("size"), int) and not isinstance(item["size"], bool):
            attachment["size"] = item["size"]
        if mime_type:
            attachment["mime_type"] = mime_type
        if isinstance(item.get("name"), str):
            attachment["name"] = item["name"]
        attachments.append(attachment)
    return tuple(attachments)


def chat_id_for(team: str, conversation: str, thread_ts: str | None = None) -> str:
    """Build the chat id ``team:conversation[:thread_ts]`` (``parse_chat_id``'s inverse)."""
    return f"{team}:{conversation}" + (f":{thread_ts}" if thread_ts else "")


class SlackAdapter(ChannelAdapter):
    """Sends and edits the bot's Slack messages in every workspace that installed the app.

    Args:
        bot_token: ``bot_token(team_id) -> str | None``, the workspace's bot token from the
            installation store (``control.services.slack_install``); None when not installed.
        api_base: the Web API base URL (``SLACK_API_BASE``; the stand-in's in tests).
        timeout: seconds per request.
    """

    name = "slack"
    limits = ChannelLimits(max_text=MAX_TEXT, can_edit=True, min_edit_interval=1.0, typing=False)

    def __init__(self, bot_token: Callable[[str], str | None], api_base: str = SLACK_API_BASE,
                 timeout: float = 10.0):
        self._bot_token = bot_token
        self._api_base = api_base.rstrip("/") + "/"
        self._timeout = timeout
        self._clients: dict[str, WebClient] = {}
        self._dm_channels: dict[tuple[str, str], str] = {}
        self._identities: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._downloads: httpx.Client | None = None
        # The stand-in serves files next to its Web API (tests); production: files.slack.com.
        self._file_hosts = {FILES_HOST, urlsplit(self._api_base).hostname}

    def client(self, team: str) -> WebClient:
        """The ``WebClient`` for workspace ``team`` (one per token, reused).

        Raises:
            ChannelError: (permanent) the app is not installed in that workspace.
        """
        token = self._bot_token(team)
        if not token:
            raise ChannelError(f"the Slack app is not installed in workspace {team}",
                               permanent=True)
        with self._lock:
            client = self._clients.get(token)
            if client is None:
                client = WebClient(token=token, base_url=self._api_base,
                                   timeout=math.ceil(self._timeout))  # the SDK takes whole seconds
                self._clients[token] = client
            return client

    def send(self, chat_id: str, text: str, reply_to: str | None = None) -> str:
        """Post ``text`` with ``chat.postMessage``; return the new message's ``ts``.

        ``reply_to`` is not used: a threaded reply's thread is part of its chat id.

        Raises:
            ChannelError: Slack refused (permanent), rate limited (429, ``retry_after``) or
                could not be reached (status 0).
        """
        team, conversation, thread = parse_chat_id(chat_id)
        client = self.client(team)
        channel = self._channel(client, team, conversation)
        args = {"channel": channel, "text": to_mrkdwn(text)}
        if thread:
            args["thread_ts"] = thread
        answer = self._call(client.chat_postMessage, "chat.postMessage", **args)
        return str(answer["ts"])

    def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace the text of the bot's message ``message_id`` (its ``ts``) with ``chat.update``.

        Raises:
            ChannelError: ``message_gone`` when Slack says ``message_not_found``; otherwise as
                ``send``.
        """
        team, conversation, _ = parse_chat_id(chat_id)
        client = self.client(team)
        channel = self._channel(client, team, conversation)
        self._call(client.chat_update, "chat.update", channel=channel, ts=message_id,
                   text=to_mrkdwn(text))

    def find_sent(self, ledger, recorded: frozenset[str]) -> str | None:
        """Return the ``ts`` of the message a lost ``chat.postMessage`` created, or None.

        Reads the chat's history after the intent's bound (module docstring: method, bound,
        scopes and what cannot be recovered).

        Raises:
            ChannelError: (transient, rate limited) Slack could not be read now; (permanent)
                the app is no longer installed in the workspace, as ``send``.
        """
        team, conversation, thread = parse_chat_id(ledger.chat_id)
        client = self.client(team)
        channel = self._channel(client, team, conversation)
        args = {"channel": channel, "oldest": _oldest(ledger), "limit": SEARCH_LIMIT}
        try:
            if thread:
                answer = self._call(client.conversations_replies, "conversations.replies",
                                    ts=thread, **args)
            else:
                answer = self._call(client.conversations_history, "conversations.history", **args)
        except ChannelError as exc:
            if not exc.permanent:
                raise
            log.warning("reply %s: cannot read Slack chat %s to look for a lost post (%s); "
                        "posting again", ledger.envelope_id, ledger.chat_id, exc)
            return None
        ours, text = self._identity(client), to_mrkdwn(ledger.pending_text or "")
        found = [str(m["ts"]) for m in answer.get("messages") or ()
                 if isinstance(m, dict) and isinstance(m.get("ts"), str) and m.get("text") == text
                 and ours & {m.get("bot_id"), m.get("user")} and m["ts"] not in recorded]
        return min(found, key=Decimal) if found else None

    def fetch_media(self, attachment: dict, max_bytes: int) -> MediaFile:
        """GET ``url_private_download`` with the workspace's bot token (module docstring).

        Raises:
            MediaTooLarge: the announced ``size`` or the bytes received exceed ``max_bytes``.
            ChannelError: (permanent) not installed, a URL off Slack's file host, a deleted
                file or no ``files:read`` (the sign-in page); (transient) 5xx or unreachable.
        """
        size = attachment.get("size")
        if isinstance(size, int) and size > max_bytes:
            raise MediaTooLarge(size, max_bytes)
        url = str(attachment.get("url") or "")
        if urlsplit(url).hostname not in self._file_hosts:
            raise ChannelError("the file is not on Slack's file host", permanent=True)
        token = self._bot_token(str(attachment.get("team") or ""))
        if not token:
            raise ChannelError("the Slack app is not installed in that workspace", permanent=True)
        with self._lock:
            if self._downloads is None:
                self._downloads = downloads.new_client()
            http = self._downloads
        content, served_type = downloads.download(http, url, max_bytes,
                                                  headers={"Authorization": f"Bearer {token}"})
        declared = str(attachment.get("mime_type") or "")
        if served_type == "text/html" and not declared.startswith("text/html"):
            raise ChannelError("Slack answered its sign-in page (files:read missing?)",
                               status=200, permanent=True)
        return MediaFile(content, declared or served_type, str(attachment.get("name") or ""))

    def direct_chat(self, identity: str) -> str:
        """Return the chat id of the DM with the person ``<team>:<user>`` (``<team>:@<user>``;
        ``send`` opens it with ``conversations.open``).

        Raises:
            ChannelError: (permanent) ``identity`` is not ``<team>:<user>``.
        """
        team, _, user = identity.partition(":")
        if not team or not user or ":" in user:
            raise ChannelError(f"not a Slack identity: {identity!r}", permanent=True)
        return chat_id_for(team, f"@{user}")

    def _channel(self, client: WebClient, team: str, conversation: str) -> str:
        """Resolve ``@<user>`` to the DM channel id (``conversations.open``, cached)."""
        if not conversation.startswith("@"):
            return conversation
        key = (team, conversation[1:])
        with self._lock:
            known = self._dm_channels.get(key)
        if known:
            return known
        answer = self._call(client.conversations_open, "conversations.open", users=key[1])
        channel = str(answer["channel"]["id"])
        with self._lock:
            self._dm_channels[key] = channel
        return channel

    def _identity(self, client: WebClient) -> frozenset[str]:
        """The bot's ``bot_id`` and bot user id in ``client``'s workspace (``auth.test``,
        https://docs.slack.dev/reference/methods/auth.test; cached per token)."""
        token = str(client.token)
        with self._lock:
            known = self._identities.get(token)
        if known is not None:
            return known
        answer = self._call(client.auth_test, "auth.test")
        identity = frozenset(str(answer[key]) for key in ("bot_id", "user_id") if answer.get(key))
        with self._lock:
            self._identities[token] = identity
        return identity

    @staticmethod
    def _call(method, name: str, **args):
        """Call a WebClient method, turning every failure into a ``ChannelError``."""
        try:
            return method(**args)
        except SlackApiError as exc:
            response = exc.response
            error = str(response.get("error") or "unknown_error")
            status = response.status_code
            if status == 429:
                retry_after = float(response.headers.get("Retry-After")
                                    or response.headers.get("retry-after") or 1)
                raise ChannelError(f"{name} rate limited", status=429,
                                   retry_after=retry_after) from exc
            raise ChannelError(f"{name} failed: {error}", status=status or 200,
                               permanent=error not in TRANSIENT_ERRORS | GONE_ERRORS,
                               message_gone=error in GONE_ERRORS) from exc
        except (SlackClientError, OSError, ValueError) as exc:
            raise ChannelError(f"{name} failed: {exc}", status=0) from exc


def _oldest(ledger) -> str:
    """The ``oldest`` bound of a recovery search (module docstring): ``pending_after`` when it
    is a ``ts``, else the ledger row's creation (naive UTC) less ``CLOCK_SKEW``, as a ``ts``."""
    after = ledger.pending_after
    if after and after.replace(".", "", 1).isdigit():
        return str(after)
    return f"{ledger.created_at.replace(tzinfo=UTC).timestamp() - CLOCK_SKEW:.6f}"
