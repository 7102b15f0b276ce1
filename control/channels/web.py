"""The dashboard's web chat as a channel (``control.services.web_chat``): its chat ids, and an
adapter whose "platform" is the delivery ledger itself."""

from __future__ import annotations

import uuid

from control.channels.base import ChannelAdapter, ChannelLimits

CHANNEL = "web"

# One message per reply, never split (a reply is one ledger row); nothing to rate-limit.
WEB_LIMITS = ChannelLimits(max_text=1_000_000, can_edit=True, min_edit_interval=0.0, typing=False,
                           throttled=False)


def chat_id(tenant_id: int) -> str:
    """Return the web chat id of tenant ``tenant_id`` (one conversation per tenant): ``web-<id>``."""
    return f"web-{tenant_id}"


class WebAdapter(ChannelAdapter):
    """Delivers web-chat replies by letting the delivery worker record them: the ledger row the
    worker writes at every send and edit (``Delivery.last_text``, then ``delivered``) is what the
    page's server-sent events read (``web_chat.reply_events``), so there is nothing to call."""

    name = CHANNEL
    limits = WEB_LIMITS

    def send(self, chat_id: str, text: str, reply_to: str | None = None) -> str:
        """Return a new message id (``web-<hex>``); the worker stores ``text`` under it."""
        return f"web-{uuid.uuid4().hex}"

    def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Nothing to do: the worker stores the new text in the ledger."""
