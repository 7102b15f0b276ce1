"""The building blocks of the OpenAPI document (``control.web.openapi``) that every route table
(``*_openapi.py``) uses: error responses, headers, pages and the notes shared by webhooks."""

from __future__ import annotations

from control.errors import HermesError
from control.web.openapi_schemas import ref
from control.web.webhooks import WEBHOOK_MAX_BYTES

# Error codes Werkzeug's exceptions render as (control.errors.register_error_handlers: the
# exception's name, lower-cased, spaces as underscores).
NOT_FOUND: str = "not_found"
METHOD_NOT_ALLOWED: str = "method_not_allowed"
TOO_LARGE: str = "request_entity_too_large"


def error(description: str, *codes: str) -> dict:
    """A response with the ``Error`` body whose ``error`` is one of ``codes``."""
    schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# The per-tenant stream cap (control/web/stream_cap.py): web-chat streams and MCP proxy calls.
TOO_MANY_STREAMS = {**error("The account holds `HERMES_STREAMS_PER_TENANT` web-chat and MCP "
                              "streams already; `Retry-After` says when to try again.",
                              "too_many_streams"),
                     "headers": {"Retry-After": {"required": True, "schema": {"type": "string"}}}}


def json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def header(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "header", "required": True, "description": description,
            "schema": schema}


def codes(*errors: type[HermesError]) -> list[str]:
    return [err.code for err in errors]


TOO_LARGE_RESPONSE: dict = error(f"The body exceeds {WEBHOOK_MAX_BYTES} bytes (refused before it is read).",
                          TOO_LARGE)
BODY_NOTE: str = ("UTF-8 JSON (RFC 8259) nested at most 64 levels, at most "
                   f"{WEBHOOK_MAX_BYTES} bytes; anything else is 400 (413 when too large), "
                   "and a refused request stores nothing.")


# The signed-in user's dashboard (control/web/dashboard.py, issue #10).  Without a session every
# route redirects to the login page; a POST is checked for its CSRF token first (flask-wtf).
SIGN_IN: dict = {"description": "Not signed in: a redirect to `/login?next=<this path>` (or, after a "
                           "successful form POST, back to the page).",
            "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}


def page(summary: str) -> dict:
    return {"summary": summary, "responses": {
        "200": {"description": "The page (HTML).", "content": {"text/html": {"schema": {"type": "string"}}}},
        "302": SIGN_IN}}


def error_page(description: str, *codes: str) -> dict:
    response = error(description, *codes)
    response["content"]["text/html"] = {"schema": {"type": "string"}}
    return response
