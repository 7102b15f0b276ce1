"""What every platform's routing shares (``channel_routing``): keyed envelope ids, the
tenant's preferences on each envelope, and the log of the control plane's own answers.

Envelope ids are derived from the chat and message ids, so a retried webhook publishes
nothing twice (the bus dedupes on envelope id); the derivation is keyed
(``envelope_id_for``): a tenant who knows another's chat and next message id still cannot
compute the envelope id and claim it first (issue #19).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from control.models import Message, Tenant
from control.services import linking

# What the envelope-id key is derived for, so it is used for nothing else than
# ``HERMES_SECRET_KEY`` is (sessions, CSRF, media URLs).
ENVELOPE_KEY_PURPOSE = b"envelope-id"
ENVELOPE_ID_LENGTH = 32  # hex characters: 128 bits, as long as the UUID hex ids of new_id()


def envelope_key(secret_key: str) -> bytes:
    """Return the key of platform envelope ids: HMAC-SHA256(``secret_key``, ``"envelope-id"``).

    A subkey, so an envelope id (which every agent sees) reveals nothing about
    ``HERMES_SECRET_KEY`` itself.

    Args:
        secret_key: ``HERMES_SECRET_KEY`` (``control.web.auth.secret_key``).

    Returns:
        32 bytes.  Rotating the secret key changes every envelope id from then on, so a
        webhook that failed before the rotation and is retried after it is published twice.
    """
    return hmac.new(secret_key.encode(), ENVELOPE_KEY_PURPOSE, hashlib.sha256).digest()


def envelope_id_for(key: bytes, channel: str, chat_id: str, message_id: str) -> str:
    """Return the envelope id of a platform message: deterministic, unpredictable to tenants.

    HMAC-SHA256 with ``key`` over ``channel:chat_id:message_id``, as 32 lowercase hex characters
    (the shape of ``new_id()``).  The same message always gets the same id, so a webhook retried
    after its transaction failed past the bus append republishes under the same idempotency key;
    without ``key`` nobody can compute the id of a message (unlike the platform's message ids,
    which are sequential), so no tenant can claim another's future id first (issue #19).

    Args:
        key: ``envelope_key(HERMES_SECRET_KEY)`` (``Runtime.envelope_key``).
        channel, chat_id, message_id: the platform message (no platform's message id holds a
            ``:``, so the joined text names one message).
    """
    text = f"{channel}:{chat_id}:{message_id}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:ENVELOPE_ID_LENGTH]


def tenant_preferences(tenant: Tenant) -> dict[str, str]:
    """Return the tenant's dashboard settings as ``Envelope.preferences``.

    Keys (``wire.protocol.PREFERENCE_KEYS``): ``timezone``, ``language``, ``model`` and
    ``about`` (the ``preferences`` text); a key is present only when the tenant set it, so an
    empty dict tells the agent every setting was cleared (``None`` would mean "unknown").
    """
    values = {"timezone": tenant.timezone, "language": tenant.language, "model": tenant.model,
              "about": tenant.preferences}
    return {key: value for key, value in values.items() if value}


def record_control_reply(channel: str, chat_id: str, text: str, platform_message_id: str) -> Message:
    """Log an answer the control plane sent itself (help, linking) with its platform id.

    The delivery worker's crash recovery skips every message id the log knows
    (``control.services.delivery_recovery``), so these answers are never mistaken for a lost reply.
    """
    return Message.create(tenant=linking.tenant_for_chat(channel, chat_id),
                          envelope_id=f"control-{uuid.uuid4().hex}", direction="out",
                          channel=channel, chat_id=chat_id, text=text,
                          platform_message_id=platform_message_id)
