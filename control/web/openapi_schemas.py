"""JSON Schemas (OpenAPI 3.1 dialect, i.e. JSON Schema 2020-12) of what the control app reads and
answers; ``control.web.openapi`` assembles them into ``/openapi.json``.

Request bodies follow the platforms' published objects: typed for every field the parsers read
(``control.services.billing._SHAPES``, ``control.channels.telegram.parse_update``) and open
(``additionalProperties``) elsewhere, because Stripe and Telegram add fields without notice.
"""

from __future__ import annotations

from control.models import MachineState
from control.services.billing import MAX_TEXT, MAX_TIMESTAMP

REF = "#/components/schemas/"


def ref(name: str) -> dict:
    """Return a ``$ref`` to the component schema ``name``."""
    return {"$ref": REF + name}


def _nullable(schema: dict) -> dict:
    """``schema`` or JSON null (Stripe sends null for unset fields)."""
    return {"anyOf": [schema, {"type": "null"}]}


# Stripe ids and every string stored from an event fit a 255-character column (billing.MAX_TEXT).
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_TIME = {"type": "integer", "minimum": 0, "maximum": MAX_TIMESTAMP,
         "description": "Unix time in seconds."}
_METADATA = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 500},
             "description": "Stripe metadata: at most 50 keys, values up to 500 characters "
                            "(https://docs.stripe.com/metadata#data); `plan` names a plan.",
             "properties": {"plan": _TEXT}}
# Event types ``billing.HANDLERS`` acts on; any other type is acknowledged and ignored.
HANDLED_STRIPE_EVENTS = ["checkout.session.completed", "customer.subscription.created",
                         "customer.subscription.updated", "customer.subscription.deleted",
                         "invoice.paid", "invoice.payment_failed"]

# Telegram ids "have at most 52 significant bits" (https://core.telegram.org/bots/api#chat).
_TG_ID = {"type": "integer", "minimum": -(2**52), "maximum": 2**52}
_TG_FILE = {"type": "object", "required": ["file_id"],
            "properties": {"file_id": {"type": "string", "minLength": 1},
                           "file_unique_id": {"type": "string"}, "file_size": {"type": "integer"}}}
