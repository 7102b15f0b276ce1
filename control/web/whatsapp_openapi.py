"""OpenAPI descriptions of the WhatsApp webhook (``control/web/whatsapp.py``, issue 12), merged
into ``control.web.openapi.OPERATIONS``; its request and answer schemas join ``SCHEMAS``."""

from __future__ import annotations

from control.errors import BadRequest, ServiceUnavailable, Unauthorized
from control.web.openapi_parts import (
    BODY_NOTE,
    TOO_LARGE_RESPONSE,
    codes,
    error,
    header,
    json_response,
)
from control.web.openapi_schemas import SCHEMAS, ref

OPERATIONS: dict[tuple[str, str], dict] = {}

_MESSAGE_EXAMPLE = {
    "object": "whatsapp_business_account",
    "entry": [{"id": "1234567890987654321", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "972123456789", "phone_number_id": "1122334455667"},
        "contacts": [{"profile": {"name": "Test Name"}, "wa_id": "972987654321"}],
        "messages": [{"from": "972987654321", "id": "wamid.xyzxyz", "timestamp": "1697043223",
                      "text": {"body": "Body Text"}, "type": "text"}]}}]}],
}

SCHEMAS.update({
    "WhatsAppNotification": {
        "type": "object",
        "description": "A Cloud API webhook notification "
                       "(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components): "
                       "`entry[].changes[].value` with `messages` (text, audio/voice, image, "
                       "document, video, sticker are routed; other types are acknowledged and "
                       "ignored) and/or `statuses` (sent, delivered, read, failed). Strings must "
                       "not contain NUL.",
        "properties": {
            "object": {"type": "string"},
            "entry": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"},
                "changes": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"},
                    "value": {"type": "object", "properties": {
                        "messages": {"type": "array", "items": {
                            "type": "object", "required": ["from", "id"],
                            "properties": {"from": {"type": "string", "minLength": 1},
                                           "id": {"type": "string", "minLength": 1},
                                           "type": {"type": "string"},
                                           "timestamp": {"type": "string"}}}},
                        "statuses": {"type": "array", "items": {
                            "type": "object", "required": ["id", "status"],
                            "properties": {"id": {"type": "string", "minLength": 1},
                                           "status": {"type": "string", "minLength": 1},
                                           "recipient_id": {"type": "string"},
                                           "timestamp": {"type": "string"}}}},
                    }},
                }}},
            }}},
        },
        "example": _MESSAGE_EXAMPLE,
    },
    "WhatsAppAck": {
        "type": "object", "required": ["ok", "outcome", "messages", "statuses"],
        "additionalProperties": False,
        "properties": {
            "ok": {"const": True}, "outcome": {"const": "received"},
            "messages": {"type": "array", "description": "Per routed message, in order.",
                         "items": {"enum": ["published", "answered", "linked", "ignored",
                                            "duplicate"]}},
            "statuses": {"type": "array", "description": "Per status callback, in order.",
                         "items": {"enum": ["recorded", "failed", "stale", "unknown"]}},
        },
    },
})

OPERATIONS.update({
    ("/webhooks/whatsapp", "GET"): {
        "summary": "Meta's webhook verification handshake",
        "description": "https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests",
        "parameters": [
            {"name": "hub.mode", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "`subscribe`."},
            {"name": "hub.verify_token", "in": "query", "required": False,
             "schema": {"type": "string"}, "description": "Must equal WHATSAPP_VERIFY_TOKEN."},
            {"name": "hub.challenge", "in": "query", "required": False,
             "schema": {"type": "string"}, "description": "Echoed back as text."}],
        "responses": {
            "200": {"description": "The `hub.challenge`, as plain text.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "403": error("Not a subscribe request, or the verify token is wrong or unset.",
                          "forbidden")},
    },
    ("/webhooks/whatsapp", "POST"): {
        "summary": "WhatsApp Cloud API: messages for a tenant's agent and delivery statuses",
        "description": "Verified with `X-Hub-Signature-256` before anything is parsed. Each "
                       "message is routed once per wamid (a redelivery is a `duplicate`); an "
                       "unlinked number is told how to link (`/link CODE`, prefilled by the "
                       "dashboard's wa.me link) and nothing reaches any agent. Statuses update "
                       "the delivery ledger; `failed` marks the reply not delivered. "
                       + BODY_NOTE,
        "parameters": [header(
            "X-Hub-Signature-256", "`sha256=<hex HMAC-SHA256 of the raw body with "
            "WHATSAPP_APP_SECRET>` (https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads).",
            {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"})],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": ref("WhatsAppNotification")}}},
        "responses": {
            "200": json_response("Acknowledged: what happened to each message and status.",
                         ref("WhatsAppAck")),
            "400": error("Not UTF-8 JSON of the Cloud API's shape; nothing is stored.",
                          *codes(BadRequest)),
            "401": error("The signature is missing or wrong, or WHATSAPP_APP_SECRET is not set "
                          "(WhatsApp off); nothing is stored.", *codes(Unauthorized)),
            "413": TOO_LARGE_RESPONSE,
            "503": error("The message bus is unavailable; Meta retries.",
                          *codes(ServiceUnavailable))},
    },
})
