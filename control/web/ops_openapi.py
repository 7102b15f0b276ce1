"""OpenAPI descriptions of mission control (``control/web/ops.py``, issue 21), merged into
``control.web.openapi.OPERATIONS``.

Every route but ``/ops/login`` answers 404 ``not_found``, as an unknown path does, unless the
request carries a signed-in operator's ``hermes_ops`` cookie; errors are an HTML page for a
browser and the JSON ``Error`` otherwise.
"""

from __future__ import annotations

from control.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable
from control.web.openapi_parts import error

_HTML = {"text/html": {"schema": {"type": "string"}}}


def _either(description: str, *codes: str) -> dict:
    response = error(description, *codes)
    return {**response, "content": {**response["content"], **_HTML}}


def page(summary: str, description: str = "") -> dict:
    operation = {"summary": summary,
                 "responses": {"200": {"description": "The page (HTML).", "content": _HTML},
                               "404": _HIDDEN}}
    if description:
        operation["description"] = description
    return operation


def _form(*fields: str) -> dict:
    properties = {"csrf_token": {"type": "string"},
                  **{name: {"type": "string", "maxLength": 2000} for name in fields}}
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": properties, "required": ["csrf_token", *fields]}}}}


def _change(summary: str, action: str, *fields: str, extra: dict | None = None) -> dict:
    return {
        "summary": summary,
        "description": f"Needs the `{action}` permission (`control/services/operators.py`); "
                       "writes one audit row.",
        "requestBody": _form(*fields),
        "responses": {"303": _BACK, "400": _REFUSED, "403": _FORBIDDEN, "404": _HIDDEN,
                      **(extra or {})},
    }


_HIDDEN = _either("Not a signed-in operator (the console is invisible), or no such object.",
                  NotFound.code)
_REFUSED = _either("The CSRF token is missing or wrong, or a field is invalid; nothing changed.",
                   BadRequest.code)
