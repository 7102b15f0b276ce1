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
import threading
import uuid
from typing import Self

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


class PagerDutyEventsStandin:
    """Events API v2 on loopback; use as a context manager.

    Attributes:
        url: the enqueue URL (``http://127.0.0.1:<port>/v2/enqueue``) once started.
        events: every accepted event body, in order.
        rejected: every refused body with its errors, ``(body, errors)``.
    """

    def __init__(self):
        self.events: list[dict] = []
        self.rejected: list[tuple[dict, list[str]]] = []
        self.url = ""
        self._server: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v2/enqueue":
                    return self._send(404, {"status": "not found"})
                try:
                    event = json.loads(body)
                except ValueError:
                    return self._send(400, {"status": "invalid event", "message": "Invalid JSON"})
                errors = validate(event)
                if errors:
                    owner.rejected.append((event, errors))
                    return self._send(400, {"status": "invalid event",
                                            "message": "Event object is invalid", "errors": errors})
                dedup_key = event.get("dedup_key") or uuid.uuid4().hex
                owner.events.append(event)
                self._send(202, {"status": "success", "message": "Event processed",
                                 "dedup_key": dedup_key})

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="pagerduty-standin",
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/v2/enqueue"
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()
