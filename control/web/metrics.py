"""Prometheus metrics for the control plane at ``GET /metrics``.

Names match the alert rules and dashboards in ``dashboards/``:
``hermes_http_requests_total{route,status}`` and ``hermes_http_request_duration_seconds``.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


def init_app(app: Flask) -> None:
    """Count and time every request on ``app`` and serve ``/metrics`` from its own registry."""
    registry = CollectorRegistry()
    requests_total = Counter("hermes_http_requests_total", "HTTP requests", ["route", "status"],
                             registry=registry)
    duration = Histogram("hermes_http_request_duration_seconds", "HTTP request duration in seconds",
                         ["route"], registry=registry)
    app.extensions["hermes_metrics"] = registry

    @app.before_request
    def _start_timer():
        g.hermes_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        requests_total.labels(route, str(response.status_code)).inc()
        duration.labels(route).observe(time.perf_counter() - g.get("hermes_started", time.perf_counter()))
        return response

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
