"""Prometheus metrics for the control plane at ``GET /metrics``.

Names match the alert rules and dashboards in ``dashboards/``:
``hermes_http_requests_total{route,status}`` and ``hermes_http_request_duration_seconds`` are
counted per request; ``hermes_machines{state}``, ``hermes_provisioning_failures_total``,
``hermes_agent_unhealthy_total`` (times a ready agent stopped beating; the current count is
``hermes_machines{state="unhealthy"}``), ``hermes_machine_requested_age_seconds`` (how long the
oldest paid machine has waited in ``requested``: ``provisioning.requested_age``), ``hermes_llm_cost_cents_total`` and
``hermes_warm_pool_servers{plan,state}`` (issue 22),
``hermes_bus_pending{stream}``, ``hermes_bus_dead_letters{stream}`` (entries of a tenant's
``hermes:events:{tenant}:dead``: events the delivery worker refused or could not deliver,
``control.services.delivery``) and ``hermes_channel_healthy{channel}``
(``control.services.channel_watchdog``) and ``hermes_llm_tenant_hourly_spend_ratio{plan,bucket}``
(``control.services.spend_anomaly``), the SLO gauges (``control.services.slo``) and
``hermes_bus_quota_suspensions``,
``hermes_bus_quota_suspended`` (``control.services.bus_quota``), and ``hermes_llm_backend_up{api}``,
``hermes_llm_backend_error_rate{api,model}``, ``hermes_llm_backend_latency_ms{api,model,quantile}``
(``control.services.llm_registry``, issue 23) are read from the database
and the bus at scrape time (``FleetCollector``), so every gunicorn worker reports the same
values.  ``hermes_drift_detected`` is written by ``hermes drift --textfile``.

Under gunicorn each worker is a process of its own: with ``PROMETHEUS_MULTIPROC_DIR`` set
(``Settings.metrics_multiproc_dir``) the request counters live in that directory's files and
``/metrics`` sums every worker's, live or dead, with ``MultiProcessCollector`` (prometheus_client
docs, "Multiprocess Mode"); ``control.gunicorn_conf`` marks exited workers dead.  There are no
``Gauge`` objects here (the fleet gauges are read at scrape time), so no ``multiprocess_mode``
is needed.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from peewee import fn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from control.models import AttentionItem, Machine, MachineState, Usage
from control.services import warm_pool
from control.services.bus_quota import BusQuotaCollector
from control.services.channel_watchdog import ChannelHealthCollector
from control.services.llm_registry import RegistryCollector
from control.services.provisioning import requested_age
from control.services.slo import SloCollector
from control.services.spend_anomaly import SpendCollector
from wire.protocol import AGENT_GROUP, DELIVERY_GROUP, events_stream, messages_stream


class FleetCollector:
    """Prometheus collector reading fleet state at scrape time.

    Args:
        runtime: the ``control.runtime.Runtime`` (database and bus).
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        """Yield machine, failure, cost and bus-backlog metrics."""
        with self.runtime.db.connection_context():
            machines = GaugeMetricFamily("hermes_machines", "Machines by state", labels=["state"])
            for state, count in (Machine.select(Machine.state, fn.COUNT(Machine.id))
                                 .group_by(Machine.state).tuples().iterator()):
                machines.add_metric([state], count)
            yield machines
            pool = GaugeMetricFamily("hermes_warm_pool_servers",
                                     "Warm-pool servers by plan and state (issue 22)",
                                     labels=["plan", "state"])
            for (plan, state), count in sorted(warm_pool.counts().items()):
                pool.add_metric([plan, state], count)
            yield pool
            yield GaugeMetricFamily("hermes_machine_requested_age_seconds",
                                    "Seconds the oldest machine has waited in state requested (0: none)",
                                    value=requested_age())
            failures = AttentionItem.select().where(AttentionItem.kind == "provisioning_failed").count()
            yield CounterMetricFamily("hermes_provisioning_failures", "Failed provisioning attempts",
                                      value=failures)
            unhealthy = AttentionItem.select().where(AttentionItem.kind == "agent_unhealthy").count()
            yield CounterMetricFamily("hermes_agent_unhealthy", "Times a ready agent missed its heartbeats",
                                      value=unhealthy)
            cost = Usage.select(fn.COALESCE(fn.SUM(Usage.cost_cents), 0)).scalar()
            yield CounterMetricFamily("hermes_llm_cost_cents", "LLM cost in cents", value=float(cost))
            tenants = [m.tenant_id for m in Machine.select(Machine.tenant).where(
                Machine.state.in_([MachineState.READY, MachineState.UNHEALTHY]))]
        pending = GaugeMetricFamily("hermes_bus_pending", "Unacknowledged bus entries", labels=["stream"])
        dead = GaugeMetricFamily("hermes_bus_dead_letters",
                                 "Events dead-lettered by the delivery worker (refused or failed)",
                                 labels=["stream"])
        for tenant in tenants:
            for stream, group in ((messages_stream(str(tenant)), AGENT_GROUP),
                                  (events_stream(str(tenant)), DELIVERY_GROUP)):
                pending.add_metric([stream], self.runtime.bus.pending_count(stream, group))
            events = events_stream(str(tenant))
            dead.add_metric([events], self.runtime.bus.length(f"{events}:dead"))
        yield pending
        yield dead


def init_app(app: Flask, runtime) -> None:
    """Count and time every request on ``app`` and serve ``/metrics`` from its own registry.

    In multiprocess mode (``runtime.settings.metrics_multiproc_dir``) the request metrics are
    registered nowhere: the scrape reads them back from the directory, every worker's summed.
    """
    registry = CollectorRegistry()
    registry.register(FleetCollector(runtime))
    registry.register(ChannelHealthCollector(runtime))
    registry.register(SpendCollector(runtime))
    registry.register(BusQuotaCollector(runtime))
    registry.register(SloCollector(runtime))
    registry.register(RegistryCollector(runtime))
    multiproc_dir = runtime.settings.metrics_multiproc_dir
    if multiproc_dir:
        MultiProcessCollector(registry, path=multiproc_dir)
    own = None if multiproc_dir else registry
    requests_total = Counter("hermes_http_requests_total", "HTTP requests", ["route", "status"],
                             registry=own)
    duration = Histogram("hermes_http_request_duration_seconds", "HTTP request duration in seconds",
                         ["route"], registry=own)
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
