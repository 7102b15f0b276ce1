"""OpenAPI descriptions of the Jobs API and its dashboard page (``control/web/jobs.py``, issue
23), merged into ``control.web.openapi.OPERATIONS``."""

from __future__ import annotations

from control.errors import BadRequest, NotFound, ServiceUnavailable
from control.services import jobs
from control.web.openapi_parts import (
    NOT_FOUND,
    SIGN_IN,
    TOO_LARGE,
    error,
    error_page,
    json_response,
    page,
)

_TIME = {"type": ["string", "null"], "format": "date-time"}
JOB = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "state", "prompt", "priority", "budget_cents", "depends_on", "callback_url",
                 "callback_state", "result", "cost_cents", "created_at", "started_at",
                 "finished_at"],
    "properties": {
        "id": {"type": "string", "description": "`job_<hex>`."},
        "state": {"enum": list(jobs.STATES), "description":
                  "`waiting` (for its dependencies), `queued` (sent to the agent), then `done`, "
                  "`failed` (the agent failed, or a dependency failed or was cancelled) or "
                  "`cancelled`."},
        "prompt": {"type": "string"}, "priority": {"type": "integer"},
        "budget_cents": {"type": "number"},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "callback_url": {"type": ["string", "null"]},
        "callback_state": {"enum": ["none", "pending", "delivered", "failed"]},
        "result": {"type": ["string", "null"], "description":
                   "The agent's reply (`done`) or why it failed; null until the job ends."},
        "cost_cents": {"type": "number", "description": "What its model calls cost, US cents."},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _TIME, "finished_at": _TIME,
    },
}
NEW_JOB = {
    "type": "object", "required": ["prompt"], "additionalProperties": False,
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": jobs.MAX_PROMPT_CHARS,
                   "description": "What the agent should do; not a slash command."},
        "priority": {"type": "integer", "minimum": 0, "maximum": jobs.MAX_PRIORITY, "default": 0,
                     "description": "Higher runs first on the agent."},
        "budget_cents": {"type": "number", "minimum": 0.01, "maximum": jobs.MAX_BUDGET_CENTS,
                         "default": jobs.DEFAULT_BUDGET_CENTS,
                         "description": "Spend cap of the job's model calls, US cents."},
        "depends_on": {"type": "array", "maxItems": jobs.MAX_DEPENDENCIES,
                       "items": {"type": "string"}, "description":
                       "Ids of this tenant's jobs that must be `done` first."},
        "callback_url": {"type": "string", "format": "uri", "maxLength": jobs.MAX_URL_CHARS,
                         "description": "POSTed the job (JSON) when it ends, signed with the "
                                        "token's secret in `Hermes-Signature`."},
    },
    "example": {"prompt": "Summarise yesterday's notes in five bullets.", "priority": 10,
                "budget_cents": 20},
}
_AUTH = {"name": "Authorization", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "`Bearer <token>`: a Jobs API token made on `/dashboard/api`."}
_CALLBACK = ("When a job with a `callback_url` ends, its JSON (the `Job` shape) is POSTed there "
             "with `Hermes-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" "
             "under the token's signing secret>` (Stripe's scheme); a receiver that is down "
             "or answers non-2xx is retried for about 2.5 minutes. Outside local mode only "
             "public hosts are called.")
_REFUSED = {
    "401": error("No token, an unknown or revoked one, or the account is paused or closed.",
                 "bad_api_token"),
    "403": error("The token lacks the route's scope (`jobs:read` or `jobs:write`).",
                 "missing_scope"),
    "429": error("More than 120 requests a minute or 3000 an hour with this token on this route.",
                 "too_many_requests"),
}
_ONE = json_response("The job.", JOB)
_BUS = error("The message bus is unavailable; nothing changed.", ServiceUnavailable.code)

