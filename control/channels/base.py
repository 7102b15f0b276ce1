"""The channel adapter contract: one interface for every chat platform the control plane sends to.

The delivery worker (``control.services.delivery``) never speaks a platform's API directly: it
picks the adapter named by the event's ``channel`` and calls ``send``, ``edit``, ``split`` and
``typing`` on it, and it decides what to do about a failure only from the uniform
``ChannelError`` (rate limited, message gone, permanent, transient).  An adapter is a thin,
synchronous wrapper over the platform's REST client; it keeps no per-reply state (the delivery
ledger does), so one instance serves every tenant and may be shared by threads that do not call
it concurrently for the same chat.

Inbound, each platform verifies its own webhook signature (the schemes differ too much to share
code) and turns a request into an ``InboundMessage``; ``control.services.channel_routing``
then links, refuses or publishes it the same way for every platform.

Contract every adapter keeps (the ledger depends on it):

* ``send`` returns only once the platform has created the message, and returns the platform's
  id of it.  A reply counts as delivered only on that id, never on "the request was sent".
* ``send`` and ``edit`` raise ``ChannelError`` for every failure, transport errors included
  (``status`` 0), never another exception type.
* ``edit`` with the text the message already shows is not an error.
* ``split`` returns chunks each at most ``limits.max_text`` characters that join back to the
  text (line breaks at cut points may be dropped).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from control.errors import HermesError


class ChannelError(HermesError):
    """A platform call failed; the fields say whether and when to try again.

    Attributes:
        status: the platform's HTTP status (Telegram's ``error_code``) when it answered,
            0 when it could not be reached or its answer was lost (timeout, connection reset,
            unreadable body): then the call may or may not have taken effect.
        retry_after: seconds to wait before the next call to this chat, set on rate limits:
            Telegram ``parameters.retry_after``, Discord's 429 JSON ``retry_after`` (seconds,
            float), Slack's ``Retry-After`` header (seconds).
        permanent: the platform refused this call for good (bad chat, bot blocked, no
            permission, token expired); sending it again cannot succeed.
        message_gone: an ``edit`` targeted a message that no longer exists (deleted by the
            user); the reply must be sent as a new message.

    A failure that is none of rate limited, permanent or gone is transient: retry after a
    short backoff.
    """

    code = "channel_error"

    def __init__(self, description: str, *, status: int = 0, retry_after: float | None = None,
                 permanent: bool = False, message_gone: bool = False):
        super().__init__(description)
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent
        self.message_gone = message_gone

    @property
    def answered(self) -> bool:
        """True when the platform answered (so a refused ``send`` created no message)."""
        return self.status != 0

    @property
    def rate_limited(self) -> bool:
        """True for a rate-limit answer (429); ``retry_after`` says for how long."""
        return self.status == 429

    @property
    def transient(self) -> bool:
        """True when the same call may succeed after a short backoff."""
        return not (self.permanent or self.message_gone or self.rate_limited)


@dataclass(frozen=True)
class ChannelLimits:
    """What a platform allows a bot.

    Attributes:
        max_text: maximum characters in one message (Telegram 4096, Discord 2000 content,
            Slack 40000 ``text`` but 4000 recommended: each adapter cites its source).
        can_edit: the bot can replace the text of a message it sent, so a reply streams by
            editing one message; without it only the final text is sent.
        min_edit_interval: seconds between two sends/edits in one chat that stay under the
            platform's rate limit (the delivery worker's default throttle).
        typing: the platform can show a "typing" indicator (``ChannelAdapter.typing``).
        throttled: sends count against a platform rate limit, so ``HERMES_EDIT_INTERVAL``
            applies; False (the web chat, a row in our own database) sends every change.
    """

    max_text: int
    can_edit: bool = True
    min_edit_interval: float = 1.0
    typing: bool = False
    throttled: bool = True


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, preferring line breaks.

    A cut falls on the last line break in the second half of the window, else at ``limit``;
    line breaks at a cut are dropped.  Returns ``[text]`` (even empty) when it fits.
    """
    chunks = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut >= limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*chunks, text]


