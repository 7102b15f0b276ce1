"""OpenAPI description of the warm pool's config endpoint (``control/web/pool.py``, issue 22),
merged into ``control.web.openapi.OPERATIONS``."""

from __future__ import annotations

from control.errors import NotFound, Unauthorized
from control.web.openapi_parts import error, header, json_response
from control.web.pool import PATH

_AUTH = header("Authorization", "`Bearer <pool token>`: the one-time token in the pool "
               "server's boot config.", {"type": "string"})

OPERATIONS: dict[tuple[str, str], dict] = {
    (PATH, "GET"): {
        "summary": "Warm pool: a pre-booted server fetches its tenant's config",
        "description": "Polled by `agent.pool_boot` until the server is claimed; the config "
                       "is answered exactly once, then erased.",
        "parameters": [_AUTH],
        "responses": {
            "200": json_response("The agent's environment and files (secret).", {
                "type": "object", "required": ["env", "files"],
                "properties": {"env": {"type": "object", "additionalProperties": {"type": "string"}},
                               "files": {"type": "object",
                                         "additionalProperties": {"type": "string"}}}}),
            "204": {"description": "Not claimed yet: poll again."},
            "401": error("No bearer token, or one no pool server holds.", Unauthorized.code),
            "404": error("The config was fetched already, or the server is retiring.",
                         NotFound.code),
        },
    },
}
