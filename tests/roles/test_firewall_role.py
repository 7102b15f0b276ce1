"""roles/firewall rendered for real for each shared host, checked with ``nft -c -f`` when nft is
here, and loaded into a private network namespace to see which peer reaches which port
(issue #19, finding 6: a tenant VM on the private network reached every shared host's ports)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NFT = shutil.which("nft")
IP = shutil.which("ip")

# The shared hosts' private addresses (Pulumi.yaml defaults) and the other sources a probe uses.
CONTROL, REDIS, MONITORING = "10.0.1.10", "10.0.1.20", "10.0.1.30"
TENANT = "10.0.16.5"  # inside the tenant subnet 10.0.16.0/20
STRANGER = "10.0.2.99"  # on the private network, but no named peer
OPS = "198.51.100.2"  # inside the ops CIDR
INTERNET = "192.0.2.2"
OPS_CIDRS = ["198.51.100.0/28", "2001:db8::/32"]
# Addresses of the host under test inside the namespace: private, ops-facing and public side.
SERVER_PRIVATE, SERVER_OPS, SERVER_PUBLIC = "10.0.1.1", "198.51.100.1", "192.0.2.1"
PORTS = [22, 80, 443, 3000, 6380, 9090, 9100]


def inventory_for(group: str) -> dict:
    """Shared hosts of one environment, with localhost as one more host of ``group``."""
    hosts = {
        "role_control": {"control-1": {"hcloud_private_ipv4": CONTROL}},
        "role_redis": {"redis-1": {"hcloud_private_ipv4": REDIS}},
        "role_monitoring": {"monitoring-1": {"hcloud_private_ipv4": MONITORING}},
    }
    hosts[group]["localhost"] = {"hcloud_private_ipv4": SERVER_PRIVATE}
    return hosts


def render(apply_role, make_inventory, tmp_path: Path, group: str, **overrides) -> Path:
    """Apply the role as a host of ``group`` without touching this machine's firewall; return
    the ruleset file it wrote."""
    path = tmp_path / f"{group}.nft"
    variables = {
        "firewall_manage_packages": False,
        "firewall_manage_service": False,
        "firewall_validate": NFT is not None,
        "firewall_ruleset_path": str(path),
        "firewall_ops_cidrs": OPS_CIDRS,
        **overrides,
    }
    result = apply_role("firewall", variables, inventory=make_inventory(inventory_for(group)))
    assert result.status == "successful", result.stdout
    return path


def rule_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_control_ruleset_names_its_peers_and_drops_the_rest_of_the_private_network(
    tmp_path, apply_role, make_inventory
):
    rules = rule_lines(render(apply_role, make_inventory, tmp_path, "role_control"))
    assert "type filter hook input priority filter; policy drop;" in rules
    assert "elements = { 10.0.16.0/20 }" in rules  # the tenants set
    assert "ip saddr @tenants tcp dport 443 accept" in rules
    assert "ip saddr @monitoring tcp dport 443 accept" in rules
    assert "ip saddr @monitoring tcp dport 9100 accept" in rules
    assert "ip saddr @ops4 tcp dport 22 accept" in rules
    assert "ip6 saddr @ops6 tcp dport 22 accept" in rules
    assert "tcp dport { 80, 443 } accept" in rules
    # No tenant rule but HTTPS, and the private network's catch-all drop comes after the peers.
    assert [r for r in rules if r.startswith("ip saddr @tenants")] == [
        "ip saddr @tenants tcp dport 443 accept"]
    assert rules.index("ip saddr 10.0.0.0/16 counter drop") > rules.index(
        "ip saddr @monitoring tcp dport 9100 accept")


def test_redis_ruleset_lets_tenants_reach_the_tls_port_only(tmp_path, apply_role, make_inventory):
    rules = rule_lines(render(apply_role, make_inventory, tmp_path, "role_redis"))
    assert [r for r in rules if r.startswith("ip saddr @tenants")] == [
        "ip saddr @tenants tcp dport 6380 accept"]
    assert "ip saddr @control tcp dport 6380 accept" in rules
    assert f"elements = {{ {REDIS}, {SERVER_PRIVATE} }}" in rules
    assert not [r for r in rules if "dport { 80, 443 }" in r]  # nothing public on the bus host


def test_the_role_refuses_to_run_without_an_ssh_source(tmp_path, apply_role, make_inventory):
    path = tmp_path / "none.nft"
    result = apply_role(
        "firewall",
        {"firewall_manage_packages": False, "firewall_manage_service": False,
         "firewall_ruleset_path": str(path), "firewall_ops_cidrs": []},
        inventory=make_inventory(inventory_for("role_control")))
    assert result.status == "failed"
    assert "firewall_ops_cidrs is empty" in result.stdout
    assert not path.exists()


@pytest.mark.skipif(NFT is None, reason="nft is not installed (apt-get install nftables)")
def test_a_broken_ruleset_is_refused_by_nft_before_it_is_installed(
    tmp_path, apply_role, make_inventory
):
    path = tmp_path / "role_control.nft"
    result = apply_role(
        "firewall",
        {"firewall_manage_packages": False, "firewall_manage_service": False,
         "firewall_validate": True, "firewall_ruleset_path": str(path),
         "firewall_ops_cidrs": ["not-a-cidr"]},
        inventory=make_inventory(inventory_for("role_control")))
    assert result.status == "failed"
    assert "failed to validate" in result.stdout
    assert not path.exists()


# --- the ruleset loaded into a network namespace -------------------------------------------

PROBE = r"""
import json, socket, sys
results = []
for source, target, port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.settimeout(float(sys.argv[2]))
    sock.bind((source, 0))
    try:
        sock.connect((target, port))
        results.append(True)
    except OSError:
        results.append(False)
    finally:
        sock.close()
