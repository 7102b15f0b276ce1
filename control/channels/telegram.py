"""Telegram adapter: webhook verification, Update parsing and the Bot API client.

Updates are parsed from the raw JSON with a tolerant reader rather than python-telegram-bot's
``Update.de_json``, because the latter rejects the legacy shapes that Telegram's own webhook
guide still publishes (``from`` without ``is_bot``); any well-formed Update must get a 200.
Bot API wire format: https://core.telegram.org/bots/api#making-requests
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx

from control.channels.base import InboundMessage
from control.errors import BadRequest, HermesError, Unauthorized

log = logging.getLogger(__name__)

# Update fields that carry a Message (https://core.telegram.org/bots/api#update).
MESSAGE_KINDS = ("message", "edited_message", "channel_post", "edited_channel_post",
                 "business_message", "edited_business_message")

# Message fields holding a file (https://core.telegram.org/bots/api#message) and the attachment
# kind each becomes (``wire.protocol.ATTACHMENT_KINDS``); ``photo`` is an array of PhotoSize.
MEDIA_FIELDS = {"photo": "image", "voice": "voice", "audio": "audio", "document": "document",
                "video": "video", "sticker": "sticker"}
# Bots download files of at most 20 MB (https://core.telegram.org/bots/api#getfile).
GETFILE_MAX_BYTES = 20 * 1024 * 1024


def verify_secret(header_value: str | None, expected: str) -> None:
    """Compare ``X-Telegram-Bot-Api-Secret-Token`` with the configured secret in constant time.

    Both sides are compared as bytes: ``hmac.compare_digest`` raises ``TypeError`` on non-ASCII
    ``str``, and a header that cannot be encoded is simply a mismatch, since a real secret is
    only ``A-Z a-z 0-9 _ -`` (https://core.telegram.org/bots/api#setwebhook).

    Raises:
        Unauthorized: no secret configured, header missing, or mismatch.
    """
    if not expected or header_value is None or not hmac.compare_digest(
            header_value.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise Unauthorized("bad or missing X-Telegram-Bot-Api-Secret-Token")


@dataclass(frozen=True)
class InboundUpdate:
    """The parts of a Telegram Update the control plane acts on.

    Attributes:
        update_id: the Update's id (idempotency key).
        kind: which Update field was present (``message``, ``edited_message``, ``callback_query``, ...).
        chat_id, chat_type: the chat, when the update has one (``private``, ``group``, ...).
        user_id: the sender's id, when known.
        message_id: the message's id, when the update carries a message.
        text: message text or media caption (empty if none).
        attachments: ``[{"kind": "image"|"voice"|"document"|..., "file_id", "size"?,
            "mime_type"?, "name"?}]`` (``MEDIA_FIELDS``).
    """

    update_id: int
    kind: str
    chat_id: str | None = None
    chat_type: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    text: str = ""
    attachments: tuple = ()

    @property
    def is_private_message(self) -> bool:
        """True for a new message in a one-to-one chat with the bot."""
        return self.kind == "message" and self.chat_type == "private"

    def command(self) -> tuple[str, str] | None:
        """Return ``(command, argument)`` for ``/cmd[@bot] arg`` text, else None."""
        if not self.text.startswith("/"):
            return None
        head, _, arg = self.text.partition(" ")
        return head[1:].split("@", 1)[0].lower(), arg.strip()


def parse_update(data: object, max_photo_bytes: int = GETFILE_MAX_BYTES) -> InboundUpdate:
    """Parse a decoded Update.

    Args:
        data: the decoded JSON.
        max_photo_bytes: a photo's attachment is its largest size that fits (``GETFILE_MAX_BYTES``
            by default: the Bot API's download limit).

    Structure is read tolerantly (a field of the wrong shape counts as absent), but every
    value that is stored or forwarded is checked: ids are integers, text and file ids are
    strings without NUL (PostgreSQL text cannot hold it), the update kind is a field name.

    Raises:
        BadRequest: not an object, no integer ``update_id``, or a stored value of the wrong type.
    """
    if not isinstance(data, dict) or not _is_int(data.get("update_id")):
        raise BadRequest("not a Telegram Update: an object with an integer update_id is required")
    update_id = data["update_id"]
    kind = next((k for k in data if k != "update_id"), "unknown")
    if not _FIELD_NAME.fullmatch(kind):
        raise BadRequest("the Update's field name is not a Bot API field name")
    if kind in MESSAGE_KINDS and isinstance(data[kind], dict):
        return _from_message(update_id, kind, data[kind], max_photo_bytes)
    if kind == "callback_query" and isinstance(data[kind], dict):
        sender = _obj(data[kind].get("from"))
        chat = _obj(_obj(data[kind].get("message")).get("chat"))
        return InboundUpdate(update_id, kind, _id(chat.get("id"), "chat.id"), _text(chat.get("type")),
                             _id(sender.get("id"), "from.id"))
    return InboundUpdate(update_id, kind)


def _from_message(update_id: int, kind: str, message: dict, max_photo_bytes: int) -> InboundUpdate:
    chat = _obj(message.get("chat"))
    sender = _obj(message.get("from"))
    text = message.get("text") or message.get("caption") or ""
    attachments = []
    for field, attachment_kind in MEDIA_FIELDS.items():
        item = message.get(field)
        if isinstance(item, list):
            item = _photo_size(item, max_photo_bytes)
        if isinstance(item, dict) and item.get("file_id"):
            attachments.append(_attachment(attachment_kind, item))
    return InboundUpdate(update_id, kind, _id(chat.get("id"), "chat.id"), _text(chat.get("type")),
                         _id(sender.get("id"), "from.id"), _id(message.get("message_id"), "message_id"),
                         _text(text) or "", tuple(attachments))


def _photo_size(sizes: list, max_bytes: int) -> dict | None:
    """The largest PhotoSize whose ``file_size`` fits ``max_bytes`` (by pixels when sizes are
    unknown); the smallest when none fits, so the user hears it was too large."""
    sizes = [s for s in sizes if isinstance(s, dict) and s.get("file_id")]
    if not sizes:
        return None

    def weight(size: dict) -> tuple[int, int]:
        file_size = size["file_size"] if _is_int(size.get("file_size")) else 0
        width, height = size.get("width"), size.get("height")
        return file_size, width * height if isinstance(width, int) and isinstance(height, int) else 0

    fitting = [s for s in sizes if weight(s)[0] <= max_bytes]
    return max(fitting, key=weight) if fitting else min(sizes, key=weight)


def _attachment(kind: str, item: dict) -> dict:
    """``{"kind", "file_id"}`` plus ``size`` (``file_size``, bytes), ``mime_type`` and ``name``
    (``file_name``) when Telegram sent them: what ``TelegramAdapter.fetch_media`` needs."""
    attachment = {"kind": kind, "file_id": _text(item["file_id"], "file_id")}
    if _is_int(item.get("file_size")):
        attachment["size"] = item["file_size"]
    for source, target in (("mime_type", "mime_type"), ("file_name", "name")):
        value = _text(item.get(source))
        if value:
            attachment[target] = value
    return attachment


# Update field names are snake_case (https://core.telegram.org/bots/api#update); the kind is
# stored in a 255-character column, so anything else is not an Update.
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Bot API ids "have at most 52 significant bits" (https://core.telegram.org/bots/api#chat);
# a signed 64-bit bound keeps every id storable in an integer column.
_ID_BOUND = 2**63


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_ID_BOUND < value < _ID_BOUND


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def _id(value, field: str) -> str | None:
    if value is None:
        return None
    if not _is_int(value):
        raise BadRequest(f"{field} must be an integer")
    return str(value)


def _text(value, field: str | None = None) -> str | None:
    """Return ``value`` if it is a NUL-free string; else None, or BadRequest when ``field`` is named."""
    if isinstance(value, str) and "\x00" not in value:
        return value
    if field is not None or isinstance(value, str):
        raise BadRequest(f"{field or 'a text field'} must be a string without NUL characters")
    return None


class BotApiError(HermesError):
    """The Bot API answered ``ok: false``.

    Attributes:
        error_code: Telegram's ``error_code`` (HTTP-like: 400, 403, 429, ...).
        retry_after: seconds to wait, from ``parameters.retry_after`` on 429.
    """

    code = "telegram_error"

    def __init__(self, description: str, error_code: int, retry_after: float | None = None):
        super().__init__(description)
        self.error_code = error_code
        self.retry_after = retry_after


class BotApiClient:
    """Minimal synchronous Bot API client for replies.

    Args:
        token: the bot token.
        api_base: e.g. ``https://api.telegram.org`` (``TELEGRAM_API_BASE``).
        timeout: seconds per request.
    """

    def __init__(self, token: str, api_base: str = "https://api.telegram.org", timeout: float = 10.0):
        self._url = f"{api_base.rstrip('/')}/bot{token}/"
        self._file_url = f"{api_base.rstrip('/')}/file/bot{token}/"
        self._http = httpx.Client(timeout=timeout)

    def call(self, method: str, **params) -> Any:
        """Call ``method`` with JSON ``params``; return its ``result``.

        Raises:
            BotApiError: Telegram answered ``ok: false`` (``retry_after`` set on 429), or the
                request failed at the transport level (``error_code`` 0).
        """
        try:
            response = self._http.post(self._url + method, json=params)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BotApiError(f"{method} failed: {exc}", 0) from exc
        if body.get("ok"):
            return body.get("result")
        retry_after = (body.get("parameters") or {}).get("retry_after")
        raise BotApiError(body.get("description", "unknown error"),
                          int(body.get("error_code") or response.status_code), retry_after)

    def send_message(self, chat_id: str, text: str) -> str:
        """Send ``text`` to ``chat_id``; return the new message's id."""
        result = self.call("sendMessage", chat_id=chat_id, text=text)
        return str(result["message_id"])

    def edit_message_text(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace the text of a message the bot sent; an unchanged text is not an error."""
        try:
            self.call("editMessageText", chat_id=chat_id, message_id=int(message_id), text=text)
        except BotApiError as exc:
            if exc.error_code == 400 and "not modified" in str(exc):
                return
            raise

    def send_chat_action(self, chat_id: str, action: str = "typing") -> None:
        """Show ``action`` (e.g. typing) in the chat for about 5 seconds."""
        self.call("sendChatAction", chat_id=chat_id, action=action)

    def get_file(self, file_id: str) -> tuple[str, int | None]:
        """``getFile``: return the file's ``(download URL, file_size or None)``.

        The URL is ``<api base>/file/bot<token>/<file_path>``, valid for at least an hour
        (https://core.telegram.org/bots/api#getfile); it carries the token, so never log it.

        Raises:
            BotApiError: refused (400 for an unknown file id or "file is too big") or unreachable.
        """
        result = self.call("getFile", file_id=file_id)
        if not isinstance(result, dict) or not isinstance(result.get("file_path"), str):
            raise BotApiError("getFile returned no file_path", 400)
        size = result.get("file_size")
        return self._file_url + result["file_path"], size if isinstance(size, int) else None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()


def inbound_message(update: InboundUpdate) -> InboundMessage | None:
    """Return the ``InboundMessage`` of a new message in a private chat, else None (group
    chats, edits, callback queries: only a person's own chat with the bot reaches routing).

    The identity linked to a tenant is the private chat's id; ``/start CODE`` is the link
    command (Telegram's deep links, https://core.telegram.org/bots/features#deep-linking).
    """
    if not update.is_private_message or update.chat_id is None:
        return None
    return InboundMessage(channel="telegram", event_id=str(update.update_id), event_type=update.kind,
                          identity=update.chat_id, user_id=update.user_id or "",
                          chat_id=update.chat_id, message_id=update.message_id or str(update.update_id),
                          text=update.text, command=update.command(),
                          attachments=tuple(update.attachments))