OPERATIONS: dict[tuple[str, str], dict] = {
    ("/api/jobs", "POST"): {
        "summary": "Jobs API: create a job for the account's agent",
        "description": "The job runs as one turn of the agent once every job in `depends_on` "
                       "is `done` (it fails when one fails or is cancelled), in priority order, "
                       "within its budget. Poll it, or give a `callback_url`. " + _CALLBACK,
        "parameters": [_AUTH, {"name": "Idempotency-Key", "in": "header", "required": False,
                               "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                               "description": "A repeat with the same token and key returns "
                                              "the first job (200) and creates nothing."}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": NEW_JOB}}},
        "responses": {
            "201": {**_ONE, "description": "Created.", "headers": {
                "Location": {"required": True, "schema": {"type": "string"}}}},
            "200": {**_ONE, "description": "The job an earlier request with this "
                                           "`Idempotency-Key` created.", "headers": {
                "Location": {"required": True, "schema": {"type": "string"}}}},
            "400": error("Not a JSON object, an unknown field, a bad prompt, priority, budget, "
                         "callback URL or Idempotency-Key, or an unknown dependency; nothing "
                         "is stored.", BadRequest.code, "bad_job", "bad_callback_url",
                         "unknown_dependency", "bad_idempotency_key"),
            "413": error("The body exceeds 128 KiB.", TOO_LARGE),
            "503": _BUS, **_REFUSED,
        },
    },
    ("/api/jobs", "GET"): {
        "summary": "Jobs API: the account's newest jobs (at most 100)",
        "parameters": [_AUTH, {"name": "state", "in": "query", "required": False,
                               "schema": {"enum": list(jobs.STATES)}}],
        "responses": {
            "200": json_response("Newest first.", {
                "type": "object", "required": ["jobs"], "additionalProperties": False,
                "properties": {"jobs": {"type": "array", "items": JOB}}}),
            "400": error("`state` is not a job state.", "bad_state"), **_REFUSED,
        },
    },
    ("/api/jobs/<job_id>", "GET"): {
        "summary": "Jobs API: one job (poll until it has ended)",
        "parameters": [_AUTH],
        "responses": {"200": _ONE, "404": error("No such job of this account.", NotFound.code),
                      **_REFUSED},
    },
    ("/api/jobs/<job_id>", "DELETE"): {
        "summary": "Jobs API: cancel a waiting or queued job",
        "description": "A waiting job never runs; a queued one is stopped on the agent (skipped "
                       "if it has not started). Jobs waiting on it fail.",
        "parameters": [_AUTH],
        "responses": {"200": {**_ONE, "description": "The job, now `cancelled`."},
                      "404": error("No such job of this account.", NotFound.code),
                      "409": error("The job has ended already.", "job_ended"),
                      "503": _BUS, **_REFUSED},
    },
    ("/dashboard/api", "GET"): page("Jobs API: the user's API tokens (create, revoke) and "
                                    "latest jobs"),
    ("/dashboard/api/tokens", "POST"): {
        "summary": "Create a Jobs API token; the page shows it and its signing secret once",
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
            "schema": {"type": "object", "required": ["csrf_token", "name"], "properties": {
                "csrf_token": {"type": "string"}, "name": {"type": "string"},
                "scopes": {"type": "array", "items": {"enum": list(jobs.SCOPES)}}}}}}},
        "responses": {
            "201": {"description": "The page with the new token and secret (HTML).",
                    "content": {"text/html": {"schema": {"type": "string"}}}},
            "302": SIGN_IN,
            "400": error_page("The CSRF token is missing or wrong, or no name, no scope or "
                              "too many tokens: the page with the error; nothing is stored.",
                              BadRequest.code),
        },
    },
    ("/dashboard/api/tokens/<token_id>/revoke", "POST"): {
        "summary": "Revoke one of the user's Jobs API tokens (its requests get 401 from now on)",
        "responses": {
            "200": {"description": "The page (HTML).",
                    "content": {"text/html": {"schema": {"type": "string"}}}},
            "302": SIGN_IN,
            "400": error_page("The CSRF token is missing or wrong; nothing is changed.",
                              BadRequest.code),
            "404": error_page("Not a token of this user.", NOT_FOUND),
        },
    },
}