_TG_MESSAGE_KINDS = ["message", "edited_message", "channel_post", "edited_channel_post",
                     "business_message", "edited_business_message"]

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object", "required": ["error", "message"], "additionalProperties": False,
        "description": "Every error answer (control/errors.py): a stable code and a message; "
                       "never a stack trace.",
        "properties": {"error": {"type": "string", "pattern": "^[a-z_]+$"},
                       "message": {"type": "string"}},
    },
    "StripeEvent": {
        "type": "object", "required": ["id", "type", "data"],
        "description": "A Stripe Event object (https://docs.stripe.com/api/events/object). Only "
                       "`checkout.session.completed`, `customer.subscription.*`, `invoice.paid` "
                       "and `invoice.payment_failed` are acted on; every other type is "
                       "recorded and ignored.",
        "properties": {
            "id": {**_TEXT, "minLength": 1, "examples": ["evt_1MoS6tLgUG5tbmjchDsX6fiT"]},
            "object": {"const": "event"},
            "type": {"anyOf": [{"enum": HANDLED_STRIPE_EVENTS}, _TEXT]},
            "api_version": _nullable({"type": "string"}),
            "created": _TIME, "livemode": {"type": "boolean"},
            "pending_webhooks": {"type": "integer", "minimum": 0},
            "request": _nullable({"type": "object"}),
            "data": {
                "type": "object", "required": ["object"],
                "properties": {
                    "object": {"anyOf": [ref("StripeCheckoutSession"), ref("StripeSubscription"),
                                         ref("StripeInvoice"), {"type": "object"}]},
                    "previous_attributes": {"type": "object"},
                },
            },
        },
    },
    "StripeCheckoutSession": {
        "type": "object",
        "description": "https://docs.stripe.com/api/checkout/sessions/object",
        "properties": {
            "object": {"const": "checkout.session"},
            "mode": _nullable({"enum": ["payment", "setup", "subscription"]}),
            "customer": _nullable(_TEXT), "customer_email": _nullable(_TEXT),
            "customer_details": _nullable({"type": "object",
                                           "properties": {"email": _nullable(_TEXT)}}),
            "subscription": _nullable({"anyOf": [_TEXT, {"type": "object",
                                                         "properties": {"id": _TEXT}}]}),
            "metadata": _nullable(_METADATA),
            "payment_status": _nullable({"enum": ["paid", "unpaid", "no_payment_required"]}),
            "client_reference_id": _nullable(_TEXT),
        },
    },
    "StripeInvoice": {
        "type": "object",
        "description": "https://docs.stripe.com/api/invoices/object (the subscription moved to "
                       "`parent.subscription_details` in 2025; both are read).",
        "properties": {
            "object": {"const": "invoice"},
            "customer": _nullable({"anyOf": [_TEXT, {"type": "object",
                                                     "properties": {"id": _TEXT}}]}),
            "subscription": _nullable({"anyOf": [_TEXT, {"type": "object",
                                                         "properties": {"id": _TEXT}}]}),
            "parent": _nullable({"type": "object", "properties": {
                "subscription_details": _nullable({"type": "object", "properties": {
                    "subscription": _nullable({"anyOf": [_TEXT, {
                        "type": "object", "properties": {"id": _TEXT}}]})}})}}),
            "next_payment_attempt": _nullable(_TIME),
        },
    },
    "StripeSubscription": {
        "type": "object", "required": ["id"],
        "description": "https://docs.stripe.com/api/subscriptions/object (the period end moved "
                       "from the subscription to its items in 2025; both are read).",
        "properties": {
            "id": {**_TEXT, "minLength": 1}, "object": {"const": "subscription"},
            "customer": _nullable({"anyOf": [_TEXT, {"type": "object",
                                                     "properties": {"id": _TEXT}}]}),
            "status": _nullable({"enum": ["incomplete", "incomplete_expired", "trialing", "active",
                                          "past_due", "canceled", "unpaid", "paused"]}),
            "metadata": _nullable(_METADATA), "current_period_end": _nullable(_TIME),
            "items": _nullable({"type": "object", "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": ref("StripeSubscriptionItem")}}}),
        },
    },
    "StripeSubscriptionItem": {
        "type": "object",
        "description": "https://docs.stripe.com/api/subscription_items/object",
        "properties": {"current_period_end": _nullable(_TIME), "price": _nullable(ref("StripePrice")),
                       "plan": _nullable(ref("StripePrice"))},
    },
    "StripePrice": {
        "type": "object",
        "description": "A Price (or legacy Plan): the plan is its lookup_key, metadata.plan or "
                       "STRIPE_PRICE_PLANS[id].",
        "properties": {"id": _nullable(_TEXT), "lookup_key": _nullable(_TEXT),
                       "metadata": _nullable(_METADATA)},
    },
    "TelegramUpdate": {
        "type": "object", "required": ["update_id"], "maxProperties": 2,
        "description": "A Bot API Update (https://core.telegram.org/bots/api#update): "
                       "`update_id` and at most one other field, named like a Bot API field. "
                       "Strings that are stored must not contain NUL.",
        "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,63}$"},
        "properties": {
            "update_id": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            **{kind: ref("TelegramMessage") for kind in _TG_MESSAGE_KINDS},
            "callback_query": ref("TelegramCallbackQuery"),
        },
    },
    "TelegramMessage": {
        "type": "object", "required": ["message_id", "chat", "date"],
        "description": "https://core.telegram.org/bots/api#message",
        "properties": {
            "message_id": {"type": "integer", "minimum": 0, "maximum": 2**52},
            "from": ref("TelegramUser"), "chat": ref("TelegramChat"), "date": _TIME,
            "text": {"type": "string", "maxLength": 4096},
            "caption": {"type": "string", "maxLength": 1024},
            "photo": {"type": "array", "items": _TG_FILE},
            **dict.fromkeys(("voice", "audio", "document", "video", "sticker"), _TG_FILE),
        },
    },
    "TelegramCallbackQuery": {
        "type": "object", "required": ["id", "from"],
        "description": "https://core.telegram.org/bots/api#callbackquery",
        "properties": {"id": {"type": "string"}, "from": ref("TelegramUser"),
                       "message": ref("TelegramMessage"), "data": {"type": "string"}},
    },
    "TelegramUser": {
        "type": "object", "required": ["id", "first_name"],
        "description": "https://core.telegram.org/bots/api#user (`is_bot` is missing in the "
                       "legacy shapes Telegram's webhook guide publishes).",
        "properties": {"id": _TG_ID, "is_bot": {"type": "boolean"},
                       "first_name": {"type": "string"}, "username": {"type": "string"}},
    },
    "TelegramChat": {
        "type": "object", "required": ["id", "type"],
        "description": "https://core.telegram.org/bots/api#chat",
        "properties": {"id": _TG_ID,
                       "type": {"enum": ["private", "group", "supergroup", "channel"]}},
    },
    "StripeAck": {
        "type": "object", "required": ["received", "outcome"], "additionalProperties": False,
        "properties": {"received": {"const": True},
                       "outcome": {"enum": ["processed", "ignored", "duplicate"]}},
    },
    "TelegramAck": {
        "type": "object", "required": ["ok", "outcome"], "additionalProperties": False,
        "properties": {"ok": {"const": True},
                       "outcome": {"enum": ["published", "answered", "linked", "ignored", "duplicate"]}},
    },
    "Health": {
        "type": "object", "required": ["status"], "additionalProperties": False,
        "properties": {"status": {"const": "ok"}},
    },
    "Readiness": {
        "type": "object", "required": ["status", "checks"], "additionalProperties": False,
        "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "checks": {
                "type": "object", "required": ["database", "bus", "workers"],
                "additionalProperties": False,
                "properties": {
                    "database": {"type": "string", "description": "`ok` or `error: <kind>`"},
                    "bus": {"type": "string", "description": "`ok` or `error: <reason>`"},
                    "workers": {"anyOf": [
                        {"const": "none in this process"},
                        {"type": "object", "additionalProperties": {"enum": ["ok", "dead"]}}]},
                },
            },
        },
    },
}

