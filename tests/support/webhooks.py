"""Posting signed webhooks to the control plane in tests."""

from __future__ import annotations

import json

from control.db import database
from control.models import ALL_MODELS
from control.services import linking
from standins.stripe_events import sign
from standins.telegram_updates import text_update

STRIPE_SECRET = "whsec_test_secret"
TELEGRAM_SECRET = "telegram-secret-token"


def post_stripe(client, event: dict, secret: str = STRIPE_SECRET, header: str | None = None):
    """POST ``event`` to the Stripe webhook, signed with ``secret`` unless ``header`` is given."""
    body = json.dumps(event).encode()
    sig = header if header is not None else sign(body, secret)
    headers = {"Content-Type": "application/json"}
    if sig:
        headers["Stripe-Signature"] = sig
    return client.post("/webhooks/stripe", data=body, headers=headers)


def post_telegram(client, update, secret: str | None = TELEGRAM_SECRET, raw: bytes | None = None):
    """POST an Update (or ``raw`` bytes) to the Telegram webhook with the secret header."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    body = raw if raw is not None else json.dumps(update).encode()
    return client.post("/webhooks/telegram", data=body, headers=headers)


def link_telegram_chat(client, tenant, chat: int):
    """Link Telegram chat ``chat`` to ``tenant`` as a person does (``/start <token>`` sent from
    it); returns ``tenant``.

    Raises:
        AssertionError: the bot did not answer the ``/start``.
    """
    with database.connection_context():
        token = linking.current_token(tenant, 3600).token
    assert post_telegram(client, text_update(900, chat, f"/start {token}")).json["outcome"] == "linked"
    return tenant


def row_counts() -> dict[str, int]:
    """Return ``{table: rows}`` for every model (to prove nothing was stored), in one query:
    the fuzz tests call this around thousands of requests."""
    counts = ", ".join(f'(SELECT COUNT(*) FROM "{m._meta.table_name}")' for m in ALL_MODELS)
    with database.connection_context():
        row = database.execute_sql(f"SELECT {counts}").fetchone()
    return {m.__name__: int(n) for m, n in zip(ALL_MODELS, row, strict=True)}


def stored_state(runtime) -> dict[str, int]:
    """Return everything a webhook request can leave behind: rows per table, queued tasks, and
    bus entries in every tenant's inbox stream."""
    from control.models import Tenant
    from wire.protocol import messages_stream

    state = row_counts()
    state["queued_tasks"] = runtime.huey.pending_count() + runtime.provision_huey.pending_count()
    with database.connection_context():
        streams = [messages_stream(str(t.id)) for t in Tenant.select(Tenant.id)]
    state.update({stream: runtime.bus.length(stream) for stream in streams})
    return state
