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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from control.channels.base import ChannelAdapter, ChannelError, ChannelLimits
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
        self._lock = threading.Lock()

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
                client = WebClient(token=token, base_url=self._api_base, timeout=self._timeout)
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
