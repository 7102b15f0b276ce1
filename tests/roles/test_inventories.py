"""inventories/<env>/hcloud.yml read through the real hetzner.hcloud inventory plugin, with
the project's Hetzner API stand-in on loopback: shared hosts of that env only, grouped by
their role and env labels, with the private address Prometheus and Redis bind to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from standins.hcloud_api import HcloudStandin

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
NETWORKS = {7: "hermes-staging", 8: "hermes-prod"}


def _network(nid: int) -> dict:
    return {"id": nid, "name": NETWORKS[nid], "ip_range": "10.0.0.0/16", "subnets": [],
            "routes": [], "servers": [], "load_balancers": [], "protection": {"delete": False},
            "labels": {}, "created": "2026-01-05T10:00:00+00:00",
            "expose_routes_to_vswitch": False}


class InventoryStandin(HcloudStandin):
    """The hcloud stand-in plus the two read-only endpoints the inventory plugin also calls
    (``GET /v1/locations`` as a connection check, ``GET /v1/networks`` for ``network:``)."""

    def list_locations(self, query, body):
        location = {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1",
                    "country": "DE", "city": "Falkenstein", "latitude": 50.47612,
                    "longitude": 12.370071, "network_zone": "eu-central"}
        return self._page("locations", [location], query)

    def list_networks(self, query, body):
        networks = [_network(nid) for nid in NETWORKS]
        return self._page("networks", [n for n in networks
                                       if query.get("name", n["name"]) == n["name"]], query)

    def get_network(self, nid, query, body):
        return 200, {"network": _network(nid)}

    _ROUTES: ClassVar[dict] = {
        **HcloudStandin._ROUTES,
        ("GET", r"/v1/locations"): list_locations,
        ("GET", r"/v1/networks"): list_networks,
        ("GET", r"/v1/networks/(\d+)"): get_network,
    }


def plain(value):
    """Undo ansible-inventory's ``{"__ansible_unsafe": ...}`` wrapping."""
    return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value


@pytest.fixture(scope="module")
def hcloud_api():
    with InventoryStandin() as api:
        for env, network in (("staging", 7), ("prod", 8)):
            for role in ("redis", "control", "monitoring"):
                api.add_server(f"{env}-{role}-1", {"app": "hermes", "env": env, "role": role},
                               networks=(network,))
            api.add_server(f"{env}-tenant-1", {"app": "hermes", "env": env, "tenant": "t1",
                                                "plan": "light"}, networks=(network,))
        api.add_server("someone-elses-box", {"env": "staging", "role": "redis"}, networks=(7,))
        api.add_server("staging-redis-off", {"app": "hermes", "env": "staging", "role": "redis"},
                       status="off", networks=(7,))
        yield api


def read_inventory(env: str, api: HcloudStandin) -> dict:
    result = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", f"inventories/{env}", "--list"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HCLOUD_TOKEN": api.token, "HCLOUD_ENDPOINT": api.url,
             "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
             "PATH": f"{ANSIBLE_INVENTORY.parent}:{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_inventory_holds_the_envs_running_shared_hosts_grouped_by_label(env, hcloud_api):
    inventory = read_inventory(env, hcloud_api)
    for role in ("redis", "control", "monitoring"):
        assert inventory[f"role_{role}"]["hosts"] == [f"{env}-{role}-1"]
    assert sorted(inventory[f"env_{env}"]["hosts"]) == sorted(
        f"{env}-{role}-1" for role in ("control", "monitoring", "redis"))
    hostvars = inventory["_meta"]["hostvars"]
    assert f"{env}-tenant-1" not in hostvars  # tenant VMs are Prometheus' business
    assert "someone-elses-box" not in hostvars and "staging-redis-off" not in hostvars
    redis = hostvars[f"{env}-redis-1"]
    assert plain(redis["hcloud_private_ipv4"]).startswith("10.0.")
    assert plain(redis["hermes_env"]) == env
    assert redis["redis_bind_address"] == "{{ hcloud_private_ipv4 }}"


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_inventory_config_filters_by_app_and_env(env):
    config = yaml.safe_load((REPO / f"inventories/{env}/hcloud.yml").read_text())
    assert config["plugin"] == "hetzner.hcloud.hcloud"
    assert {"app=hermes", f"env={env}", "!tenant"} <= set(config["label_selector"].split(","))
    keys = {group["key"] for group in config["keyed_groups"]}
    assert keys == {"hcloud_labels.role", "hcloud_labels.env"}
