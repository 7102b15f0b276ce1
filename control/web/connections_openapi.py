"""OpenAPI descriptions of the connection routes (``control/web/connections.py``, issue #13),
merged into ``control.web.openapi.OPERATIONS``."""

from __future__ import annotations

from control import integrations
from control.errors import BadRequest, NotFound, ServiceUnavailable, Unauthorized
from control.services.composio_client import IntegrationError
from control.web.openapi_parts import (
    SIGN_IN,
    TOO_LARGE_RESPONSE,
    error,
    header,
    json_response,
    page,
)

_STATUSES = ["not_connected", "initiated", "active", "expired", "failed", "removed"]
_CONNECTION = {
    "type": "object",
    "required": ["service", "name", "auth", "status", "tools", "credentials", "updated_at"],
    "properties": {
        "service": {"enum": list(integrations.load())}, "name": {"type": "string"},
        "auth": {"enum": list(integrations.AUTH_TYPES)}, "status": {"enum": _STATUSES},
        "tools": {"type": "array", "items": {"type": "string"}},
        "credentials": {"type": "array", "items": {
            "type": "object", "required": ["name", "label"],
            "properties": {"name": {"type": "string"}, "label": {"type": "string"}}}},
        "updated_at": {"type": ["string", "null"]},
    },
}
_NO_SESSION = error("Not signed in.", Unauthorized.code)
_CSRF = ("The `X-CSRFToken` header (the session's CSRF token) is missing or wrong; nothing is "
         "stored.")
_NOT_SET_UP = error("COMPOSIO_API_KEY is not set: connections are not set up on this server.",
                     "integrations_not_set_up")
_PROVIDER = error("Composio failed or refused; nothing was changed here.", IntegrationError.code)
_SERVICE = ("`<key>` is a service of `control/integrations/services.yaml`: "
            + ", ".join(integrations.load()) + ".")

OPERATIONS: dict[tuple[str, str], dict] = {
    ("/api/hermes/connections", "GET"): {
        "summary": "Every connectable service with the signed-in user's connection status",
        "responses": {"200": json_response("The 14 services, in catalogue order.", {
            "type": "object", "required": ["connections"],
            "properties": {"connections": {"type": "array", "items": _CONNECTION}}}),
            "401": _NO_SESSION},
    },
    ("/api/hermes/connections/<key>", "POST"): {
        "summary": "Connect a service: OAuth answers the consent page's URL; API-key services "
                   "take the key (stored encrypted)",
        "description": _SERVICE + " API-key services (Stripe: `api_key`; PostgreSQL/Supabase: "
                       "`connection_string`) take a JSON object of their credential fields, "
                       "checked for shape; the values are never echoed or logged.",
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": {"type": "string"}}}}},
        "responses": {
            "201": json_response("Started (OAuth: `redirect_url`) or connected (API key).", {
                "type": "object", "required": ["status"],
                "properties": {"status": {"enum": _STATUSES}, "redirect_url": {"type": "string"}}}),
            "400": error(_CSRF + " Or the credential fields are missing or malformed.",
                          BadRequest.code, "bad_json", "missing_credential", "bad_credential"),
            "401": _NO_SESSION,
            "404": error("No such service.", NotFound.code),
            "409": error("Already connected; disconnect first.", "already_connected"),
            "502": _PROVIDER, "503": _NOT_SET_UP,
        },
    },
    ("/api/hermes/connections/<key>", "DELETE"): {
        "summary": "Disconnect a service (on Composio and here); the agent loses its tools",
        "description": _SERVICE,
        "responses": {
            "200": json_response("Removed.", {"type": "object", "required": ["status"],
                                      "properties": {"status": {"enum": ["removed"]}}}),
            "400": error(_CSRF, BadRequest.code), "401": _NO_SESSION,
            "404": error("No such service, or it is not connected.", NotFound.code),
            "502": _PROVIDER, "503": _NOT_SET_UP,
        },
    },
    ("/connections/callback", "GET"): {
        "summary": "Where Composio's consent page returns the browser after an OAuth connection",
        "description": "The account's status is read from Composio (the query's `status` is not "
                       "trusted); then back to the Connections page with a message.",
        "parameters": [{"name": "connected_account_id", "in": "query", "required": True,
                        "schema": {"type": "string", "maxLength": 100}},
                       {"name": "status", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {
            "302": {**SIGN_IN, "description": "To `/dashboard/connections`, or not signed in: "
                                               "to `/login?next=<this path>`."},
            "400": error("The connected account id is missing.", BadRequest.code),
            "404": error("Not a connection of this user.", NotFound.code),
            "502": _PROVIDER, "503": _NOT_SET_UP,
        },
    },
    ("/dashboard/connections", "GET"): page("Connections: a card per service with its status "
                                             "and connect/disconnect"),
    ("/webhooks/composio", "POST"): {
        "summary": "Composio webhook: expired connected accounts",
        "description": "Verified as Standard Webhooks before the body is parsed: one of the "
                       "`v1,<base64 HMAC-SHA256 of '{webhook-id}.{webhook-timestamp}.{body}'>` "
                       "signatures must match, the timestamp within 300 s; applied once per "
                       "`webhook-id`. `composio.connected_account.expired` marks the connection "
                       "expired and updates the agent's tools; other events are acknowledged.",
        "parameters": [
            header("webhook-id", "Unique message id (the idempotency key).",
                    {"type": "string", "maxLength": 255}),
            header("webhook-timestamp", "Unix seconds.", {"type": "string", "pattern": "^[0-9]+$"}),
            header("webhook-signature", "Space-separated `v1,<base64>` signatures.",
                    {"type": "string"})],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"id": {"type": "string"}, "type": {"type": "string"},
                                             "data": {"type": "object"}}}}}},
        "responses": {
            "200": json_response("Verified: applied, ignored or a duplicate.", {
                "type": "object", "required": ["received", "outcome"],
                "properties": {"received": {"const": True},
                               "outcome": {"enum": ["expired", "ignored", "duplicate"]}}}),
            "400": error("Not a JSON object, or a connection event without `data.id`.",
                          BadRequest.code),
            "401": error("Signature headers missing, stale or wrong, or no webhook secret is "
                          "configured; nothing is stored.", Unauthorized.code, "bad_signature"),
            "413": TOO_LARGE_RESPONSE,
            "503": error("The database is unavailable; Composio retries.",
                          ServiceUnavailable.code),
        },
    },
}