_FORBIDDEN = _either("The operator's role does not allow this change.", Forbidden.code)
_BACK = {"description": "Done: back to the page (303), which shows the outcome.",
         "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}
_LIMITED = {**_either("Too many sign-in attempts from this address or for this e-mail; "
                      "`Retry-After` says when to try again.", "too_many_requests"),
            "headers": {"Retry-After": {"required": True, "schema": {"type": "string"}}}}
_BUS_DOWN = _either("The message bus cannot be reached.", ServiceUnavailable.code)
_AUDIT_FILTERS = [
    {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
    for name, text, schema in (
        ("actor", "Exact operator e-mail or `cli:<user>`.", {"type": "string"}),
        ("action", "Exact action, or a prefix ending in `.` (`attention.`).", {"type": "string"}),
        ("target", "Exact target (`tenant:5`).", {"type": "string"}),
        ("since", "First day, UTC.", {"type": "string", "format": "date"}),
        ("until", "Last day, UTC.", {"type": "string", "format": "date"}))]
_AUDIT_ENTRY = {
    "type": "object",
    "required": ["id", "at", "actor", "role", "action", "target", "before", "after", "source"],
    "properties": {"id": {"type": "integer"}, "at": {"type": "string"},
                   "actor": {"type": "string"}, "role": {"type": "string"},
                   "action": {"type": "string"}, "target": {"type": "string"},
                   "before": {}, "after": {}, "source": {"type": "string"}},
}

_TIME = {"type": ["string", "null"], "description": "ISO 8601, UTC; null when unknown."}
_FLEET_ROW = {
    "type": "object",
    "required": ["tenant_id", "email", "tenant_status", "plan", "state", "address",
                 "last_heartbeat_at", "ready_at", "agent_version", "uptime"],
    "properties": {"tenant_id": {"type": "integer"}, "email": {"type": "string"},
                   "tenant_status": {"type": "string"}, "plan": {"type": "string"},
                   "state": {"type": "string"}, "address": {"type": "string"},
                   "last_heartbeat_at": _TIME, "ready_at": _TIME,
                   "agent_version": {"type": ["string", "null"]},
                   "uptime": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                              "description": "Share of the last 30 days the agent was up; "
                                             "null while the machine does not serve."}},
}
_ATTENTION_ITEM = {
    "type": "object",
    "required": ["id", "kind", "subject", "detail", "created_at", "resolved_at"],
    "properties": {"id": {"type": "integer"}, "kind": {"type": "string"},
                   "subject": {"type": "string"}, "detail": {"type": "string"},
                   "created_at": {"type": "string"}, "acknowledged_at": _TIME,
                   "acknowledged_by": {"type": ["string", "null"]},
                   "assignee": {"type": ["string", "null"]}, "snoozed_until": _TIME,
                   "resolved_at": _TIME, "resolved_by": {"type": ["string", "null"]},
                   "resolution": {"type": ["string", "null"]}},
}

OPERATIONS: dict[tuple[str, str], dict] = {
    ("/ops/login", "GET"): {
        "summary": "Operator sign-in form (e-mail, password, TOTP code)",
        "responses": {"200": {"description": "The form (HTML).", "content": _HTML},
                      "303": {**_BACK, "description": "Already signed in: to the overview."}},
    },
    ("/ops/login", "POST"): {
        "summary": "Sign an operator in with password and TOTP (RFC 6238)",
        "description": "Rate limited per client address and per e-mail address (failures). "
                       "Sets the `hermes_ops` cookie (path `/ops`, HttpOnly, SameSite=Strict).",
        "requestBody": _form("email", "password", "totp"),
        "responses": {"303": {**_BACK, "description": "Signed in: to the overview."},
                      "400": _either("CSRF token missing or wrong, or wrong e-mail, password "
                                     "or code (one message).", BadRequest.code),
                      "429": _LIMITED},
    },
    ("/ops/logout", "POST"): {
        "summary": "Sign out: every session of the operator ends",
        "requestBody": _form(),
        "responses": {"303": {**_BACK, "description": "To the sign-in form."},
                      "400": _REFUSED, "404": _HIDDEN},
    },
    ("/ops", "GET"): page("Overview: machines by state, users, message rate, error rates, "
                           "LLM spend against budget, attention items, dead letters"),
    ("/ops/attention", "GET"): {
        **page("Attention queue: open items, oldest first"),
        "parameters": [{"name": "all", "in": "query", "required": False,
                        "description": "`1`: snoozed items too.", "schema": {"type": "string"}}],
    },
    ("/ops/attention/<item>/<action>", "POST"): _change(
        "Acknowledge, assign (`assignee`), snooze (`hours`, 1-168) or resolve (`note`) an "
        "attention item; `action` is one of those four", "attention.<action>",
        extra={"409": _either("The item is resolved already.", Conflict.code)}),
    ("/ops/dead-letters", "GET"): {
        **page("Dead letters of every `<stream>:dead`, reason and masked payload"),
        "responses": {**page("")["responses"], "503": _BUS_DOWN},
    },
    ("/ops/dead-letters/<action>", "POST"): _change(
        "Requeue (back onto its stream) or discard one dead letter; `action` is `requeue` or "
        "`discard`", "dead_letter.<action>", "stream", "entry_id",
        extra={"503": _BUS_DOWN}),
    ("/ops/provisioning", "GET"): {
        **page("Provisioning ledger: every machine's latest job and its current step"),
        "parameters": [{"name": "state", "in": "query", "required": False,
                        "schema": {"enum": ["failed", "in_progress", "all"]}}],
    },
    ("/ops/provisioning/<tenant>", "GET"): page(
        "One job's timeline: queued, stack up, server running, agent ready (or the failed "
        "step and its error)"),
    ("/ops/provisioning/<tenant>/retry", "POST"): _change(
        "Retry a failed tenant's provisioning (`provisioning.reprovision`, as "
        "`hermes tenants reprovision`)", "provisioning.retry",
        extra={"409": _either("The tenant is canceled or has no plan.", Conflict.code)}),
    ("/ops/fleet", "GET"): {
        **page("Fleet: every machine with its tenant, plan, state, address and last heartbeat"),
        "parameters": [{"name": "q", "in": "query", "required": False,
                        "description": "Tenant e-mail (part of it) or id.",
                        "schema": {"type": "string"}}],
    },
    ("/ops/fleet/<tenant>/<action>", "POST"): _change(
        "Restart or pause the agent (409 unless its machine is ready or unhealthy), resume it "
        "(409 unless paused and the tenant active), reprovision, resize (`plan`: `light` or "
        "`heavy`) or deprovision (`confirm`: the tenant's e-mail, or its id, typed in full) a "
        "tenant's machine; `action` is one of those six",
        "machine.<action>",
        extra={"409": _either("Restart, pause: the machine is not running; resume: it is not "
                              "paused or the tenant not active; reprovision: the tenant is "
                              "canceled or has no plan.", Conflict.code)}),
    ("/ops/audit", "GET"): {
        **page("The audit trail, newest first, filtered (admins)"),
        "parameters": _AUDIT_FILTERS,
        "responses": {**page("")["responses"], "400": _REFUSED, "403": _FORBIDDEN},
    },
    ("/ops/audit.json", "GET"): {
        "summary": "The filtered audit trail as JSON (admins)",
        "parameters": _AUDIT_FILTERS,
        "responses": {
            "200": {"description": "`{\"entries\": [...]}`, newest first, at most 1000.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["entries"],
                        "properties": {"entries": {"type": "array", "items": _AUDIT_ENTRY}}}}}},
            "400": _REFUSED, "403": _FORBIDDEN, "404": _HIDDEN},
    },
    ("/ops/tenants", "GET"): {
        **page("Tenants, newest first, with status, plan and machine state"),
        "parameters": [{"name": "q", "in": "query", "required": False,
                        "description": "Tenant e-mail (part of it) or id.",
                        "schema": {"type": "string"}}],
    },
    ("/ops/tenants/<tenant>", "GET"): page(
        "One tenant: subscription, linked channels, usage and spend, recent deliveries"),
    ("/ops/channels", "GET"): page(
        "Channels and deliveries: each platform's health and reply outcomes over 24 hours, "
        "the latest failed and recovered deliveries"),
    ("/ops/llm", "GET"): page(
        "LLM backends: each provider route's health, each backend's calls, error rate and "
        "latency over the last hour, and why each call went where it did"),
    ("/ops/history", "GET"): {
        **page("History: messages, LLM spend, errors and provisioning time as charts"),
        "parameters": [{"name": "range", "in": "query", "required": False,
                        "description": "`24h` (default), `7d` or `30d`.",
                        "schema": {"type": "string"}}],
    },
    ("/ops/fleet.json", "GET"): {
        "summary": "The fleet as JSON, filtered as the fleet page",
        "parameters": [{"name": "q", "in": "query", "required": False,
                        "description": "Tenant e-mail (part of it) or id.",
                        "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "`{\"machines\": [...]}`, by tenant id, at most 500.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["machines"],
                        "properties": {"machines": {"type": "array", "items": _FLEET_ROW}}}}}},
            "404": _HIDDEN},
    },
    ("/ops/attention.json", "GET"): {
        "summary": "Every unresolved attention item, snoozed ones too, as JSON",
        "responses": {
            "200": {"description": "`{\"items\": [...]}`, oldest first.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["items"],
                        "properties": {"items": {"type": "array", "items": _ATTENTION_ITEM}}}}}},
            "404": _HIDDEN},
    },
}
