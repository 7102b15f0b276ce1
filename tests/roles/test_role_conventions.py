"""House rules for roles/ (geerlingguy conventions), syntax check of every playbook and a
check-mode run of every role."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = ["redis", "monitoring", "control", "node_exporter", "firewall"]
# Names that look like role variables but are not (a metric the verify step looks for).
NOT_VARIABLES = {"node_exporter_build_info"}
SHARED_GROUPS = {
    "role_redis": {"redis-1": {"hcloud_private_ipv4": "10.0.0.2"}},
    "role_control": {"control-1": {"hcloud_private_ipv4": "10.0.0.3"}},
    "role_monitoring": {"monitoring-1": {"hcloud_private_ipv4": "10.0.0.4"}},
}


def role_files(role: str, *parts: str) -> list[Path]:
    base = REPO / "roles" / role
    return [path for part in parts for path in sorted((base / part).glob("*")) if path.is_file()]


def defined_names(role: str) -> set[str]:
    """Variables a role defines: defaults, vars/*, registered results and set_fact keys."""
    names: set[str] = set()
    for path in role_files(role, "defaults", "vars"):
        names |= set(yaml.safe_load(path.read_text()) or {})
    for path in role_files(role, "tasks"):
        for task in yaml.safe_load(path.read_text()) or []:
            if "register" in task:
                names.add(task["register"])
            names |= set(task.get("ansible.builtin.set_fact", {}) or {})
    return names


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_prefixed_with_the_role_name(role):
    defaults = yaml.safe_load((REPO / f"roles/{role}/defaults/main.yml").read_text())
    assert defaults, f"{role} documents no variables"
    assert [name for name in defaults if not name.startswith(f"{role}_")] == []


@pytest.mark.parametrize("role", ROLES)
def test_every_role_variable_used_is_defined(role):
    used: set[str] = set()
    for path in role_files(role, "tasks", "templates", "handlers", "defaults", "vars"):
        used |= set(re.findall(rf"\b_*{role}_[a-z0-9_]+", path.read_text()))
    undefined = sorted(used - defined_names(role) - NOT_VARIABLES)
    assert undefined == []


@pytest.mark.parametrize("role", ROLES)
def test_handlers_say_what_they_do_and_every_notify_has_one(role):
    handlers = yaml.safe_load((REPO / f"roles/{role}/handlers/main.yml").read_text())
    names = {handler["name"] for handler in handlers}
    assert all(re.match(r"(Restart|Reload) ", name) for name in names), names
    notified = {
        task["notify"]
        for path in role_files(role, "tasks")
        for task in yaml.safe_load(path.read_text()) or []
        if "notify" in task
    }
    assert notified <= names


@pytest.mark.parametrize("role", ROLES)
def test_converge_ends_with_the_roles_verify_step(role):
    main = yaml.safe_load((REPO / f"roles/{role}/tasks/main.yml").read_text())
    assert main[-1]["ansible.builtin.include_tasks"] == "verify.yml"
    assert (REPO / f"roles/{role}/tasks/verify.yml").is_file()


def test_site_playbook_imports_every_playbook_and_passes_syntax_check(
    run_playbook, make_inventory
):
    site = yaml.safe_load((REPO / "playbooks/site.yml").read_text())
    imported = {play["ansible.builtin.import_playbook"] for play in site}
    others = {p.name for p in (REPO / "playbooks").glob("*.yml")} - {"site.yml"}
    assert imported == others == {"redis.yml", "monitoring.yml", "control.yml",
                                  "node_exporter.yml", "firewall.yml"}
    result = run_playbook(REPO / "playbooks/site.yml", inventory=make_inventory(SHARED_GROUPS),
                          cmdline="--syntax-check")
    assert result.rc == 0, result.stdout


CHECK_VARS = {
    "redis": lambda root, url: {
        "redis_manage_packages": False, "redis_manage_service": False,
        "redis_conf_path": f"{root}/redis.conf", "redis_acl_file": f"{root}/users.acl",
        "redis_data_dir": f"{root}/data", "redis_acl_admin_password": "pw"},
    "monitoring": lambda root, url: {
        "monitoring_manage_packages": False, "monitoring_manage_service": False,
        "monitoring_verify_promtool": False,
        "monitoring_prometheus_config_dir": f"{root}/p", "monitoring_prometheus_rules_dir": f"{root}/r",
        "monitoring_alertmanager_config_dir": f"{root}/a",
        "monitoring_grafana_provisioning_dir": f"{root}/g",
        "monitoring_grafana_dashboards_dir": f"{root}/d",
        "monitoring_grafana_env_file": f"{root}/g/hermes.env",
        "monitoring_grafana_unit_dropin_dir": f"{root}/g/grafana-server.service.d"},
    "control": lambda root, url: {
        "control_manage_packages": False, "control_manage_service": False,
        "control_config_dir": f"{root}/etc", "control_data_dir": f"{root}/data",
        "control_unit_dir": f"{root}/units",
        "control_nginx_site_path": f"{root}/avail/site.conf",
        "control_nginx_enabled_path": f"{root}/enabled/site.conf"},
    "node_exporter": lambda root, url: {
        "node_exporter_manage_service": False, "node_exporter_create_user": False,
        "node_exporter_verify": False,
        "node_exporter_download_url": url,
        "node_exporter_bin_dir": f"{root}/bin", "node_exporter_cache_dir": f"{root}/cache",
        "node_exporter_unit_dir": f"{root}/units"},
    "firewall": lambda root, url: {
        "firewall_manage_packages": False, "firewall_manage_service": False,
        "firewall_validate": False, "firewall_ruleset_path": f"{root}/nftables.conf",
        "firewall_ops_cidrs": ["198.51.100.0/28"]},
}


@pytest.mark.parametrize("role", ROLES)
def test_check_mode_runs_and_writes_nothing(
    role, tmp_path, apply_role, make_inventory, release_server
):
    root = tmp_path / "target"
    downloads, base_url = release_server
    (downloads / "check-mode.tar.gz").write_bytes(b"")
    variables = CHECK_VARS[role](root, f"{base_url}/check-mode.tar.gz")
    result = apply_role(role, variables, check=True,
                        inventory=make_inventory(SHARED_GROUPS))
    assert result.status == "successful", result.stdout
    assert result.changed() > 0, "check mode should report the changes a converge would make"
    assert not root.exists()
