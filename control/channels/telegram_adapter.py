"""``TelegramAdapter``: the Bot API client behind the ``ChannelAdapter`` contract.

Limits: 4096 characters per message (https://core.telegram.org/bots/api#sendmessage); about one
message per second per chat (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this);
``sendChatAction`` shows "typing" for about 5 seconds.  Error classification keeps what the
delivery worker did before adapters existed: 429 is a rate limit with ``parameters.retry_after``,
400 "message to edit not found" means the message is gone, any other 400 or 403 is a refusal
(bad chat, bot blocked), everything else (5xx, transport) is transient.  A lost ``sendMessage``
answer is searched for with ``control.channels.telegram_recovery.SentMessageFinder``.

Files (``fetch_media``): ``getFile`` gives the download path, then ``GET
<api base>/file/bot<token>/<file_path>`` the bytes (https://core.telegram.org/bots/api#getfile).
Bots download at most 20 MB; ``getFile`` refuses a larger file with 400 "file is too big".
"""

from __future__ import annotations

import threading

import httpx

from control.channels import downloads
from control.channels.base import (
    ChannelAdapter,
    ChannelError,
    ChannelLimits,
    MediaFile,
    MediaTooLarge,
)
from control.channels.telegram import BotApiClient, BotApiError
from control.channels.telegram_recovery import Overwrite, SentMessageFinder

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
        on_overwrite: ``SentMessageFinder``'s report of a recovery probe that overwrote a bot
            message recorded nowhere (the delivery worker raises an attention item); None:
            logged only.
    """

    name = "telegram"
    limits = TELEGRAM_LIMITS

    def __init__(self, client: BotApiClient, on_overwrite: Overwrite | None = None):
        self.client = client
        self.finder = SentMessageFinder(client, on_overwrite)
        self._downloads: httpx.Client | None = None
        self._lock = threading.Lock()

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

    def find_sent(self, ledger, recorded: frozenset[str]) -> str | None:
        """Probe for the message a lost ``sendMessage`` created (``SentMessageFinder``)."""
        try:
            return self.finder.find(ledger, recorded)
        except BotApiError as exc:
            raise channel_error(exc) from exc

    def fetch_media(self, attachment: dict, max_bytes: int) -> MediaFile:
        """``getFile`` then the download (module docstring); the MIME type is the one the
        message announced (voice, audio, document, video), else the file server's, else ``""``
        (inferred from the bytes by the caller: photos are JPEG).

        Raises:
            MediaTooLarge: ``size``/``file_size`` above ``max_bytes``, "file is too big", or
                more bytes than ``max_bytes`` arrived.
            ChannelError: refused (permanent: unknown file id) or unreachable (transient).
        """
        announced = attachment.get("size")
        if isinstance(announced, int) and announced > max_bytes:
            raise MediaTooLarge(announced, max_bytes)
        try:
            url, size = self.client.get_file(str(attachment.get("file_id") or ""))
        except BotApiError as exc:
            if exc.error_code == 400 and "too big" in str(exc):
                raise MediaTooLarge(announced or max_bytes + 1, max_bytes) from exc
            raise channel_error(exc) from exc
        if size is not None and size > max_bytes:
            raise MediaTooLarge(size, max_bytes)
        content, served_type = downloads.download(self._http(), url, max_bytes)
        return MediaFile(content, str(attachment.get("mime_type") or served_type or ""),
                         str(attachment.get("name") or ""))

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._downloads is None:
                self._downloads = downloads.new_client()
            return self._downloads

    def close(self) -> None:
        """Close the Bot API client's connections."""
        self.client.close()
        if self._downloads is not None:
            self._downloads.close()
