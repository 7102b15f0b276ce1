"""roles/monitoring applied for real to a temp dir, with scrape targets from an inventory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from support.serve import free_port, wait_until

from standins.pagerduty_events import PagerDutyEventsStandin

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
ROUTING_KEY = "R0UTINGKEY0123456789abcdefABCDEF"  # 32 characters, like a PagerDuty integration key
EXPORTER_PASSWORD = "exporter-Password-from-vault"
GRAFANA_PASSWORD = "grafana-Admin-from-vault"

SHARED_HOSTS = {
    "role_redis": {"redis-1": {"hcloud_private_ipv4": "10.0.0.2"}},
    "role_control": {"control-1": {"hcloud_private_ipv4": "10.0.0.3"}},
    "role_monitoring": {"monitoring-1": {"hcloud_private_ipv4": "10.0.0.4"}},
}


def monitoring_vars(root: Path, **overrides) -> dict:
    return {
        "monitoring_redis_exporter_env_file": str(root / "prometheus/redis-exporter.env"),
        "monitoring_redis_exporter_ca_file": str(root / "prometheus/redis-ca.pem"),
        "monitoring_redis_ca_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "monitoring_redis_exporter_password": EXPORTER_PASSWORD,
        "monitoring_pagerduty_routing_key": ROUTING_KEY,
        "monitoring_alertmanager_group_wait": "1s",
        "monitoring_runbook_base_url": "https://git.example.com/hermes/blob/main",
        "monitoring_manage_packages": False,
        "monitoring_manage_service": False,
        "monitoring_verify_promtool": shutil.which("promtool") is not None,
        "monitoring_env": "staging",
        "monitoring_prometheus_config_dir": str(root / "prometheus"),
        "monitoring_prometheus_rules_dir": str(root / "prometheus/rules"),
        "monitoring_alertmanager_config_dir": str(root / "alertmanager"),
        "monitoring_grafana_provisioning_dir": str(root / "grafana/provisioning"),
        "monitoring_grafana_dashboards_dir": str(root / "grafana/dashboards"),
        "monitoring_grafana_env_file": str(root / "grafana/hermes.env"),
        "monitoring_grafana_unit_dropin_dir": str(root / "grafana/grafana-server.service.d"),
        "monitoring_grafana_admin_password": GRAFANA_PASSWORD,
        "monitoring_hcloud_token": "read-only-token",
        **overrides,
    }


class WebhookReceiver:
    """The operators' receiver: records Alertmanager webhook bodies (``POST``, JSON)."""

    def __enter__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        return self

    def __exit__(self, *_exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receivers():
    """PagerDuty's Events API v2 stand-in and the operators' webhook, for the whole module."""
    with PagerDutyEventsStandin() as pagerduty, WebhookReceiver() as webhook:
        yield pagerduty, webhook


@pytest.fixture(scope="module")
def monitoring_root(tmp_path_factory, apply_role, make_inventory, receivers):
    """One converge of the role against the shared-host inventory, shared by the tests."""
    pagerduty, webhook = receivers
    root = tmp_path_factory.mktemp("monitoring")
    result = apply_role("monitoring", monitoring_vars(
        root, monitoring_pagerduty_url=pagerduty.url, monitoring_alertmanager_webhook_url=webhook.url),
        inventory=make_inventory(SHARED_HOSTS))
    assert result.status == "successful", result.stdout
    assert ROUTING_KEY not in result.stdout and EXPORTER_PASSWORD not in result.stdout
    assert GRAFANA_PASSWORD not in result.stdout
    return root


def scrape_job(config: dict, name: str) -> dict:
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == name]
    return job


def static_targets(job: dict) -> set[str]:
    return {target for group in job["static_configs"] for target in group["targets"]}


def test_prometheus_scrapes_the_inventory_and_loads_the_alert_rules(monitoring_root):
    tmp_path = monitoring_root

    config = yaml.safe_load((tmp_path / "prometheus/prometheus.yml").read_text())
    assert static_targets(scrape_job(config, "node")) == {
        "10.0.0.2:9100", "10.0.0.3:9100", "10.0.0.4:9100"}
    assert static_targets(scrape_job(config, "control")) == {"10.0.0.3:443"}
    tenants = scrape_job(config, "tenant_node")
    assert tenants["hetzner_sd_configs"][0]["role"] == "hcloud"
    keep = {tuple(rule["source_labels"]): rule["regex"]
            for rule in tenants["relabel_configs"] if rule.get("action") == "keep"}
    assert keep[("__meta_hetzner_hcloud_label_env",)] == "staging"
    agents = scrape_job(config, "tenant_agent")
    assert agents["hetzner_sd_configs"][0]["role"] == "hcloud"
    (address,) = [rule for rule in agents["relabel_configs"]
                  if rule.get("target_label") == "__address__"]
    assert address["source_labels"] == ["__meta_hetzner_hcloud_private_ipv4_hermes_staging"]
    assert address["replacement"] == "${1}:9464"
    assert {rule.get("target_label") for rule in agents["relabel_configs"]} >= {"tenant", "host"}
    assert static_targets(scrape_job(config, "redis")) == {"127.0.0.1:9121"}
    assert config["global"]["external_labels"] == {"env": "staging"}
    assert config["rule_files"] == [f"{tmp_path}/prometheus/rules/*.yml"]

    rules = tmp_path / "prometheus/rules/hermes.rules.yml"
    assert rules.read_text() == Path("dashboards/alerts/hermes.rules.yml").read_text()
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "config",
                                str(tmp_path / "prometheus/prometheus.yml")],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        count = sum(len(group["rules"]) for group in yaml.safe_load(rules.read_text())["groups"])
        assert f"SUCCESS: {count} rules found" in check.stdout


