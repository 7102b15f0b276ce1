"""roles/monitoring applied for real to a temp dir, with scrape targets from an inventory."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import local_inventory  # noqa: F401 - resolved via the fixture below

REPO = Path(__file__).resolve().parents[2]


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
