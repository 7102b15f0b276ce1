"""WhatsApp adapter: replies through the Cloud API (Graph API ``/{phone_number_id}/messages``).

Why pywa only in part: the issue asks for pywa (https://github.com/david-lev/pywa), and we use
its catalogues: ``pywa.errors.WhatsAppError.from_dict`` maps a Graph error object to a class per
published code (``ThrottlingError`` for 4/80007/130429/131056, ``ReEngagementMessage`` for
131047, ...), which is exactly what ``_channel_error`` needs, and ``pywa.types.MessageType`` /
``MessageStatusType`` name the message types and statuses the webhook reads
(``control.channels.whatsapp_inbound``, ``control.services.whatsapp_status``).  We do not use its
``WhatsApp`` client or webhook server: its ``GraphAPI`` pins the base URL to
``https://graph.facebook.com/v<version>`` (so neither the stand-in nor ``WHATSAPP_API_BASE``
could be used), its update validator compares ``str`` digests (``hmac.compare_digest`` raises
``TypeError`` on a non-ASCII header: a 500), and its duplicate filter is an in-memory cache of
one process, while Meta redelivers to any gunicorn worker, also after a restart.  So the
webhook (``control.web.whatsapp``) verifies the signature on the raw bytes and keys idempotency
on the wamid in the database, and the calls here are plain httpx (pywa's own HTTP client)
requests in the Cloud API's wire format.

Chat ids are the user's ``wa_id`` (phone number in international format, digits only).

Limits and rules (each from Meta's documentation):

* Text body at most 4096 characters
  (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#text-object).
* No editing of sent messages: ``limits.can_edit`` is False, so the delivery worker sends the
  final text only.
* Throughput: 80 messages per second per business number by default
  (https://developers.facebook.com/docs/whatsapp/throughput); the adapter spaces its sends
  ``1/throughput`` seconds apart.  Pair rate limit: about one message every 6 seconds to the
  same user, short bursts allowed
  (https://developers.facebook.com/docs/whatsapp/cloud-api/overview#pair-rate-limits): the
  delivery worker's per-chat throttle uses ``limits.min_edit_interval`` = 6 s between replies
  (the chunks of one long reply go out as a burst).
* The 24-hour customer-service window
  (https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows):
  free-form text only within 24 hours of the user's last message; outside it only an approved
  template (``WHATSAPP_TEMPLATE`` = ``name:language_code``, the text as its one body
  parameter).  Without a template the send is refused here as permanent, with the reason.
* Error codes (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes):
  HTTP 429, 4, 80007, 130429 (throughput) and 131056 (pair rate limit) are rate limits
  (``ChannelError.status`` 429 with ``retry_after``); 1, 2, 131000, 131016 and HTTP 5xx are
  transient; everything else (131047 outside the window, 131026 undeliverable, 190 expired
  token, 132001 unknown template...) is permanent.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from pywa.errors import ThrottlingError, WhatsAppError

from control.channels.base import (
    ChannelAdapter,
    ChannelError,
    ChannelLimits,
    MediaFile,
    MediaTooLarge,
)
from control.channels.whatsapp_format import to_whatsapp

DEFAULT_API_BASE = "https://graph.facebook.com/v23.0"
MAX_TEXT = 4096  # characters of a text body (module docstring)
PAIR_INTERVAL = 6.0  # seconds between messages to one user (pair rate limit)
THROUGHPUT = 80.0  # messages per second per business number (default throughput)
# Seconds to wait on a rate limit without a Retry-After header: a throughput hit clears within
# a second at 80 msg/s; a pair hit needs the 6 s spacing; 80007 (the WABA's hourly API limit)
# and 4 (the app's call limit) are per-hour budgets, so back off a minute (as for pywa's other
# ThrottlingError codes: 131048 spam rate limit, 131064, 133016).
RATE_LIMIT_WAIT = {130429: 1.0, 131056: PAIR_INTERVAL, 80007: 60.0, 4: 60.0}
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016})
# Template parameters may not contain new lines, tabs or more than four consecutive spaces
# (error 132018, error-codes page).
_TEMPLATE_SPACES = re.compile(r"[\n\t]+| {4,}")


@dataclass(frozen=True)
class Template:
    """An approved message template: ``name`` and ``language`` code (``hello_world``, ``en_US``)."""

    name: str
    language: str

    @classmethod
    def parse(cls, value: str) -> Template | None:
        """``"name:language_code"`` → ``Template``; ``""`` → None.

        Raises:
            ValueError: not ``name:language_code``.
        """
        if not value:
            return None
        name, sep, language = value.partition(":")
        if not (sep and name.strip() and language.strip()):
            raise ValueError(f"WHATSAPP_TEMPLATE must be name:language_code, not {value!r}")
        return cls(name.strip(), language.strip())


@dataclass(frozen=True)
class WhatsAppConfig:
    """The WhatsApp settings (``WHATSAPP_*``, README "Configuration").

    Attributes:
        verify_token: echoed check of Meta's subscription handshake (``GET`` webhook).
        app_secret: the Meta app secret that signs every webhook POST; ``""``: WhatsApp is off
            (every POST answers 401, no adapter is built).
        access_token: the system user's permanent token for the Graph API.
        phone_number_id: the business number's Graph id (the sender of every message).
        business_number: the business number in international format, digits only (the
            ``wa.me`` link users open to link their WhatsApp).
        api_base: the Graph API base URL with its version.
        template: ``name:language_code`` of the approved template sent outside the 24-hour
            window, or ``""``.
    """

    verify_token: str = ""
    app_secret: str = ""
    access_token: str = ""
    phone_number_id: str = ""
    business_number: str = ""
    api_base: str = DEFAULT_API_BASE
    template: str = ""

    @property
    def enabled(self) -> bool:
        """True when webhooks can be verified and replies sent."""
        return bool(self.app_secret and self.access_token and self.phone_number_id)

    @classmethod
    def from_settings(cls, settings) -> WhatsAppConfig:
        """The config of a ``control.settings.Settings``."""
        return cls(verify_token=settings.whatsapp_verify_token,
                   app_secret=settings.whatsapp_app_secret,
                   access_token=settings.whatsapp_access_token,
                   phone_number_id=settings.whatsapp_phone_number_id,
                   business_number=settings.whatsapp_business_number,
                   api_base=settings.whatsapp_api_base, template=settings.whatsapp_template)


def link_url(business_number: str, token: str) -> str:
    """The ``wa.me`` click-to-chat link that opens a chat with the business number and the
    linking command prefilled (https://faq.whatsapp.com/5913398998672934)."""
    return f"https://wa.me/{business_number}?text=" + quote(f"/link {token}", safe="")


class WhatsAppAdapter(ChannelAdapter):
    """Sends the bot's WhatsApp messages from one business number.

    Args:
        access_token: the system user's permanent token (``WHATSAPP_ACCESS_TOKEN``).
        phone_number_id: the business number's id (``WHATSAPP_PHONE_NUMBER_ID``).
        in_window: ``in_window(wa_id) -> bool``, True while the user's 24-hour window is open
            (``control.services.whatsapp_window.in_window``).
        api_base: the Graph API base with version (``WHATSAPP_API_BASE``).
        template: the approved template for sends outside the window, or None.
        timeout: seconds per request.
        throughput: messages per second allowed from this number.
    """

    name = "whatsapp"
    limits = ChannelLimits(max_text=MAX_TEXT, can_edit=False, min_edit_interval=PAIR_INTERVAL,
                           typing=False)

    def __init__(self, access_token: str, phone_number_id: str, in_window: Callable[[str], bool],
                 api_base: str = DEFAULT_API_BASE, template: Template | None = None,
                 timeout: float = 10.0, throughput: float = THROUGHPUT):
        self._phone_number_id = phone_number_id
        self._in_window = in_window
        self._api_base = api_base.rstrip("/")
        self._template = template
        self._spacing = 1.0 / throughput
        self._next_at = 0.0
        self._pace = threading.Lock()
        self._http = httpx.Client(timeout=timeout,
                                  headers={"Authorization": f"Bearer {access_token}"})

    def send(self, chat_id: str, text: str, reply_to: str | None = None) -> str:
        """Send ``text`` (converted to WhatsApp formatting) to ``chat_id``; return the wamid.

        Inside the user's 24-hour window a text message; outside it the configured template
        with the text as its body parameter.  ``reply_to`` is not used (no quoting).

        Raises:
            ChannelError: outside the window without a template (permanent), or the Graph
                API's refusal (``_channel_error``), or transport failure (status 0).
        """
        if self._in_window(chat_id):
            message = {"type": "text", "text": {"preview_url": False,
                                                "body": to_whatsapp(text)[:MAX_TEXT]}}
        elif self._template is not None:
            message = {"type": "template", "template": _template_body(self._template, text)}
        else:
            raise ChannelError(
                "outside WhatsApp's 24-hour customer-service window and no WHATSAPP_TEMPLATE "
                "is configured: the message was not sent", permanent=True)
        answer = self._call("POST", f"/{self._phone_number_id}/messages", json={
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": chat_id,
            **message})
        try:
            return str(answer["messages"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise ChannelError(f"messages answer without a message id: {answer!r:.200}",
                               status=0) from exc

    def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """WhatsApp cannot edit a sent message (``limits.can_edit`` is False).

        Raises:
            ChannelError: always (permanent).
        """
        raise ChannelError("WhatsApp messages cannot be edited", permanent=True)

    def fetch_media(self, attachment: dict, max_bytes: int) -> MediaFile:
        """Download an inbound attachment by its media id
        (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media#download-media).

        ``GET /{media_id}`` answers ``{url, mime_type, sha256, file_size, id}``; the ``url``
        (valid 5 minutes) is fetched with the same bearer token, streamed, and refused as
        soon as ``file_size`` or the bytes received exceed ``max_bytes``.

        Raises:
            MediaTooLarge: larger than ``max_bytes``.
            ChannelError: the Graph API refused (``_channel_error``) or was unreachable.
        """
        meta = self._call("GET", f"/{attachment['file_id']}")
        size = meta.get("file_size")
        if isinstance(size, int) and size > max_bytes:
            raise MediaTooLarge(size, max_bytes)
        if not isinstance(meta.get("url"), str):
            raise ChannelError(f"media {attachment['file_id']} has no download url", status=200,
                               permanent=True)
        content = self._download(meta["url"], max_bytes)
        mime = meta.get("mime_type") or attachment.get("mime_type") or "application/octet-stream"
        return MediaFile(content=content, mime_type=str(mime), name=attachment.get("name", ""))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def _download(self, url: str, max_bytes: int) -> bytes:
        received = bytearray()
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _channel_error(response)
                for block in response.iter_bytes():
                    received += block
                    if len(received) > max_bytes:
                        raise MediaTooLarge(len(received), max_bytes)
        except httpx.HTTPError as exc:
            raise ChannelError(f"media download failed: {exc}", status=0) from exc
        return bytes(received)

    def _wait_turn(self) -> None:
        """Space sends ``1/throughput`` seconds apart across threads (default throughput)."""
        with self._pace:
            now = time.monotonic()
            start = max(now, self._next_at)
            self._next_at = start + self._spacing
        if start > now:
            time.sleep(start - now)

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """One Graph API call; every failure becomes a ``ChannelError``."""
        if method == "POST":
            self._wait_turn()
        try:
            response = self._http.request(method, self._api_base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChannelError(f"{method} {path} failed: {exc}", status=0) from exc
        if response.status_code >= 400:
            raise _channel_error(response)
        try:
            answer = response.json()
        except ValueError as exc:
            raise ChannelError(f"{method} {path}: unreadable answer", status=0) from exc
        if not isinstance(answer, dict):
            raise ChannelError(f"{method} {path}: answer is not an object", status=0)
        return answer


def _template_body(template: Template, text: str) -> dict:
    """The ``template`` object of a template message with ``text`` as its one body parameter."""
    parameter = _TEMPLATE_SPACES.sub(" ", to_whatsapp(text)).strip()
    return {"name": template.name, "language": {"code": template.language},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": parameter}]}]}


def _channel_error(response: httpx.Response) -> ChannelError:
    """Map a Graph API error answer (``{"error": {"message", "type", "code", "error_subcode",
    "fbtrace_id"}}``) to a ``ChannelError`` (rules in the module docstring)."""
    try:
        raw = response.json()["error"]
        error = WhatsAppError.from_dict(raw, response)
    except (ValueError, KeyError, TypeError):
        error = None
    status = response.status_code
    code = error.code if error is not None else status
    text = f"WhatsApp error {code}: {error.message if error is not None else response.text[:200]}"
    if status == 429 or isinstance(error, ThrottlingError) or code in RATE_LIMIT_WAIT:
        header = response.headers.get("Retry-After", "")
        default = RATE_LIMIT_WAIT.get(code, 60.0 if isinstance(error, ThrottlingError) else 1.0)
        wait = float(header) if header.replace(".", "", 1).isdigit() else default
        return ChannelError(text, status=429, retry_after=wait)
    if status >= 500 or code in TRANSIENT_CODES or (error is not None and error.is_transient):
        return ChannelError(text, status=status)
    return ChannelError(text, status=status, permanent=True)
