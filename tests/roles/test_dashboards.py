"""dashboards/: the alert rules (promtool when installed, else structure) and the Grafana
fleet dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent import metrics as agent_metrics

REPO = Path(__file__).resolve().parents[2]
# Every series name the agent exports, read from its registry (samples, not families).
AGENT_METRICS = {
    name for family in agent_metrics.REGISTRY.collect()
    for name in (f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                 f"{family.name}_sum")
    if name.endswith("_total") == (family.type == "counter")
}
RULES = REPO / "dashboards/alerts/hermes.rules.yml"
DASHBOARD = REPO / "dashboards/grafana/hermes-fleet.json"
# The metrics the control plane exports (plus node_exporter's and Prometheus' own).
HERMES_METRICS = {
    "hermes_http_requests_total", "hermes_http_request_duration_seconds_bucket",
    "hermes_provisioning_failures_total", "hermes_machines", "hermes_bus_pending",
    "hermes_llm_cost_cents_total", "hermes_drift_detected", "hermes_agent_unhealthy_total",
    "hermes_channel_healthy", "hermes_machine_requested_age_seconds", "hermes_llm_backend_up",
    "hermes_llm_tenant_hourly_spend_ratio", "hermes_slo_provisioning_success_ratio",
    "hermes_slo_delivery_success_ratio", "hermes_slo_dead_letter_ratio",
    "hermes_machine_uptime_ratio", "hermes_slo_target",
} | AGENT_METRICS
# prometheus-redis-exporter's (Debian 1.45) series the dashboard reads.
REDIS_METRICS = {"redis_memory_used_bytes", "redis_memory_max_bytes"}
REQUIRED_ALERTS = {
    "HermesProvisioningFailures", "HermesRedisDown", "HermesApiErrorRateHigh",
    "HermesApiLatencyP99High", "HermesNodeDown", "HermesDiskFilling", "HermesDriftDetected",
    "HermesAgentUnhealthy", "HermesChannelDeaf", "HermesMachineStuckRequested",
    "HermesTenantSpendAnomaly", "HermesSloProvisioningSuccessLow", "HermesSloMachineUptimeLow",
    "HermesSloDeliverySuccessLow", "HermesSloDeadLetterRateHigh", "HermesLlmBackendDown",
    # Scaling triggers (README "Capacity", issue 22).
    "HermesWebhookIngressNearCeiling", "HermesDeliveryBacklog", "HermesRedisMemoryHigh",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_required_alert_exists_with_severity_and_runbook():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == REQUIRED_ALERTS
    for name, rule in rules.items():
        assert rule["expr"].strip(), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        runbook = REPO / rule["annotations"]["runbook_url"]
        assert runbook.is_file(), f"{name}: {runbook} missing"


def test_alert_thresholds_match_the_service_objectives():
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert re.search(r"\)\s*>\s*0\.01\s*$", rules["HermesApiErrorRateHigh"].strip())
    assert "histogram_quantile(0.99" in rules["HermesApiLatencyP99High"]
    assert re.search(r">\s*5\s*$", rules["HermesApiLatencyP99High"].strip())


def test_a_slow_control_plane_pages_the_operator():
    """The p99 > 5 s alert is critical, the severity Alertmanager routes to PagerDuty."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "HermesApiLatencyP99High"]
    assert rule["labels"]["severity"] == "critical"


def test_alert_expressions_use_only_exported_metric_names():
    for rule in alert_rules():
        for name in re.findall(r"\bhermes_[a-z_]+", rule["expr"]):
            assert name in HERMES_METRICS, f"{rule['alert']} uses unknown metric {name}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    check = subprocess.run(["promtool", "check", "rules", str(RULES)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "hermes.rules.test.yml"],
                          cwd=RULES.parent, capture_output=True, text=True, check=False)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_fleet_dashboard_has_the_overview_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "hermes-fleet"
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"])
             for panel in dashboard["panels"]}
    wanted = {
        "Webhook rate": "hermes_http_requests_total",
        "API error rate (5xx)": 'status=~"5.."',
        "p99 latency": "histogram_quantile(0.99",
        "Bus lag (pending messages)": "hermes_bus_pending",
        "Machines by state": "by (state) (hermes_machines)",
        "LLM cost (USD per hour)": "hermes_llm_cost_cents_total",
        "Agent messages handled": "hermes_agent_messages_total",
        "Agent turn latency": "hermes_agent_turn_duration_seconds_bucket",
        "Tool-call latency (p95) by tool": "by (le, tool)",
        "LLM tokens and cost by model": "hermes_agent_llm_cost_cents_total",
        "Agent errors": "by (kind) (rate(hermes_agent_errors_total",
        "Redis memory": "redis_memory_used_bytes",
    }
    for title, fragment in wanted.items():
        assert fragment in exprs[title], title
    assert "hermes_agent_llm_tokens_total" in exprs["LLM tokens and cost by model"]
    for expr in exprs.values():
        for name in re.findall(r"\bhermes_[a-z_]+", expr):
            assert name in HERMES_METRICS, name
        for name in re.findall(r"\bredis_[a-z_]+", expr):
            assert name in REDIS_METRICS, name
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_alert_is_fire_tested_by_promtool():
    """Each alert has a case in hermes.rules.test.yml in which it fires."""
    cases = yaml.safe_load((RULES.parent / "hermes.rules.test.yml").read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"]
             if check["exp_alerts"]}
    assert fired == REQUIRED_ALERTS
