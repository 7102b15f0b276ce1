"""The dashboard's web chat as a channel: its name and chat ids (``control.services.web_chat``)."""

from __future__ import annotations

CHANNEL = "web"


def chat_id(tenant_id: int) -> str:
    """Return the web chat id of tenant ``tenant_id`` (one conversation per tenant): ``web-<id>``."""
    return f"web-{tenant_id}"
