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

from flask import Blueprint, current_app, jsonify
from werkzeug.routing import Map, Rule

from control.errors import BadRequest, HermesError, ServiceUnavailable, SignatureError, Unauthorized
from control.web.openapi_schemas import SCHEMAS, ref
from control.web.webhooks import WEBHOOK_MAX_BYTES

bp = Blueprint("openapi", __name__)

# Error codes Werkzeug's exceptions render as (control.errors.register_error_handlers: the
# exception's name, lower-cased, spaces as underscores).
NOT_FOUND, METHOD_NOT_ALLOWED, TOO_LARGE = "not_found", "method_not_allowed", "request_entity_too_large"


def _error(description: str, *codes: str) -> dict:
    """A response with the ``Error`` body whose ``error`` is one of ``codes``."""
    schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _header(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "header", "required": True, "description": description,
            "schema": schema}


def _codes(*errors: type[HermesError]) -> list[str]:
    return [err.code for err in errors]


_TOO_LARGE = _error(f"The body exceeds {WEBHOOK_MAX_BYTES} bytes (refused before it is read).",
                    TOO_LARGE)
_BODY_NOTE = ("UTF-8 JSON (RFC 8259) nested at most 64 levels, at most "
              f"{WEBHOOK_MAX_BYTES} bytes; anything else is 400 (413 when too large), and a "
              "refused request stores nothing.")

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
                       "once per event id. " + _BODY_NOTE,
        "parameters": [_header("Stripe-Signature", "`t=<unix time>,v1=<hex HMAC-SHA256 of "
                               "'<t>.<body>' with the endpoint secret>`, within the tolerance.",
                               {"type": "string", "pattern": "^t=[0-9]+(,v[0-9]+=[0-9a-f]+)+$"})],
        "requestBody": _body("StripeEvent", STRIPE_EXAMPLE),
        "responses": {
            "200": _json("Verified and applied, ignored, or already seen.", ref("StripeAck")),
            "400": _error("Bad signature (Stripe's documented answer) or a malformed event.",
                          *_codes(BadRequest, SignatureError)),
            "413": _TOO_LARGE,
            "503": _error("STRIPE_WEBHOOK_SECRET is not set; Stripe retries.",
                          *_codes(ServiceUnavailable)),
        },
    },
    ("/webhooks/telegram", "POST"): {
        "summary": "Telegram webhook: messages for a tenant's agent, and /start linking",
        "description": "The secret header is compared in constant time before the body is "
                       "read (https://core.telegram.org/bots/api#setwebhook). " + _BODY_NOTE,
        "parameters": [_header("X-Telegram-Bot-Api-Secret-Token",
                               "The `secret_token` given to setWebhook.",
                               {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$"})],
        "requestBody": _body("TelegramUpdate", TELEGRAM_EXAMPLE),
        "responses": {
            "200": _json("Routed: published to the tenant's agent, answered, ignored or a "
                         "duplicate.", ref("TelegramAck")),
            "400": _error("Not an Update, or a stored field of the wrong type.",
                          *_codes(BadRequest)),
            "401": _error("The secret header is missing or wrong, or no secret is configured.",
                          *_codes(Unauthorized)),
            "413": _TOO_LARGE,
            "503": _error("The message bus is unavailable; Telegram retries.",
                          *_codes(ServiceUnavailable)),
        },
    },
    ("/healthz", "GET"): {
        "summary": "Liveness: the process answers HTTP",
        "responses": {"200": _json("Alive.", ref("Health"))},
    },
    ("/readyz", "GET"): {
        "summary": "Readiness: database, bus and the workers started in this process",
        "responses": {"200": _json("Ready.", ref("Readiness")),
                      "503": _json("A dependency is down or no worker runs in this process.",
                                   ref("Readiness"))},
    },
    ("/metrics", "GET"): {
        "summary": "Prometheus metrics (text exposition format)",
        "responses": {"200": {"description": "https://prometheus.io/docs/instrumenting/exposition_formats/",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    },
    ("/openapi.json", "GET"): {
        "summary": "This document",
        "responses": {"200": _json("OpenAPI 3.1 description of every route.",
                                   {"type": "object", "required": ["openapi", "paths"]})},
    },
    ("/static/<path:filename>", "GET"): {
        "summary": "Flask's static files route; the control plane ships none",
        "responses": {"404": _error("No such file (there are none).", NOT_FOUND)},
    },
}


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
                "NotFound": _error("Unknown path.", NOT_FOUND),
                "MethodNotAllowed": _error("The path does not answer this method.",
                                           METHOD_NOT_ALLOWED),
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI document of this app."""
    return jsonify(build_document(current_app.url_map))
