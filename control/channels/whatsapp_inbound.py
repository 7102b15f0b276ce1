"""WhatsApp Cloud API webhooks, inbound side: the signature, the verification handshake and the
payload → ``InboundMessage`` / ``StatusUpdate``.

Payload shape (https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components):
``{"object": "whatsapp_business_account", "entry": [{"id", "changes": [{"field": "messages",
"value": {"metadata", "contacts", "messages": [...]} | {"statuses": [...]}}]}]}``.  One POST may
carry several messages and statuses; each message is keyed by its ``id`` (the wamid), which
Meta keeps when it redelivers, so routing is idempotent on it.

Who is speaking is the sender's ``wa_id`` (``from``); the reply goes to the same number, so the
chat id is the ``wa_id`` too.  Media messages carry a media id that the adapter's
``fetch_media`` resolves (``control.channels.whatsapp``); a voice note is an ``audio`` message
with ``"voice": true``.  Other message types (reactions, locations, edits, ...) are acknowledged
and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pywa.types import MessageType

from control.channels.base import InboundMessage
from control.errors import BadRequest, Unauthorized

CHANNEL = "whatsapp"
SIGNATURE_PREFIX = "sha256="
# Message type (pywa's catalogue of the Cloud API's types) → the attachment kind
# (wire.protocol.ATTACHMENT_KINDS) of its media object.
MEDIA_KINDS: dict[str, str] = {
    MessageType.IMAGE: "image", MessageType.AUDIO: "audio", MessageType.DOCUMENT: "document",
    MessageType.VIDEO: "video", MessageType.STICKER: "sticker"}
LINK_COMMANDS = ("link", "start", "help")


@dataclass(frozen=True)
class StatusUpdate:
    """One status callback of a message the business sent.

    Attributes:
        message_id: the wamid the status is about.
        status: ``sent``, ``delivered``, ``read`` or ``failed`` (others are kept as given).
        recipient: the ``recipient_id`` (the user's wa_id).
        timestamp: Unix seconds as Meta sent it (string).
        error: for ``failed``: ``"<code> <title>"`` of the first error, else ``""``.
    """

    message_id: str
    status: str
    recipient: str
    timestamp: str
    error: str = ""


@dataclass(frozen=True)
class WebhookBatch:
    """What one webhook POST carried: ``messages`` (``InboundMessage``), ``statuses``, and
    ``sent_at``: ``{wamid: Unix seconds}`` of each message's ``timestamp`` (when it is a number)."""

    messages: tuple[InboundMessage, ...]
    statuses: tuple[StatusUpdate, ...]
    sent_at: dict[str, int]


def verify_signature(raw: bytes, header: str | None, app_secret: str) -> None:
    """Check ``X-Hub-Signature-256`` over the raw body bytes.

    The scheme (https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads):
    ``sha256=`` and the hex HMAC-SHA256 of the body with the app secret.  Compared as bytes in
    constant time, so a non-ASCII header is simply wrong (``hmac.compare_digest`` on ``str``
    raises ``TypeError`` for non-ASCII, which is what pywa's validator does).

    Raises:
        Unauthorized: no app secret configured (WhatsApp off), or a missing or wrong signature.
    """
    if not app_secret:
        raise Unauthorized("WhatsApp is not configured on this server (WHATSAPP_APP_SECRET)")
    expected = SIGNATURE_PREFIX + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest((header or "").encode("utf-8", "replace"), expected.encode()):
        raise Unauthorized("bad or missing X-Hub-Signature-256")


def verification_challenge(args, verify_token: str) -> str | None:
    """Answer Meta's subscription handshake (``GET`` with ``hub.mode``, ``hub.verify_token``,
    ``hub.challenge``: https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests).

    Returns:
        The ``hub.challenge`` to echo, or None when the request must be refused (403): not a
        ``subscribe``, no token configured, or the token differs (constant-time compare).
    """
    given = str(args.get("hub.verify_token", ""))
    if args.get("hub.mode") != "subscribe" or not verify_token or "hub.challenge" not in args:
        return None
    if not hmac.compare_digest(given.encode("utf-8", "replace"), verify_token.encode()):
        return None
    return str(args["hub.challenge"])


def parse_webhook(body: object) -> WebhookBatch:
    """Read a verified, decoded webhook body into its messages and statuses.

    Raises:
        BadRequest: not the Cloud API's shape.
    """
    if not isinstance(body, dict) or not isinstance(body.get("entry", []), list):
        raise BadRequest("a WhatsApp webhook body is an object with an entry list")
    messages, statuses, sent_at = [], [], {}
    for entry in body.get("entry", []):
        for change in _list(_object(entry, "entry").get("changes"), "changes"):
            value = _object(_object(change, "change").get("value", {}), "value")
            for item in _list(value.get("messages"), "messages"):
                message = _message(_object(item, "message"))
                if message is not None:
                    messages.append(message)
                    stamp = _text(item, "timestamp")
                    if stamp.isascii() and stamp.isdigit() and len(stamp) <= 12:
                        sent_at[message.message_id] = int(stamp)
            for item in _list(value.get("statuses"), "statuses"):
                statuses.append(_status(_object(item, "status")))
    return WebhookBatch(tuple(messages), tuple(statuses), sent_at)


def _object(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object")
    return value


def _list(value, name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list")
    return value


def _text(obj: dict, name: str, required: bool = False) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{name} must be a string")
    if "\x00" in value:  # cannot be stored (PostgreSQL text), never sent by WhatsApp
        raise BadRequest(f"{name} contains a NUL character")
    return value


def _message(item: dict) -> InboundMessage | None:
    """One ``messages`` item → ``InboundMessage`` (None: a type we do not handle)."""
    sender, wamid, kind = _text(item, "from", True), _text(item, "id", True), _text(item, "type")
    text = ""
    attachments: tuple[dict, ...] = ()
    if kind == MessageType.TEXT:
        text = _text(_object(item.get("text"), "text"), "body")
    elif kind in MEDIA_KINDS:
        media = _object(item.get(kind), kind)
        text = _text(media, "caption")
        attachments = (_attachment(kind, media),)
    else:
        return None
    return InboundMessage(channel=CHANNEL, event_id=wamid, event_type=kind, identity=sender,
                          user_id=sender, chat_id=sender, message_id=wamid, text=text,
                          command=_command(text), attachments=attachments)


def _attachment(kind: str, media: dict) -> dict:
    """The attachment of a media object (kinds per ``wire.protocol.ATTACHMENT_KINDS``)."""
    if kind == MessageType.AUDIO and media.get("voice") is True:
        kind = "voice"
    attachment = {"kind": MEDIA_KINDS.get(kind, kind), "file_id": _text(media, "id", True),
                  "mime_type": _text(media, "mime_type"), "sha256": _text(media, "sha256")}
    if kind == "document":
        attachment["name"] = _text(media, "filename")
    return attachment


def _command(text: str) -> tuple[str, str] | None:
    """``/link CODE``, ``/start CODE`` or ``/help`` (the wa.me link prefills ``/link CODE``)."""
    head, _, rest = text.strip().partition(" ")
    name = head[1:].lower() if head.startswith("/") else ""
    return (name, rest.strip()) if name in LINK_COMMANDS else None


def _status(item: dict) -> StatusUpdate:
    errors = _list(item.get("errors"), "errors")
    error = ""
    if errors:
        first = _object(errors[0], "error")
        error = f"{first.get('code', '')} {first.get('title') or first.get('message') or ''}".strip()
    return StatusUpdate(message_id=_text(item, "id", True), status=_text(item, "status", True),
                        recipient=_text(item, "recipient_id"), timestamp=_text(item, "timestamp"),
                        error=error[:500])
