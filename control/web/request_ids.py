"""A request id for every HTTP request: bound to its log lines and echoed in ``X-Request-ID``.

An incoming ``X-Request-ID`` (set by nginx, a load balancer or a caller tracing its own
request) is kept when it is well-formed, so one id follows the request through every hop;
anything else gets a fresh id.  The id is bound with ``wire.logs`` for the request's duration,
so every line logged while handling it carries ``request_id``, and routing copies it into the
envelope it publishes (``Envelope.request_id``) for the agent to log with its turn.

One ``request`` line per request (method, path, status, duration) is the control plane's own
access log in the configured format.
"""

from __future__ import annotations

import re
import time

import structlog
from flask import Flask, g, request

from control.web.log_masking import mask_path
from wire import logs
from wire.protocol import new_id

log = structlog.get_logger(__name__)

HEADER = "X-Request-ID"
# Well-formed: 1-128 characters a log line and a response header can carry unescaped (UUIDs,
# hex ids, nginx's $request_id, AWS's Root=... ids); no spaces, quotes or line breaks, which
# could forge a log line or split a header.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")


def request_id_from(header: str | None) -> str:
    """Return ``header`` when it is a well-formed request id, else a fresh one (32 hex chars)."""
    if header and _WELL_FORMED.fullmatch(header):
        return header
    return new_id()


def init_app(app: Flask) -> None:
    """Give every request of ``app`` a request id (log context, ``X-Request-ID`` answer header)."""

    @app.before_request
    def _bind_request_id():
        logs.clear()  # server threads are reused: start each request from nothing
        g.request_id = request_id_from(request.headers.get(HEADER))
        g.request_started = time.perf_counter()
        logs.bind(request_id=g.request_id)

    @app.after_request
    def _echo_request_id(response):
        request_id = g.get("request_id")
        if request_id is not None:
            response.headers[HEADER] = request_id
            log.info("request", method=request.method, path=mask_path(request.path),
                     status=response.status_code,
                     duration_ms=round((time.perf_counter() - g.request_started) * 1000, 1))
        return response

    @app.teardown_request
    def _unbind_request_id(_exc):
        logs.clear()