def test_redis_exporter_reads_redis_over_tls_as_the_read_only_acl_user(monitoring_root):
    env_file = monitoring_root / "prometheus/redis-exporter.env"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert values["REDIS_ADDR"] == '"rediss://10.0.0.2:6380"'
    assert values["REDIS_USER"] == '"hermes-exporter"'
    assert values["REDIS_PASSWORD"] == f'"{EXPORTER_PASSWORD}"'
    assert values["ARGS"] == (f'"-web.listen-address=127.0.0.1:9121 -tls-ca-cert-file='
                              f'{monitoring_root}/prometheus/redis-ca.pem"')
    assert EXPORTER_PASSWORD not in values["ARGS"]  # never on a command line (ps)
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"


def test_alertmanager_pages_critical_alerts_and_sends_the_rest_to_the_webhook(monitoring_root):
    config = yaml.safe_load((monitoring_root / "alertmanager/alertmanager.yml").read_text())
    assert config["route"]["receiver"] == "operators"
    page = config["route"]["routes"][0]
    assert page["matchers"] == ['severity="critical"'] and page["receiver"] == "pagerduty"
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    (pagerduty,) = receivers["pagerduty"]["pagerduty_configs"]
    assert pagerduty["routing_key"] == ROUTING_KEY
    assert receivers["operators"]["webhook_configs"][0]["url"].endswith("/alerts")
    if shutil.which("amtool"):
        check = subprocess.run(["amtool", "check-config",
                                str(monitoring_root / "alertmanager/alertmanager.yml")],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager not installed")
def test_real_alertmanager_pages_pagerduty_with_the_routing_key(monitoring_root, receivers,
                                                               tmp_path):
    pagerduty, webhook = receivers
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 - closed in finally
    alertmanager = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={monitoring_root}/alertmanager/alertmanager.yml",
         f"--storage.path={tmp_path}/data", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        wait_until(lambda: _ready(base), 30, "alertmanager to be ready")
        alerts = [
            {"labels": {"alertname": "HermesRedisDown", "severity": "critical",
                        "instance": "10.0.0.2:9100"},
             "annotations": {"summary": "Redis (the message bus) is down on 10.0.0.2:9100",
                             "runbook_url": "runbooks/redis-down.md"}},
            {"labels": {"alertname": "HermesDriftDetected", "severity": "warning"},
             "annotations": {"summary": "Infrastructure drift detected",
                             "runbook_url": "runbooks/drift-found.md"}},
        ]
        assert httpx.post(f"{base}/api/v2/alerts", json=alerts).status_code == 200

        (event,) = wait_until(lambda: pagerduty.events, 30, "the PagerDuty trigger")
        assert event["routing_key"] == ROUTING_KEY
        assert event["event_action"] == "trigger"
        assert event["payload"]["severity"] == "critical"
        assert "HermesRedisDown" in event["payload"]["summary"]
        assert event["links"][0]["href"] == (
            "https://git.example.com/hermes/blob/main/runbooks/redis-down.md")
        assert pagerduty.rejected == []
        (notice,) = wait_until(lambda: webhook.received, 30, "the operators' webhook")
        assert [a["labels"]["alertname"] for a in notice["alerts"]] == ["HermesDriftDetected"]
        assert len(pagerduty.events) == 1  # the drift warning went to the webhook only
    finally:
        alertmanager.terminate()
        alertmanager.wait(10)
        log.close()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_grafana_provisions_the_datasource_the_dashboard_points_at(monitoring_root):
    provisioning = monitoring_root / "grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources/hermes.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards/hermes.yml").read_text())
    dashboards_dir = Path(providers["providers"][0]["options"]["path"])
    dashboard = json.loads((dashboards_dir / "hermes-fleet.json").read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {datasource["uid"]}


def test_grafana_listens_on_loopback_with_the_vault_admin_password(monitoring_root):
    # Issue #19: the package default is 0.0.0.0:3000 with admin/admin, next to every tenant VM.
    env_file = monitoring_root / "grafana/hermes.env"
    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                    if line and not line.startswith("#"))
    assert settings["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert json.loads(settings["GF_SECURITY_ADMIN_PASSWORD"]) == GRAFANA_PASSWORD
    assert settings["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    dropin = (monitoring_root / "grafana/grafana-server.service.d/hermes.conf").read_text()
    assert f"EnvironmentFile={env_file}" in dropin.splitlines()


def test_second_apply_changes_nothing(monitoring_root, apply_role, make_inventory, receivers):
    pagerduty, webhook = receivers
    again = apply_role("monitoring", monitoring_vars(
        monitoring_root, monitoring_pagerduty_url=pagerduty.url,
        monitoring_alertmanager_webhook_url=webhook.url), inventory=make_inventory(SHARED_HOSTS))
    assert again.status == "successful", again.stdout
    assert again.changed() == 0, again.stdout