print(json.dumps(results))
"""

LISTENER = r"""
import selectors, socket, sys
selector = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(64)
    selector.register(server, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in selector.select():
        key.fileobj.accept()[0].close()
"""


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces():
    """Two network namespaces joined by a veth pair: ``server`` (the shared host, addresses
    SERVER_*) and ``client`` (every source address of the probes). Yields their names."""
    if NFT is None or IP is None:
        pytest.skip("needs nft and ip (apt-get install nftables iproute2)")
    tag = f"hfw{os.getpid() % 100000}"
    server, client = f"{tag}s", f"{tag}c"
    try:
        _run(IP, "netns", "add", server)
        _run(IP, "netns", "add", client)
    except (subprocess.CalledProcessError, PermissionError) as error:
        pytest.skip(f"cannot create network namespaces here: {error}")
    try:
        _run(IP, "link", "add", f"{tag}a", "netns", server, "type", "veth",
             "peer", "name", f"{tag}b", "netns", client)
        for namespace, link, addresses in (
            (server, f"{tag}a", [SERVER_PRIVATE + "/16", SERVER_OPS + "/24", SERVER_PUBLIC + "/24"]),
            (client, f"{tag}b", [a + "/16" for a in (TENANT, CONTROL, REDIS, MONITORING, STRANGER)]
             + [OPS + "/24", INTERNET + "/24"]),
        ):
            for address in addresses:
                _run(IP, "-n", namespace, "addr", "add", address, "dev", link)
            _run(IP, "-n", namespace, "link", "set", link, "up")
            _run(IP, "-n", namespace, "link", "set", "lo", "up")
        yield server, client
    finally:
        subprocess.run([IP, "netns", "del", server], check=False, capture_output=True)
        subprocess.run([IP, "netns", "del", client], check=False, capture_output=True)


def reachable(namespaces, ruleset: Path, probes: list[tuple[str, int]]) -> dict:
    """Load ``ruleset`` in the server namespace, listen there on PORTS, connect from the client
    namespace: ``{(source, port): connected}``. Private sources aim at the private address,
    the ops source at the ops side, the internet at the public side."""
    server, client = namespaces
    _run(IP, "netns", "exec", server, NFT, "-f", str(ruleset))
    listener = subprocess.Popen(
        [IP, "netns", "exec", server, sys.executable, "-c", LISTENER, *map(str, PORTS)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        target = {OPS: SERVER_OPS, INTERNET: SERVER_PUBLIC}
        triples = [(source, target.get(source, SERVER_PRIVATE), port) for source, port in probes]
        # A dropped SYN is never answered: 1 s is the verdict for "blocked"; an accepted one
        # completes over the veth at once.
        out = subprocess.run(
            [IP, "netns", "exec", client, sys.executable, "-c", PROBE, json.dumps(triples), "1"],
            check=True, capture_output=True, text=True, timeout=120).stdout
        return dict(zip(probes, json.loads(out), strict=True))
    finally:
        listener.kill()
        listener.wait(timeout=10)


def test_on_the_control_host_a_tenant_reaches_https_only(
    namespaces, tmp_path, apply_role, make_inventory
):
    ruleset = render(apply_role, make_inventory, tmp_path, "role_control")
    expected = {
        (TENANT, 443): True, (TENANT, 9100): False, (TENANT, 22): False, (TENANT, 80): False,
        (TENANT, 6380): False,
        (MONITORING, 443): True, (MONITORING, 9100): True, (MONITORING, 22): False,
        (STRANGER, 443): False, (STRANGER, 9100): False,
        (OPS, 22): True,
        (INTERNET, 443): True, (INTERNET, 80): True, (INTERNET, 22): False,
        (INTERNET, 9100): False,
    }
    assert reachable(namespaces, ruleset, list(expected)) == expected


def test_on_the_redis_host_a_tenant_reaches_the_tls_port_only(
    namespaces, tmp_path, apply_role, make_inventory
):
    ruleset = render(apply_role, make_inventory, tmp_path, "role_redis")
    expected = {
        (TENANT, 6380): True, (TENANT, 9100): False, (TENANT, 443): False, (TENANT, 22): False,
        (CONTROL, 6380): True, (CONTROL, 22): False,
        (MONITORING, 6380): True, (MONITORING, 9100): True,
        (STRANGER, 6380): False,
        (OPS, 22): True,
        (INTERNET, 6380): False, (INTERNET, 443): False,
    }
    assert reachable(namespaces, ruleset, list(expected)) == expected


def test_on_the_monitoring_host_grafana_and_prometheus_are_closed_to_the_network(
    namespaces, tmp_path, apply_role, make_inventory
):
    ruleset = render(apply_role, make_inventory, tmp_path, "role_monitoring")
    expected = {
        (TENANT, 3000): False, (TENANT, 9090): False, (TENANT, 9100): False,
        (CONTROL, 3000): False, (MONITORING, 9100): True,
        (OPS, 22): True, (OPS, 3000): False, (INTERNET, 3000): False,
    }
    assert reachable(namespaces, ruleset, list(expected)) == expected
