"""``GET /openapi.json``: an OpenAPI 3.1 description of every route of the control app.

The paths come from the app's ``url_map``, so the document always lists what the app really
serves; each ``(rule, method)`` takes its description from ``OPERATIONS``. A route added without
a description is left out of the document, which ``tests/control/test_openapi.py`` catches.
``HEAD`` (answered for every ``GET``) and ``OPTIONS`` (every path) are Flask's automatic methods
and are described from the rule itself. Spec: https://spec.openapis.org/oas/v3.1.0
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from flask import Blueprint, current_app, jsonify
from werkzeug.routing import Map, Rule

from control.errors import BadRequest, ServiceUnavailable, SignatureError, Unauthorized
from control.web.connections_openapi import OPERATIONS as _CONNECTIONS
from control.web.jobs_openapi import OPERATIONS as _JOBS
from control.web.llm_gateway_openapi import OPERATIONS as _LLM_GATEWAY
from control.web.mcp_proxy_openapi import OPERATIONS as _MCP_PROXY
from control.web.openapi_parts import (
    BODY_NOTE,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    SIGN_IN,
    TOO_LARGE_RESPONSE,
    TOO_MANY_STREAMS,
    codes,
    error,
    error_page,
    header,
    json_response,
    page,
)
from control.web.openapi_schemas import SCHEMAS, ref
from control.web.ops_openapi import OPERATIONS as _OPS
from control.web.pool_openapi import OPERATIONS as _POOL
from control.web.slack_openapi import OPERATIONS as _SLACK
from control.web.whatsapp_openapi import OPERATIONS as _WHATSAPP

bp = Blueprint("openapi", __name__)

# One request per webhook, as the platforms send them (Telegram's: a published Update from its
# webhook guide; Stripe's: the 2026 event and subscription shapes, fields trimmed to those read).
STRIPE_EXAMPLE = {
    "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "api_version": "2026-08-27.basil",
    "created": 1686089970, "livemode": False, "pending_webhooks": 1,
    "request": {"id": None, "idempotency_key": None}, "type": "customer.subscription.created",
    "data": {"object": {
        "id": "sub_1MowQVLkdIwHu7ixeRlqHVzs", "object": "subscription",
        "customer": "cus_NffrFeUfNV2Hib", "status": "active", "metadata": {"plan": "light"},
        "items": {"object": "list", "data": [{"current_period_end": 1688681970, "price": {
            "id": "price_1MowQULkdIwHu7ixraBm864M", "lookup_key": None, "metadata": {}}}]}}},
}
TELEGRAM_EXAMPLE = {
    "update_id": 123456789,
    "message": {"message_id": 123456, "date": 1631818904, "text": "aaaaaaaaaa",
                "from": {"id": 12345678, "is_bot": False, "first_name": "Mario",
                         "last_name": "Bros", "username": "MarioLovesPeach", "language_code": "it"},
                "chat": {"id": 12345678, "first_name": "Mario", "last_name": "Bros",
                         "username": "MarioLovesPeach", "type": "private"}},
}


def _body(schema: str, example: dict) -> dict:
    return {"required": True, "content": {"application/json": {
        "schema": ref(schema), "examples": {"published": {"value": example}}}}}


OPERATIONS: dict[tuple[str, str], dict] = {
    ("/webhooks/stripe", "POST"): {
        "summary": "Stripe webhook: subscriptions create, resize and release machines",
        "description": "The signature is verified on the raw body before anything is parsed "
                       "(https://docs.stripe.com/webhooks#verify-events); the event is applied "
                       "once per event id. " + BODY_NOTE,
        "parameters": [header("Stripe-Signature", "`t=<unix time>,v1=<hex HMAC-SHA256 of "
                               "'<t>.<body>' with the endpoint secret>`, within the tolerance.",
                               {"type": "string", "pattern": "^t=[0-9]+(,v[0-9]+=[0-9a-f]+)+$"})],
        "requestBody": _body("StripeEvent", STRIPE_EXAMPLE),
        "responses": {
            "200": json_response("Verified and applied, ignored, or already seen.", ref("StripeAck")),
            "400": error("Bad signature (Stripe's documented answer) or a malformed event.",
                          *codes(BadRequest, SignatureError)),
            "413": TOO_LARGE_RESPONSE,
            "503": error("STRIPE_WEBHOOK_SECRET is not set; Stripe retries.",
                          *codes(ServiceUnavailable)),
        },
    },
    ("/webhooks/telegram", "POST"): {
        "summary": "Telegram webhook: messages for a tenant's agent, and /start linking",
        "description": "The secret header is compared in constant time before the body is "
                       "read (https://core.telegram.org/bots/api#setwebhook). " + BODY_NOTE,
        "parameters": [header("X-Telegram-Bot-Api-Secret-Token",
                               "The `secret_token` given to setWebhook.",
                               {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$"})],
        "requestBody": _body("TelegramUpdate", TELEGRAM_EXAMPLE),
        "responses": {
            "200": json_response("Routed: published to the tenant's agent, answered, linked (``/start CODE``), "
                         "ignored or a duplicate.", ref("TelegramAck")),
            "400": error("Not an Update, or a stored field of the wrong type.",
                          *codes(BadRequest)),
            "401": error("The secret header is missing or wrong, or no secret is configured.",
                          *codes(Unauthorized)),
            "413": TOO_LARGE_RESPONSE,
            "503": error("The message bus is unavailable; Telegram retries.",
                          *codes(ServiceUnavailable)),
        },
    },
    ("/healthz", "GET"): {
        "summary": "Liveness: the process answers HTTP",
        "responses": {"200": json_response("Alive.", ref("Health"))},
    },
    ("/readyz", "GET"): {
        "summary": "Readiness: database, bus and the workers started in this process",
        "responses": {"200": json_response("Ready.", ref("Readiness")),
                      "503": json_response("A dependency is down or no worker runs in this process.",
                                   ref("Readiness"))},
    },
    ("/metrics", "GET"): {
        "summary": "Prometheus metrics (text exposition format)",
        "responses": {"200": {"description": "https://prometheus.io/docs/instrumenting/exposition_formats/",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    },
    ("/openapi.json", "GET"): {
        "summary": "This document",
        "responses": {"200": json_response("OpenAPI 3.1 description of every route.",
                                   {"type": "object", "required": ["openapi", "paths"]})},
    },
    ("/static/<path:filename>", "GET"): {
        "summary": "Flask's static files route; the control plane ships none",
        "responses": {"404": error("No such file (there are none).", NOT_FOUND)},
    },
}

# Discord's interactions endpoint (control/web/webhooks.py, issue 11).
DISCORD_PING_EXAMPLE = {"id": "787053080478613555", "token": "ThisIsATokenFromDiscordThatIsVeryLong",
                        "type": 1, "version": 1}  # ../shared/realdata/discord/interaction_ping.json
OPERATIONS[("/webhooks/discord", "POST")] = {
    "summary": "Discord interactions endpoint: PING, /link and slash commands for the agent",
    "description": "The Ed25519 signature of `X-Signature-Timestamp` + the raw body is verified "
                   "with DISCORD_PUBLIC_KEY before anything is parsed, and a timestamp more than "
                   "5 minutes away is a replay (https://discord.com/developers/docs/interactions/"
                   "overview#setting-up-an-endpoint-validating-security-request-headers). A command "
                   "for the agent is answered with a deferred response (type 5) and its reply "
                   "edits the original response; the interaction token lives 15 minutes. "
                   + BODY_NOTE,
    "parameters": [
        header("X-Signature-Ed25519", "Hex Ed25519 signature of timestamp + body.",
                {"type": "string", "pattern": "^[0-9a-f]{128}$"}),
        header("X-Signature-Timestamp", "Unix seconds when Discord sent the request.",
                {"type": "string", "pattern": "^[0-9]+$"}),
    ],
    "requestBody": _body("DiscordInteraction", DISCORD_PING_EXAMPLE),
    "responses": {
        "200": json_response("PONG, the control plane's answer (ephemeral), or a deferred response.",
                     ref("DiscordInteractionResponse")),
        "400": error("Not an interaction, or a stored field of the wrong type.", *codes(BadRequest)),
        "401": error("The signature is missing, wrong or too old, or DISCORD_PUBLIC_KEY is not "
                      "set; nothing is stored.", *codes(Unauthorized)),
        "413": TOO_LARGE_RESPONSE,
        "503": error("The message bus is unavailable; the user sees the interaction fail and "
                      "may retry.", *codes(ServiceUnavailable)),
    },
}

_CSRF = "The CSRF token (form field `csrf_token` or header `X-CSRFToken`) is missing or wrong; nothing is stored."


OPERATIONS.update({
    ("/dashboard", "GET"): page("Dashboard: machine state, plan and usage this billing period"),
    ("/dashboard/chat", "GET"): page("Quick chat with the user's agent over the `web` channel"),
    ("/dashboard/chat/messages", "POST"): {
        "summary": "Send a quick-chat message to the user's agent (same bus as every channel)",
        "description": "JSON `{\"text\"}` or a form field `text`; at most 4000 characters. The "
                       "reply streams from `stream_url`.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": ref("WebChatMessage")},
            "application/x-www-form-urlencoded": {"schema": ref("WebChatMessage")}}},
        "responses": {
            "202": json_response("Published to the agent.", ref("WebChatAccepted")),
            "302": SIGN_IN,
            "400": error(_CSRF + " Or the text is empty, too long or not a string.",
                          "bad_request", "bad_json", "empty_message", "message_too_long"),
            "409": error("The agent is paused (subscription ended) or its machine is not ready.",
                          "paused", "not_ready"),
            "503": error("The message bus is unavailable; nothing was stored.",
                          *codes(ServiceUnavailable)),
        },
    },
    ("/dashboard/chat/stream/<envelope_id>", "GET"): {
        "summary": "The agent's reply to a quick-chat message as server-sent events",
        "description": "`retry:` first, then `event: delta` (data `{\"text\"}`: the reply so far), "
                       "`event: final` (the whole reply; the stream ends) or, after 120 s without "
                       "a reply, `event: error` (data `{\"message\"}`); a comment line every 15 s "
                       "of silence. https://html.spec.whatwg.org/multipage/server-sent-events.html",
        "responses": {
            "200": {"description": "The event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "302": SIGN_IN,
            "404": error("Not a quick-chat message of this user.", NOT_FOUND),
            "429": TOO_MANY_STREAMS,
        },
    },
    ("/dashboard/export", "GET"): {
        "summary": "Everything the user's agent keeps, as one zip (`control/services/export.py`)",
        "description": "Memories, skills, cron jobs, goals, conversation history, usage, settings and "
                       "the files the user sent, as JSON described by the zip's README.md plus the "
                       "original files; made from a fresh backup of the running agent, else the "
                       "newest backup, else the account's archive.",
        "responses": {
            "200": {"description": "The zip.", "content": {"application/zip": {"schema": {
                "type": "string", "format": "binary"}}}},
            "302": SIGN_IN,
            "404": error("No backup or archive of the account's data exists yet.", "no_backup"),
            "503": error("The backup failed its checksum or the export could not be built.",
                          "export_failed"),
        },
    },
    ("/dashboard/settings", "GET"): page("Settings: model, time zone, reply language, preferences"),
    ("/dashboard/settings", "POST"): {
        "summary": "Save the settings (a form); the agent applies them from the next message",
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": ref("SettingsForm")}}},
        "responses": {
            "302": SIGN_IN,
            "400": {"description": _CSRF + " Or a field is invalid: the form again (HTML) with "
                                           "each error; nothing is stored.",
                    "content": {"application/json": {"schema": {"allOf": [
                        ref("Error"), {"properties": {"error": {"enum": ["bad_request"]}}}]}},
                                "text/html": {"schema": {"type": "string"}}}},
        },
    },
    ("/dashboard/chats", "GET"): page("Linked chats, and the Telegram link (deep link, QR code)"),
    ("/dashboard/chats/<identity_id>/unlink", "POST"): {
        "summary": "Unlink one of the user's chats",
        "responses": {
            "302": SIGN_IN,
            "400": error(_CSRF, "bad_request"),
            "404": error("Not a linked chat of this user.", NOT_FOUND),
        },
    },
    ("/dashboard/goals", "POST"): {
        "summary": "Start a goal the agent pursues on its own (sent as `/goal OBJECTIVE` on the web chat)",
        "description": "Form fields `csrf_token` and `objective`. Always answers with a redirect to "
                       "the chat page, which shows whether the goal started; an empty objective, a "
                       "`/goal` subcommand word, a paused agent or one not ready sends nothing.",
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
            "schema": {"type": "object", "required": ["objective"],
                       "properties": {"objective": {"type": "string", "maxLength": 3994},
                                      "csrf_token": {"type": "string"}}}}}},
        "responses": {
            "302": {"description": "To the chat page (or to sign in without a session)."},
            "400": error(_CSRF, "bad_request"),
            "503": error("The message bus is unavailable; nothing was stored.",
                          *codes(ServiceUnavailable)),
        },
    },
    ("/dashboard/commands", "GET"): page("The agent's chat commands, from its command registry"),
})

# The billing pages (control/web/billing.py, issue #10).  Errors are JSON for API clients and
# a page for browsers (``control.errors.wants_html``).



_STRIPE_FAILED = error_page("Stripe could not be reached or refused the request "
                             "(`payment_provider_error`); nothing was changed here.",
                             "payment_provider_error")
_NO_BILLING = error_page("STRIPE_SECRET_KEY (or the plan's price) is not set: billing is not "
                          "set up on this server.", "billing_not_configured")
_TO_STRIPE = {"description": "A redirect (303) to Stripe's page.",
              "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}

OPERATIONS.update({
    ("/billing", "GET"): {**page("Billing: plan, status, renewal date, usage this period "
                                  "against the plan, invoices (from Stripe)"),
                          "responses": {**page("")["responses"], "502": _STRIPE_FAILED,
                                        "503": _NO_BILLING}},
    ("/billing/checkout", "GET"): {
        "summary": "Start Stripe Checkout for a plan (subscription mode)",
        "description": "`client_reference_id` is the user's tenant id. A user who already has "
                       "a subscription is sent to `/billing` instead.",
        "parameters": [{"name": "plan", "in": "query", "required": True,
                        "schema": {"enum": ["light", "heavy"]}}],
        "responses": {
            "303": {**_TO_STRIPE, "description": "To the Checkout page, or to `/billing` for a "
                                                 "user who already pays."},
            "302": SIGN_IN,
            "400": error_page("`plan` is not `light` or `heavy`.", "bad_request"),
            "502": _STRIPE_FAILED, "503": _NO_BILLING,
        },
    },
    ("/billing/success", "GET"): {
        "summary": "After paying: provisioning progress, then how to link Telegram and the web chat",
        "parameters": [{"name": "session_id", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {**page("")["responses"],
                      "404": error_page("The checkout session is not this user's.", NOT_FOUND)},
    },
    ("/billing/status.json", "GET"): {
        "summary": "The signed-in user's provisioning progress",
        "responses": {"200": json_response("Machine state, step, plan and, when ready, the chat links.",
                                   ref("BillingStatus")),
                      "302": SIGN_IN},
    },
    ("/billing/portal", "GET"): {
        "summary": "Open the Stripe customer portal (card, plan, cancellation)",
        "responses": {"303": {**_TO_STRIPE, "description": "To the portal, or to `/billing` when "
                                                           "the user never subscribed."},
                      "302": SIGN_IN, "502": _STRIPE_FAILED, "503": _NO_BILLING},
    },
    ("/account/delete", "GET"): page("Account deletion: confirm with e-mail address and password"),
    ("/account/delete", "POST"): {
        "summary": "Delete the account: cancel the Stripe subscriptions, delete all the user's data",
        "description": "Rate limited like the log-in form. A wrong e-mail address or password "
                       "changes nothing.",
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": ref("DeleteAccountForm")}}},
        "responses": {
            "200": {"description": "Deleted and signed out (HTML confirmation).",
                    "content": {"text/html": {"schema": {"type": "string"}}}},
            "302": SIGN_IN,
            "400": {"description": _CSRF + " Or the e-mail address or password is wrong: the "
                                           "form again (HTML); nothing is deleted.",
                    "content": {"application/json": {"schema": {"allOf": [
                        ref("Error"), {"properties": {"error": {"enum": ["bad_request"]}}}]}},
                                "text/html": {"schema": {"type": "string"}}}},
            "429": error_page("Too many attempts from this address.", "too_many_requests"),
            "502": _STRIPE_FAILED,
            "503": error_page("Billing is not set up, or the machine could not be deleted "
                               "yet; nothing (else) was deleted.", "billing_not_configured",
                               *codes(ServiceUnavailable)),
        },
    },
})

# The account pages (control/web/accounts.py, issue #10): HTML for browsers.  Form POSTs need the
# page's CSRF token (flask-wtf) and are rate limited per client address (``AUTH_LIMITS``); an
# error is an HTML page when the client asks for text/html, else the JSON ``Error``.
_ACCOUNT_HTML = {"text/html": {"schema": {"type": "string"}}}


def _account_page(description: str) -> dict:
    return {"description": description, "content": _ACCOUNT_HTML}


def _account_error(description: str, *codes: str) -> dict:
    response = error(description, *codes)
    return {**response, "content": {**response["content"], **_ACCOUNT_HTML}}


def _account_redirect(description: str) -> dict:
    return {"description": description,
            "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}


def _account_form(*fields: str, required: tuple[str, ...] = ()) -> dict:
    properties = {"csrf_token": {"type": "string"},
                  **{name: {"type": "string", "maxLength": 320} for name in fields}}
    schema = {"type": "object", "properties": properties,
              "required": ["csrf_token", *(required or fields)]}
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


_ACCOUNT_REFUSED = _account_error(
    "The CSRF token is missing or wrong (`bad_request`; nothing is stored), or the form is "
    "refused (the form again, with the reasons).", "bad_request")
_ACCOUNT_LIMITED = {**_account_error("More than 5 posts a minute or 20 an hour from this "
                                     "address (an IPv6 client: its /64), or the route's "
                                     "per-account limit; `Retry-After` says when to try again.",
                                     "too_many_requests"),
                    "headers": {"Retry-After": {"required": True, "schema": {"type": "string"}}}}
_SIGNED_IN = _account_redirect("Already signed in: on to the dashboard.")

OPERATIONS.update({
    ("/", "GET"): {"summary": "Landing page: what Hermes Max is and the two plans",
                   "responses": {"200": _account_page("The page."), "302": _SIGNED_IN}},
    ("/signup", "GET"): {"summary": "Sign-up form (`?plan=light|heavy` goes on to checkout)",
                         "responses": {"200": _account_page("The form."), "302": _SIGNED_IN}},
    ("/signup", "POST"): {
        "summary": "Mail a link that finishes the sign-up (valid 24 hours)",
        "description": "Creates no account: the link does, once used (`/signup/verify/<token>`). "
                       "The same page for a new address, a paying tenant's address and one "
                       "with an account (its owner gets a note instead of a link).  Also "
                       "limited to 3 an hour and 10 a day per e-mail address.",
        "requestBody": _account_form("email", "password", "confirm"),
        "responses": {"200": _account_page("\"Check your e-mail\"."),
                      "302": _SIGNED_IN, "400": _ACCOUNT_REFUSED, "429": _ACCOUNT_LIMITED}},
    ("/signup/verify/<token>", "GET"): {
        "summary": "Confirmation page of a sign-up link (changes nothing)",
        "responses": {"200": _account_page("One button: create the account."),
                      "400": _account_error("The link is unknown, expired or already used.",
                                            "invalid_signup_link")}},
    ("/signup/verify/<token>", "POST"): {
        "summary": "Create the account (on the paying tenant with that address, if any) and "
                   "sign in",
        "requestBody": _account_form(),
        "responses": {"302": _account_redirect("Signed in: to `/billing/checkout?plan=` or "
                                               "the dashboard."),
                      "400": _account_error("The link is unknown, expired or used "
                                            "(`invalid_signup_link`), or the CSRF token is "
                                            "missing (`bad_request`).",
                                            "invalid_signup_link", "bad_request"),
                      "409": _account_error("The address got an account in the meantime.",
                                            "address_taken"),
                      "429": _ACCOUNT_LIMITED}},
    ("/login", "GET"): {"summary": "Log-in form (`next`: a path on this site to go to after)",
                        "responses": {"200": _account_page("The form."), "302": _SIGNED_IN}},
    ("/login", "POST"): {
        "summary": "Sign in; the session is renewed",
        "description": "Also limited to 10 failed tries an hour and 100 a day per account.",
        "requestBody": _account_form("email", "password", "totp", "remember",
                                     required=("email", "password")),
        "responses": {"302": _account_redirect("Signed in: to `next` (same site only) or the "
                                               "dashboard."),
                      "400": _account_error("CSRF token missing or wrong (`bad_request`), or "
                                            "one message for a wrong e-mail, password or `totp` "
                                            "code (required once the user turned TOTP on; each "
                                            "code works once).", "bad_request"),
                      "429": _ACCOUNT_LIMITED}},
    ("/dashboard/security", "GET"): page("Two-step sign-in (TOTP): when off, a new secret as an "
                                          "otpauth:// URI and QR code; when on, how to turn it off"),
    ("/dashboard/security/totp", "POST"): {
        "summary": "Turn TOTP on with the page's sealed secret and one current code",
        "requestBody": _account_form("sealed", "code"),
        "responses": {"303": _account_redirect("On: back to the security page."),
                      "302": SIGN_IN,
                      "400": _account_error(_CSRF + " Or the code is wrong or used, or the "
                                            "sealed secret is not the page's: the page again "
                                            "with the error; TOTP stays off.", "bad_request"),
                      "429": _ACCOUNT_LIMITED}},
    ("/dashboard/security/totp/disable", "POST"): {
        "summary": "Turn TOTP off; needs one current, unused code",
        "requestBody": _account_form("code"),
        "responses": {"303": _account_redirect("Off: back to the security page."),
                      "302": SIGN_IN,
                      "400": _account_error(_CSRF + " Or the code is wrong or used: the page "
                                            "again with the error; TOTP stays on.", "bad_request"),
                      "429": _ACCOUNT_LIMITED}},
    ("/logout", "POST"): {
        "summary": "Sign out (ends every session of the account)",
        "requestBody": _account_form(),
        "responses": {"303": _account_redirect("To the landing page."),
                      "400": _account_error("The CSRF token is missing or wrong; nobody is "
                                            "signed out.", "bad_request")}},
    ("/reset", "GET"): {"summary": "Ask for a password reset link",
                        "responses": {"200": _account_page("The form.")}},
    ("/reset", "POST"): {
        "summary": "Send a reset link (valid one hour) if the address has an account",
        "description": "The same answer whether or not the address has an account.  Also "
                       "limited to 3 an hour and 10 a day per e-mail address.",
        "requestBody": _account_form("email"),
        "responses": {"200": _account_page("\"Check your e-mail\"."),
                      "400": _ACCOUNT_REFUSED, "429": _ACCOUNT_LIMITED}},
    ("/reset/<token>", "GET"): {
        "summary": "New-password form of a reset link",
        "responses": {"200": _account_page("The form."),
                      "400": _account_error("The link is unknown, expired or already used.",
                                            "invalid_reset_link")}},
    ("/reset/<token>", "POST"): {
        "summary": "Set the new password; the link is used up and every session ends",
        "requestBody": _account_form("password", "confirm"),
        "responses": {"302": _account_redirect("Signed in with the new password: to the "
                                               "dashboard."),
                      "400": _account_error("The link is unknown, expired or used "
                                            "(`invalid_reset_link`), the CSRF token is missing "
                                            "(`bad_request`), or the form is refused.",
                                            "invalid_reset_link", "bad_request"),
                      "429": _ACCOUNT_LIMITED}},
})


# The connection routes (control/web/connections.py, issue #13); after the helpers they use.
OPERATIONS.update(_CONNECTIONS)

# The Slack routes (control/web/slack.py, issue 11), likewise.
OPERATIONS.update(_SLACK)

# The WhatsApp webhook (control/web/whatsapp.py, issue 12), likewise.
OPERATIONS.update(_WHATSAPP)

# The media URLs (control/web/media.py, issue #12).
OPERATIONS[("/media/<token>", "GET")] = {
    "summary": "A file a user sent, for the tenant's agent (signed URL, valid 7 days)",
    "description": "The token is signed by the control plane (itsdangerous, salt `media`) over "
                   "the tenant and the object's key. The answer carries the stored type, "
                   "`Content-Disposition: attachment`, `X-Content-Type-Options: nosniff` and "
                   "`Cache-Control: private`. Any bad, expired, tampered or unknown token, or a "
                   "deleted file, is a 404 that does not say which.",
    "responses": {
        "200": {"description": "The file's bytes.",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
        "404": error("No such file.", NOT_FOUND),
    },
}

# The MCP proxy (control/web/mcp_proxy.py, issue #13), likewise.
OPERATIONS.update(_MCP_PROXY)

# The LLM gateway (control/web/llm_gateway.py, issue #19), likewise.
OPERATIONS.update(_LLM_GATEWAY)

# Mission control (control/web/ops.py, issue 21), likewise.
OPERATIONS.update(_OPS)

# The Jobs API and its dashboard page (control/web/jobs.py, issue 23), likewise.
OPERATIONS.update(_JOBS)

# The warm pool's config endpoint (control/web/pool.py, issue 22), likewise.
OPERATIONS.update(_POOL)


# A Werkzeug rule variable: ``<name>`` or ``<converter:name>`` or ``<converter(args):name>``.
_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
# What each converter matches (werkzeug.routing.converters): a path segment, or for ``path`` the
# rest of the path (its regex ``[^/].*?`` stops at a newline); other values are a 404.
_CONVERTER_SCHEMAS = {"int": {"type": "integer", "minimum": 0}, "float": {"type": "number"},
                      "path": {"type": "string", "pattern": r"^[^/\n][^\n]*$"}}
_SEGMENT = {"type": "string", "pattern": "^[^/]+$"}


def _path_template(rule: Rule) -> str:
    """``/static/<path:filename>`` -> ``/static/{filename}``."""
    return _VARIABLE.sub(lambda m: "{" + m["name"] + "}", rule.rule)


def _path_parameters(rule: Rule) -> list[dict]:
    return [{"name": m["name"], "in": "path", "required": True,
             "schema": _CONVERTER_SCHEMAS.get(m["converter"], _SEGMENT)}
            for m in _VARIABLE.finditer(rule.rule)]


def _without_bodies(responses: dict) -> dict:
    return {code: {"description": r["description"]} for code, r in responses.items()}


def describe(rule: Rule, method: str) -> dict | None:
    """Return the Operation Object for ``method`` on ``rule``, or None if it is undescribed.

    Args:
        rule: a Werkzeug URL rule of the app.
        method: an HTTP method the rule answers, upper case.
    """
    operation: dict[str, Any]
    if method == "OPTIONS":
        operation = {"summary": "Allowed methods (Flask's automatic OPTIONS)",
                     "responses": {"200": {"description": "Empty; the methods are in `Allow`.",
                                           "headers": {"Allow": {"required": True,
                                                                 "schema": {"type": "string"}}}}}}
    elif method == "HEAD" and (rule.rule, "GET") in OPERATIONS:
        get = OPERATIONS[rule.rule, "GET"]
        operation = {"summary": f"{get['summary']} (headers only)",
                     "responses": _without_bodies(get["responses"])}
    elif (rule.rule, method) in OPERATIONS:
        operation = dict(OPERATIONS[rule.rule, method])
    else:
        return None
    operation["operationId"] = f"{method.lower()}_{rule.endpoint.replace('.', '_')}"
    operation["parameters"] = _path_parameters(rule) + operation.get("parameters", [])
    return operation


def build_document(url_map: Map) -> dict:
    """Return the OpenAPI 3.1 document for every described route of ``url_map``.

    Args:
        url_map: the Flask app's ``url_map``.

    Returns:
        The document as a JSON-ready dict.
    """
    paths: dict[str, dict] = {}
    for rule in url_map.iter_rules():
        for method in sorted(rule.methods or ()):
            operation = describe(rule, method)
            if operation is not None:
                paths.setdefault(_path_template(rule), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hermes Max control plane", "version": version("hermes-max"),
            "description": "Every error answers the `Error` body. A method a path does not "
                           "list answers 405 `method_not_allowed`; an unknown path answers "
                           "404 `not_found`.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "NotFound": error("Unknown path.", NOT_FOUND),
                "MethodNotAllowed": error("The path does not answer this method.",
                                           METHOD_NOT_ALLOWED),
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI document of this app."""
    return jsonify(build_document(current_app.url_map))