class ChannelAdapter(ABC):
    """Sends and edits a bot's messages on one platform (module docstring: the contract).

    Class attributes:
        name: the channel name as in ``wire.protocol.CHANNELS`` (``telegram``, ``discord``,
            ``slack``); events whose ``channel`` equals it are delivered here.
        limits: the platform's ``ChannelLimits``.

    Chat ids are the strings the platform's inbound side put in the ``Envelope``; an adapter
    may give them structure (Discord: ``interaction:<id>`` for a slash command's reply).
    """

    name: str
    limits: ChannelLimits

    @abstractmethod
    def send(self, chat_id: str, text: str, reply_to: str | None = None) -> str:
        """Create a message with ``text`` (at most ``limits.max_text`` characters) in ``chat_id``.

        Args:
            chat_id: where to send.
            text: the message text.
            reply_to: the platform id of the user's message being answered, if the platform
                threads or quotes replies (adapters may ignore it).

        Returns:
            The platform's id of the new message, as a string.

        Raises:
            ChannelError: the platform refused or could not be reached.
        """

    @abstractmethod
    def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace the text of the bot's message ``message_id`` in ``chat_id``.

        An unchanged text is not an error.

        Raises:
            ChannelError: refused (``message_gone`` when the message no longer exists),
                rate limited, or unreachable.
        """

    def direct_chat(self, identity: str) -> str:
        """Return the chat id of the bot's direct conversation with a linked person.

        ``identity`` is what ``ChatIdentity.chat_id`` holds for a linked non-Telegram user (the
        inbound side's ``InboundMessage.identity``); a notice (``control.services.notices``)
        is sent there.  Default: the identity itself (Telegram's chat id, WhatsApp's wa_id).

        Raises:
            ChannelError: the conversation could not be opened (refused or unreachable).
        """
        return identity

    def split(self, text: str) -> list[str]:
        """Split ``text`` into messages of at most ``limits.max_text`` characters (``split_text``)."""
        return split_text(text, self.limits.max_text)

    def typing(self, chat_id: str) -> None:
        """Show a "typing" indicator in ``chat_id`` for a few seconds, if ``limits.typing``.

        The default does nothing (platforms without an indicator, or where the reply's own
        placeholder shows progress, like Discord's deferred "is thinking...").

        Raises:
            ChannelError: the indicator could not be shown (callers log and carry on).
        """

    def existing_message(self, chat_id: str) -> str | None:
        """Return the id of a message the platform already holds for the reply to ``chat_id``.

        Discord's deferred interaction response is such a message (``@original``): the first
        text of the reply edits it instead of sending.  Default: None (the first text is sent).
        """
        return None

    def find_sent(self, ledger, recorded: frozenset[str]) -> str | None:
        """Look for a message an interrupted ``send`` created, before sending again.

        Only reads (the Telegram probe aside, see ``control.channels.telegram_recovery``); a
        read the platform refuses for good (a missing scope or permission) is no reason to fail
        the reply, so it returns None rather than a permanent ``ChannelError``.

        Args:
            ledger: the reply's ``control.models.Delivery`` row, whose ``pending_text`` (the
                text that was being sent) is set; ``pending_after`` is the highest ordered
                platform id of the chat known before the send (None when none is known) and
                ``created_at`` when the reply's first intent was written (naive UTC)
                (``control.services.delivery_recovery``).
            recorded: every platform message id already recorded for the chat (ledger and
                conversation log): a message with one of them is never the lost one.

        Returns:
            The platform id of that message (as ``send`` would have returned it) if found,
            else None (the text is sent again; the default for platforms with no way to
            search: a duplicate is possible, never a loss).

        Raises:
            ChannelError: (transient or rate limited) the platform could not be asked now; the
                intent stays and the search runs again later.
        """
        return None

    def fetch_media(self, attachment: dict, max_bytes: int) -> MediaFile:
        """Download the file an inbound attachment names (issue #12, "media on every channel").

        Args:
            attachment: one ``InboundMessage.attachments`` entry as this adapter's inbound side
                built it (``kind``, ``file_id`` and whatever else the platform needs: Telegram's
                ``file_id`` for ``getFile``, Discord's attachment ``url``, Slack's
                ``url_private_download``, WhatsApp's media id).
            max_bytes: the largest file accepted, in bytes; the download stops as soon as more
                arrives (or the platform announces a larger size) and nothing is kept.

        Returns:
            The file's bytes with its MIME type and name (``MediaFile``).

        Raises:
            MediaTooLarge: the file is larger than ``max_bytes``.
            ChannelError: the platform refused or could not be reached; ``permanent`` when
                this platform cannot download media at all (the default).
        """
        raise ChannelError(f"{self.name} attachments cannot be downloaded", permanent=True)

    def close(self) -> None:
        """Release the HTTP connections.  Default: nothing to release."""


@dataclass(frozen=True)
class MediaFile:
    """One downloaded attachment.

    Attributes:
        content: the file's bytes (at most the ``max_bytes`` the caller allowed).
        mime_type: the platform's MIME type (``image/jpeg``, ``audio/ogg``, ...), else one
            inferred from the bytes, else ``application/octet-stream``.
        name: the file name the sender gave, or ``""``.
    """

    content: bytes
    mime_type: str
    name: str = ""


class MediaTooLarge(ChannelError):
    """An attachment is larger than the limit the caller passed to ``fetch_media``.

    Attributes:
        size: the size in bytes the platform announced or the download reached.
        limit: the limit in bytes that was exceeded.
    """

    code = "media_too_large"

    def __init__(self, size: int, limit: int):
        super().__init__(f"file of {size} bytes exceeds the {limit}-byte limit",
                         status=413, permanent=True)
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class InboundMessage:
    """One verified user message or command from any platform, ready for routing.

    Attributes:
        channel: the channel name (``ChannelAdapter.name``).
        event_id: the platform's id of this delivery (Telegram update id, Discord interaction
            id or message id, Slack event id); the webhook idempotency key.
        event_type: what kind of delivery it was (stored with the key, for operators).
        identity: who is speaking, as linked to a tenant (``ChatIdentity.chat_id``): Telegram's
            private chat id, Discord's user id, Slack's ``team:user``.
        user_id: the platform's user id of the sender.
        chat_id: where the reply goes (the ``Envelope.chat_id`` the adapter understands).
        message_id: the platform's id of the message being answered (``Envelope.platform_message_id``
            and part of the envelope id).
        text: the text for the agent (a command is passed as ``/name args``).
        command: ``(name, argument)`` when the user invoked a command, else None.
        attachments: ``[{"kind", "file_id", ...}]``.
    """

    channel: str
    event_id: str
    event_type: str
    identity: str
    user_id: str
    chat_id: str
    message_id: str
    text: str
    command: tuple[str, str] | None = None
    attachments: tuple = field(default=())