# The dashboard's quick chat and settings form (control/web/dashboard.py).
SCHEMAS.update({
    "WebChatMessage": {
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string", "maxLength": 4000}},
    },
    "WebChatAccepted": {
        "type": "object", "required": ["envelope_id", "stream_url"], "additionalProperties": False,
        "properties": {"envelope_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                       "stream_url": {"type": "string"}},
    },
    "SettingsForm": {
        "type": "object",
        "properties": {
            "csrf_token": {"type": "string"},
            "model": {"type": "string", "description": "A value of the page's model menu; empty: default."},
            "timezone": {"type": "string", "description": "IANA time zone; empty: the operator's default."},
            "language": {"type": "string", "description": "BCP 47 tag; empty: the user's own language."},
            "preferences": {"type": "string", "maxLength": 1000},
        },
    },
})

# The billing pages (control/web/billing.py).
SCHEMAS.update({
    "BillingStatus": {
        "type": "object", "additionalProperties": False,
        "required": ["state", "step", "plan", "account", "telegram_link", "web_chat"],
        "description": "The signed-in user's provisioning progress (the checkout success page "
                       "polls it every second).",
        "properties": {
            "state": _nullable({"enum": [state.value for state in MachineState]}),
            "step": {"enum": ["payment", "queued", "server", "agent", "ready", "failed",
                              "stopped"]},
            "plan": _nullable({"enum": ["light", "heavy"]}),
            "account": {"enum": ["pending", "active", "past_due", "canceled"]},
            "telegram_link": _nullable({"type": "string", "pattern": "^https://t\\.me/"}),
            "web_chat": _nullable({"type": "string"}),
        },
    },
    "DeleteAccountForm": {
        "type": "object", "required": ["csrf_token", "email", "password"],
        "properties": {"csrf_token": {"type": "string"}, "email": {"type": "string"},
                       "password": {"type": "string"}},
    },
})

# Discord (control/web/webhooks.py, issue 11).
SCHEMAS.update({
    "DiscordInteraction": {
        "type": "object", "required": ["id", "type", "token"],
        "description": "An interaction (https://discord.com/developers/docs/interactions/"
                       "receiving-and-responding#interaction-object): PING (type 1) or a slash "
                       "command (type 2, with `data.name`, the invoking `member.user` or `user` "
                       "and `channel_id`). Ids are snowflakes (decimal strings); strings must "
                       "not contain NUL.",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]{1,20}$"},
            "application_id": {"type": "string", "pattern": "^[0-9]{1,20}$"},
            "type": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
            "token": {"type": "string", "minLength": 1},
            "channel_id": {"type": "string", "pattern": "^[0-9]{1,20}$"},
            "data": {"type": "object", "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 32},
                "options": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string"}, "type": {"type": "integer"}}}}}},
            "member": {"type": "object", "properties": {"user": ref("DiscordUser")}},
            "user": ref("DiscordUser"),
        },
    },
    "DiscordUser": {
        "type": "object", "required": ["id"],
        "properties": {"id": {"type": "string", "pattern": "^[0-9]{1,20}$"}},
    },
    "DiscordInteractionResponse": {
        "type": "object", "required": ["type"], "additionalProperties": False,
        "description": "PONG (1), a message (4: the control plane's own answer, ephemeral) or "
                       "a deferred response (5: the agent's reply edits it).",
        "properties": {
            "type": {"enum": [1, 4, 5]},
            "data": {"type": "object", "properties": {
                "content": {"type": "string", "maxLength": 2000},
                "flags": {"const": 64}}},
        },
    },
})
