"""A stand-in for PagerDuty's Events API v2 (``POST /v2/enqueue``).

Wire format from PagerDuty's developer docs, "Events API v2 Overview" and "Send an Alert Event":
a JSON body with ``routing_key`` (the integration key, 32 characters), ``event_action``
(``trigger``, ``acknowledge`` or ``resolve``), ``dedup_key`` (required except for a trigger,
where PagerDuty makes one up) and, for a trigger, ``payload`` with ``summary``, ``source`` and
``severity`` (``critical``, ``error``, ``warning`` or ``info``).  A valid event is answered
``202 {"status": "success", "message": "Event processed", "dedup_key": ...}``; an invalid one
``400 {"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``.
"""

from __future__ import annotations

import http.server
import json
import uuid

from standins.scripted_server import ScriptedServer, send_json

SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}


def validate(event: dict) -> list[str]:
    """Return PagerDuty's reasons for refusing ``event`` (empty when it is accepted)."""
    errors = []
    if len(str(event.get("routing_key", ""))) != 32:
        errors.append("'routing_key' must be 32 characters")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid")
    if action == "trigger":
        payload = event.get("payload") or {}
        for field in ("summary", "source"):
            if not payload.get(field):
                errors.append(f"'payload.{field}' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append("'payload.severity' is invalid")
    elif action in ACTIONS and not event.get("dedup_key"):
        errors.append("'dedup_key' is missing or blank")
    return errors


class PagerDutyEventsStandin(ScriptedServer):
    """Events API v2 on loopback; use as a context manager.

    Attributes:
        url: the enqueue URL (``http://127.0.0.1:<port>/v2/enqueue``) once started.
        events: every accepted event body, in order.
        rejected: every refused body with its errors, ``(body, errors)``.
    """

    thread_name = "pagerduty-standin"
    base_path = "/v2/enqueue"

    def __init__(self):
        super().__init__(responder=lambda body: None)
        self.events: list[dict] = []
        self.rejected: list[tuple[dict, list[str]]] = []

    @property
    def url(self) -> str:
        """The enqueue URL Alertmanager's ``pagerduty_configs.url`` points at."""
        return self.base_url


class _EnqueueHandler(http.server.BaseHTTPRequestHandler):
    owner: PagerDutyEventsStandin

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != PagerDutyEventsStandin.base_path:
            return send_json(self, 404, {"status": "not found"})
        try:
            event = json.loads(body)
        except ValueError:
            return send_json(self, 400, {"status": "invalid event", "message": "Invalid JSON"})
        errors = validate(event)
        if errors:
            self.owner.rejected.append((event, errors))
            return send_json(self, 400, {"status": "invalid event",
                                         "message": "Event object is invalid", "errors": errors})
        self.owner.events.append(event)
        return send_json(self, 202, {"status": "success", "message": "Event processed",
                              "dedup_key": event.get("dedup_key") or uuid.uuid4().hex})

    def log_message(self, *_args):
        return


PagerDutyEventsStandin.handler_class = _EnqueueHandler
