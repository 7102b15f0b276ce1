"""roles/monitoring applied for real to a temp dir, with scrape targets from an inventory."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

SHARED_HOSTS = {
    "role_redis": {"redis-1": {"hcloud_private_ipv4": "10.0.0.2"}},
    "role_control": {"control-1": {"hcloud_private_ipv4": "10.0.0.3"}},
    "role_monitoring": {"monitoring-1": {"hcloud_private_ipv4": "10.0.0.4"}},
}


def monitoring_vars(root: Path, **overrides) -> dict:
    return {
        "monitoring_manage_packages": False,
        "monitoring_manage_service": False,
        "monitoring_verify_promtool": shutil.which("promtool") is not None,
        "monitoring_env": "staging",
        "monitoring_prometheus_config_dir": str(root / "prometheus"),
        "monitoring_prometheus_rules_dir": str(root / "prometheus/rules"),
        "monitoring_alertmanager_config_dir": str(root / "alertmanager"),
        "monitoring_grafana_provisioning_dir": str(root / "grafana/provisioning"),
        "monitoring_grafana_dashboards_dir": str(root / "grafana/dashboards"),
        "monitoring_hcloud_token": "read-only-token",
        "monitoring_alertmanager_webhook_url": "https://ops.example.com/alerts",
        **overrides,
    }


@pytest.fixture(scope="module")
def monitoring_root(tmp_path_factory, apply_role, make_inventory):
    """One converge of the role against the shared-host inventory, shared by the tests."""
    root = tmp_path_factory.mktemp("monitoring")
    result = apply_role("monitoring", monitoring_vars(root), inventory=make_inventory(SHARED_HOSTS))
    assert result.status == "successful", result.stdout
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


def test_alertmanager_routes_to_the_operator_webhook(monitoring_root):
    config = yaml.safe_load((monitoring_root / "alertmanager/alertmanager.yml").read_text())
    assert config["route"]["receiver"] == "operators"
    (receiver,) = config["receivers"]
    assert receiver["webhook_configs"][0]["url"] == "https://ops.example.com/alerts"


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


def test_second_apply_changes_nothing(monitoring_root, apply_role, make_inventory):
    again = apply_role("monitoring", monitoring_vars(monitoring_root),
                       inventory=make_inventory(SHARED_HOSTS))
    assert again.status == "successful", again.stdout
    assert again.changed() == 0, again.stdout
