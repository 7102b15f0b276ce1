"""OpenAPI descriptions of the LLM gateway (``control/web/llm_gateway.py``, issue #19), merged
into ``control.web.openapi.OPERATIONS``."""

from __future__ import annotations

from control.services.llm_gateway import ANTHROPIC_PATH, OPENAI_PATH
from wire.route_reasons import ROUTE_REASON_HEADER, ROUTE_REASONS

_TOKEN = ("The tenant's LLM-gateway token (written into its agent's environment at "
          "provisioning, replaced at every reprovisioning)")
_AUTH = [{"name": "x-api-key", "in": "header", "required": False, "schema": {"type": "string"},
          "description": f"{_TOKEN}, as Anthropic's SDK sends it."},
         {"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"},
          "description": f"`Bearer <token>`: {_TOKEN}, as OpenAI's SDK sends it."},
         {"name": ROUTE_REASON_HEADER, "in": "header", "required": False,
          "schema": {"type": "string", "enum": sorted(ROUTE_REASONS)},
          "description": "Why the agent's router chose this backend (`wire/route_reasons.py`), "
                         "recorded with the call for the backend registry; any other value is 400."}]
_ANTHROPIC_ERROR = {"type": "object", "required": ["type", "error"], "properties": {
    "type": {"const": "error"},
    "error": {"type": "object", "required": ["type", "message"],
              "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}}
_OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "object", "required": ["message", "type"],
              "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                             "param": {}, "code": {}}}}}
_REFUSALS = {
    "400": "The body is not a JSON object (a form for transcriptions) or names no model, or the "
           "route reason is not one of the listed values.",
    "401": "No token, an unknown or replaced one, or the tenant is paused, canceled or deleted; "
           "nothing is forwarded.",
    "403": "The tenant's plan does not include the model (`HERMES_PLAN_MODELS`); nothing is "
           "forwarded.",
    "413": "The body exceeds 32 MB.",
    "429": "The plan's budget for today (UTC) is spent (`HERMES_PLAN_BUDGET_CENTS`); nothing is "
           "forwarded.",
    "502": "The provider cannot be reached.",
    "503": "The operator configured no provider for this API.",
}


def _operation(summary: str, description: str, error: dict, body: dict) -> dict:
    responses: dict = {
        "200": {"description": "The provider's answer, passed through: JSON, or server-sent "
                               "events byte for byte as they arrive for `stream: true`.",
                "content": {"application/json": {"schema": {}},
                            "text/event-stream": {"schema": {"type": "string"}}}},
        "default": {"description": "The provider's own error answer, passed through.",
                    "content": {"application/json": {"schema": {}}}},
    }
    for status, text in _REFUSALS.items():
        responses[status] = {"description": text, "content": {"application/json": {"schema": error}}}
    return {"summary": summary, "description": description, "parameters": _AUTH,
            "requestBody": {"required": True, "content": body}, "responses": responses}


_JSON = {"application/json": {"schema": {"type": "object"}}}
_FORM = {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "model"],
    "properties": {"file": {"type": "string", "format": "binary"}, "model": {"type": "string"}}}}}

OPERATIONS: dict[tuple[str, str], dict] = {
    (ANTHROPIC_PATH + "/v1/messages", "POST"): _operation(
        "LLM gateway: Anthropic Messages",
        "Anthropic's Messages API for tenant agents, with the operator's key added here; the "
        "plan's models and daily budget are enforced and the usage metered. Errors in "
        "Anthropic's format.", _ANTHROPIC_ERROR, _JSON),
    (OPENAI_PATH + "/chat/completions", "POST"): _operation(
        "LLM gateway: OpenAI chat completions",
        "The operator's OpenAI-compatible chat completions for tenant agents, with its key "
        "added here; the plan's models and daily budget are enforced and the usage metered. "
        "Errors in OpenAI's format.", _OPENAI_ERROR, _JSON),
    (OPENAI_PATH + "/audio/transcriptions", "POST"): _operation(
        "LLM gateway: audio transcription",
        "The operator's OpenAI-compatible `/audio/transcriptions` (Whisper API) for tenant "
        "agents' voice notes, with its key added here; the plan's models and daily budget are "
        "enforced. Errors in OpenAI's format.", _OPENAI_ERROR, _FORM),
}
