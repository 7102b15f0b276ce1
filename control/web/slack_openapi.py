"""OpenAPI descriptions of the Slack routes (``control/web/slack.py``, issue 11), merged into
``control.web.openapi.OPERATIONS``; their request and answer schemas join ``SCHEMAS``."""

from __future__ import annotations

from control.errors import BadRequest, ServiceUnavailable, Unauthorized
from control.web.openapi_parts import (
    BODY_NOTE,
    NOT_FOUND,
    TOO_LARGE_RESPONSE,
    codes,
    error,
    error_page,
    header,
    json_response,
)
from control.web.openapi_schemas import SCHEMAS, ref

OPERATIONS: dict[tuple[str, str], dict] = {}

SCHEMAS.update({
    "SlackEvent": {
        "type": "object", "required": ["type"],
        "description": "An Events API request (https://docs.slack.dev/apis/events-api/): "
                       "`url_verification` with a `challenge`, or `event_callback` with an "
                       "`event_id` and an `event` object. Strings must not contain NUL.",
        "properties": {"type": {"type": "string"}, "challenge": {"type": "string"},
                       "event_id": {"type": "string"}, "team_id": {"type": "string"},
                       "event": {"type": "object", "required": ["type"],
                                 "properties": {"type": {"type": "string"}}}},
    },
    "SlackAck": {
        "type": "object", "required": ["ok", "outcome"], "additionalProperties": False,
        "properties": {"ok": {"const": True},
                       "outcome": {"enum": ["published", "answered", "linked", "ignored",
                                            "duplicate"]}},
    },
    "SlackCommandAnswer": {
        "type": "object", "required": ["text"],
        "properties": {"response_type": {"enum": ["ephemeral", "in_channel"]},
                       "text": {"type": "string"}},
    },
})

# Slack (control/web/slack.py, issue 11): bolt behind our checks. Each POST is signed with
# Slack's v0 scheme and refused with 401 before its body is parsed; its shape is checked next.
_SLACK_SIGNATURE = [
    header("X-Slack-Request-Timestamp", "Unix seconds when Slack sent the request; more than "
            "5 minutes away from now is a replay (401).", {"type": "string", "pattern": "^[0-9]+$"}),
    header("X-Slack-Signature", "`v0=<hex HMAC-SHA256 of 'v0:<timestamp>:<body>' with "
            "SLACK_SIGNING_SECRET>` (https://docs.slack.dev/authentication/verifying-requests-from-slack).",
            {"type": "string", "pattern": "^v0=[0-9a-f]{64}$"}),
]
_SLACK_401 = error("The signature is missing, wrong or older than 5 minutes, or "
                    "SLACK_SIGNING_SECRET is not set; nothing is stored.", *codes(Unauthorized))
_SLACK_503 = error("The message bus is unavailable; Slack retries (`X-Slack-Retry-Num`).",
                    *codes(ServiceUnavailable))
_SLACK_FORM = {"required": True, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}


def _slack_post(summary: str, description: str, body: dict, ok: dict) -> dict:
    return {"summary": summary, "description": description + " " + BODY_NOTE,
            "parameters": _SLACK_SIGNATURE, "requestBody": body,
            "responses": {"200": ok, "400": error("Not the shape Slack sends.", *codes(BadRequest)),
                          "401": _SLACK_401, "413": TOO_LARGE_RESPONSE, "503": _SLACK_503}}


_SLACK_REDIRECT_PAGE = {"description": "An HTML page (bolt's): the Add to Slack link, or the "
                                       "installation's success page.",
                        "content": {"text/html": {"schema": {"type": "string"}}}}

OPERATIONS.update({
    ("/webhooks/slack/events", "POST"): _slack_post(
        "Slack Events API: DMs and @mentions for a tenant's agent, the App Home tab",
        "`url_verification` answers its challenge; `message.im` and `app_mention` are routed "
        "once per `event_id` (a retry with `X-Slack-Retry-Num` is a `duplicate`); "
        "`app_home_opened` publishes the Home view. An unlinked person gets an ephemeral "
        "answer and nothing reaches any agent.",
        {"required": True, "content": {"application/json": {"schema": ref("SlackEvent")}}},
        json_response("Acknowledged (within Slack's 3 seconds): the routing outcome, or the "
              "`url_verification` challenge.",
              {"oneOf": [ref("SlackAck"), {"type": "object", "required": ["challenge"],
                                           "properties": {"challenge": {"type": "string"}}}]})),
    ("/webhooks/slack/interactions", "POST"): _slack_post(
        "Slack interactivity: the Ask Hermes shortcut and modal, Home tab buttons",
        "A form with `payload=<JSON>` (https://docs.slack.dev/interactivity/handling-user-interaction).",
        _SLACK_FORM,
        {"description": "Acknowledged: empty, or a modal `response_action` (errors shown in the "
                        "modal, e.g. to an unlinked person).",
         "content": {"application/json": {"schema": {"type": "object"}},
                     "text/plain": {"schema": {"type": "string"}}}}),
    ("/webhooks/slack/commands", "POST"): _slack_post(
        "The /hermes slash command: a question, `link CODE` or `help`",
        "Answered at once with an ephemeral message; a question's reply arrives in the "
        "person's DM with the bot.",
        _SLACK_FORM,
        {"description": "The ephemeral answer (https://docs.slack.dev/interactivity/implementing-slash-commands).",
         "content": {"application/json": {"schema": ref("SlackCommandAnswer")},
                     "text/plain": {"schema": {"type": "string"}}}}),
    ("/slack/install", "GET"): {
        "summary": "Add to Slack: a link to Slack's OAuth page with a single-use state",
        "responses": {"200": _SLACK_REDIRECT_PAGE,
                      "404": error_page("Slack installation is not configured here.", NOT_FOUND),
                      "429": {**error_page("More than 10 visits a minute or 60 an hour from "
                                            "this client (an IPv6 client: its /64).",
                                            "too_many_requests"),
                              "headers": {"Retry-After": {"required": True,
                                                          "schema": {"type": "string"}}}}},
    },
    ("/slack/oauth_redirect", "GET"): {
        "summary": "Slack's OAuth redirect: exchange the code, store the installation "
                   "(bot token encrypted)",
        "parameters": [{"name": "code", "in": "query", "required": False, "schema": {"type": "string"}},
                       {"name": "state", "in": "query", "required": False, "schema": {"type": "string"}}],
        "responses": {"200": _SLACK_REDIRECT_PAGE,
                      "400": error_page("Expired, replayed or foreign state, or Slack refused "
                                         "the code; nothing is stored.", *codes(BadRequest)),
                      "404": error_page("Slack installation is not configured here.", NOT_FOUND),
                      "503": error_page("The installation could not be stored; try again.",
                                         *codes(ServiceUnavailable))},
    },
})
