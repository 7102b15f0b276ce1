"""Linking: single-use, expiring tokens that tie a chat to a tenant.

A token travels in a Telegram deep link ``https://t.me/<bot>?start=<token>``; Telegram allows
1–64 characters from ``A-Za-z0-9_-`` in the start parameter
(https://core.telegram.org/bots/features#deep-linking), which ``secrets.token_urlsafe`` meets.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from control.db import write_transaction
from control.errors import LinkError
from control.models import ChatIdentity, LinkToken, Tenant, utcnow


def issue_token(tenant: Tenant, ttl_seconds: int) -> LinkToken:
    """Create a new link token for ``tenant`` valid for ``ttl_seconds`` seconds."""
    return LinkToken.create(token=secrets.token_urlsafe(18), tenant=tenant,
                            expires_at=utcnow() + timedelta(seconds=ttl_seconds))


def current_token(tenant: Tenant, ttl_seconds: int) -> LinkToken:
    """Return the tenant's newest unused, unexpired token, issuing one if there is none."""
    token = (LinkToken.select()
             .where((LinkToken.tenant == tenant) & LinkToken.used_at.is_null()
                    & (LinkToken.expires_at > utcnow()))
             .order_by(LinkToken.id.desc()).first())
    return token or issue_token(tenant, ttl_seconds)


def deep_link(bot_username: str, token: str) -> str:
    """Return the Telegram deep link that starts the bot with ``token``."""
    return f"https://t.me/{bot_username}?start={token}"


def redeem(token: str, channel: str, chat_id: str, user_id: str) -> ChatIdentity:
    """Link ``(channel, chat_id)`` to the token's tenant and spend the token.

    Redeeming a token again from the chat it already linked succeeds (a retried update).

    Raises:
        LinkError: the token is unknown, expired, or was used by another chat.
    """
    with write_transaction():
        link = LinkToken.get_or_none(LinkToken.token == token)
        if link is None:
            raise LinkError("That link code is not valid.")
        existing = ChatIdentity.get_or_none((ChatIdentity.channel == channel)
                                            & (ChatIdentity.chat_id == chat_id))
        if link.used_at is not None:
            if existing is not None and existing.tenant_id == link.tenant_id:
                return existing
            raise LinkError("That link code was already used.")
        if link.expires_at <= utcnow():
            raise LinkError("That link code has expired; ask for a new one.")
        spent = (LinkToken.update(used_at=utcnow())
                 .where((LinkToken.id == link.id) & LinkToken.used_at.is_null()).execute())
        if not spent:
            raise LinkError("That link code was already used.")
        if existing is not None:
            existing.tenant = link.tenant
            existing.user_id = user_id
            existing.linked_at = utcnow()
            existing.save()
            return existing
        return ChatIdentity.create(channel=channel, chat_id=chat_id, user_id=user_id,
                                   tenant=link.tenant)


def tenant_for_chat(channel: str, chat_id: str) -> Tenant | None:
    """Return the tenant linked to ``(channel, chat_id)``, or None."""
    return (Tenant.select().join(ChatIdentity)
            .where((ChatIdentity.channel == channel) & (ChatIdentity.chat_id == chat_id)).first())
