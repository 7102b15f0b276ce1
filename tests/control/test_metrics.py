"""Prometheus metrics the alert rules and dashboards in dashboards/ rely on."""

from __future__ import annotations

from support.webhooks import post_telegram

from control.db import database
from control.models import AttentionItem, Machine, Tenant, Usage, utcnow


def test_metrics_expose_requests_machines_failures_cost_and_bus_backlog(client, runtime):
    with database.connection_context():
        ready = Tenant.create(email="r@example.com", plan="light", status="active")
        Machine.create(tenant=ready, plan="light", state="ready", ready_at=utcnow())
        failed = Tenant.create(email="f@example.com", plan="heavy", status="active")
        Machine.create(tenant=failed, plan="heavy", state="failed")
        AttentionItem.create(kind="provisioning_failed", subject=str(failed.id), detail="boom")
        Usage.create(tenant=ready, model="claude-haiku-4-5", input_tokens=10, output_tokens=5,
                     cost_cents=1.25)
    post_telegram(client, {"update_id": 1}, secret="wrong")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hermes_http_requests_total{route="/webhooks/telegram",status="401"} 1.0' in text
    assert "hermes_http_request_duration_seconds_bucket" in text
    assert 'hermes_machines{state="ready"} 1.0' in text
    assert 'hermes_machines{state="failed"} 1.0' in text
    assert "hermes_provisioning_failures_total 1.0" in text
    assert "hermes_llm_cost_cents_total 1.25" in text
    assert f'hermes_bus_pending{{stream="hermes:messages:{ready.id}"}} 0.0' in text
