"""``TelegramAdapter``: the Bot API client behind the ``ChannelAdapter`` contract.

Limits: 4096 characters per message (https://core.telegram.org/bots/api#sendmessage); about one
message per second per chat (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this);
``sendChatAction`` shows "typing" for about 5 seconds.  Error classification keeps what the
delivery worker did before adapters existed: 429 is a rate limit with ``parameters.retry_after``,
400 "message to edit not found" means the message is gone, any other 400 or 403 is a refusal
(bad chat, bot blocked), everything else (5xx, transport) is transient.  A lost ``sendMessage``
answer is searched for with ``control.services.delivery_recovery.SentMessageFinder``.
"""

from __future__ import annotations

from control.channels.base import ChannelAdapter, ChannelError, ChannelLimits
from control.channels.telegram import BotApiClient, BotApiError
from control.services.delivery_recovery import SentMessageFinder

TELEGRAM_LIMITS = ChannelLimits(max_text=4096, can_edit=True, min_edit_interval=1.0, typing=True)


def channel_error(exc: BotApiError) -> ChannelError:
    """Return the ``ChannelError`` for a Bot API failure (classification in the module docstring)."""
    gone = exc.error_code == 400 and "message to edit not found" in str(exc)
    return ChannelError(str(exc), status=exc.error_code, retry_after=exc.retry_after,
                        permanent=exc.error_code in (400, 403) and not gone, message_gone=gone)


class TelegramAdapter(ChannelAdapter):
    """Sends and edits replies through the Bot API.

    Args:
        client: the Bot API client (``control.runtime.Runtime.bot``).
    """

    name = "telegram"
    limits = TELEGRAM_LIMITS

    def __init__(self, client: BotApiClient):
        self.client = client
        self.finder = SentMessageFinder(client)

    def send(self, chat_id: str, text: str, reply_to: str | None = None) -> str:
        """``sendMessage``; return the new message's id (``ChannelError`` on failure)."""
        try:
            return self.client.send_message(chat_id, text)
        except BotApiError as exc:
            raise channel_error(exc) from exc

    def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """``editMessageText``; "message is not modified" is success."""
        try:
            self.client.edit_message_text(chat_id, message_id, text)
        except BotApiError as exc:
            raise channel_error(exc) from exc

    def typing(self, chat_id: str) -> None:
        """``sendChatAction`` with ``typing``."""
        try:
            self.client.send_chat_action(chat_id, "typing")
        except BotApiError as exc:
            raise channel_error(exc) from exc

    def find_sent(self, ledger) -> str | None:
        """Probe for the message a lost ``sendMessage`` created (``SentMessageFinder``)."""
        try:
            return self.finder.find(ledger)
        except BotApiError as exc:
            raise channel_error(exc) from exc

    def close(self) -> None:
        """Close the Bot API client's connections."""
        self.client.close()
