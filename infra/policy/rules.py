"""Policy rules as pure functions over ``(resource type, props)``; no Pulumi import.

The CrossGuard pack (``infra/policy/__main__.py``) and the unit tests apply the same functions.
``props`` are a resource's input properties as the engine sees them (camelCase keys, e.g.
``keepDisk``, ``publicNets``, ``sourceIps``). Each rule returns a list of violation messages,
empty when the resource complies. Unknown values (during preview) are skipped, never guessed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"

PROTECTED_PORTS: dict[int, str] = {
    22: "SSH",
    6379: "Redis",
    6380: "Redis TLS",
    9090: "Prometheus",
    3000: "Grafana",
}
"""TCP ports that must never be open to the whole Internet (issue 5, policy pack)."""

PRIVATE_ROLES = ("redis", "monitoring")
"""Server roles that get no public IPv4 unless the policy config allows it."""

REQUIRED_LABELS = ("app", "env")

ALLOWED_PUBLIC_IPV4_ROLES = "allowedPublicIpv4Roles"
"""Policy config key: roles from ``PRIVATE_ROLES`` allowed a public IPv4 address."""


def _is_world(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False


def _port_range(port: Any) -> range | None:
    """``"22"`` -> 22..22, ``"20-25"`` -> 20..25, ``"any"`` -> every port; ``None`` if unparsable."""
    text = str(port).strip().lower()
    if text == "any":
        return range(1, 65536)
    low, _, high = text.partition("-")
    try:
        return range(int(low), int(high or low) + 1)
    except ValueError:
        return None


def _labels(props: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = props.get("labels")
    return labels if isinstance(labels, Mapping) else {}


def world_open_ports(
    resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[str]:
    """Firewall rules opening SSH, Redis, Prometheus or Grafana to ``0.0.0.0/0`` or ``::/0``."""
    if resource_type != FIREWALL:
        return []
    violations = []
    for rule in props.get("rules") or []:
        if not isinstance(rule, Mapping) or rule.get("direction") != "in":
            continue
        if str(rule.get("protocol", "")).lower() != "tcp":
            continue
        ports = _port_range(rule.get("port", ""))
        world = [ip for ip in rule.get("sourceIps") or [] if _is_world(ip)]
        if ports is None or not world:
            continue
        for port, service in PROTECTED_PORTS.items():
            if port in ports:
                violations.append(f"{service} port {port} is open to {', '.join(world)}")
    return violations


def missing_labels(
    resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[str]:
    """Servers without ``app``, ``env`` and one of ``role`` / ``tenant`` labels."""
    if resource_type != SERVER:
        return []
    labels = _labels(props)
    missing = [key for key in REQUIRED_LABELS if not labels.get(key)]
    if not (labels.get("role") or labels.get("tenant")):
        missing.append("role or tenant")
    return [f"server is missing label(s): {', '.join(missing)}"] if missing else []


def tenant_without_keep_disk(
    resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[str]:
    """Tenant servers (label ``tenant``) without ``keepDisk: true`` (a downgrade needs it)."""
    if resource_type != SERVER or not _labels(props).get("tenant"):
        return []
    return [] if props.get("keepDisk") is True else ["tenant server must set keep_disk=True"]


def _has_public_ipv4(props: Mapping[str, Any]) -> bool:
    # Hetzner's default (no public_net block, or ipv4_enabled unset) is a public IPv4 address.
    nets = props.get("publicNets")
    if not nets:
        return True
    return any(isinstance(n, Mapping) and n.get("ipv4Enabled", True) is not False for n in nets)


def public_ipv4_on_private_host(
    resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[str]:
    """Redis or monitoring servers with a public IPv4, unless the policy config lists their role
    in ``allowedPublicIpv4Roles`` (set it when the stack sets ``redisPublicIpv4`` /
    ``monitoringPublicIpv4``)."""
    if resource_type != SERVER:
        return []
    role = _labels(props).get("role")
    allowed = (config or {}).get(ALLOWED_PUBLIC_IPV4_ROLES) or ()
    if role not in PRIVATE_ROLES or role in allowed:
        return []
    return [f"{role} server has a public IPv4 address"] if _has_public_ipv4(props) else []


Rule = Callable[[str, Mapping[str, Any], "Mapping[str, Any] | None"], list[str]]

RULES: dict[str, tuple[str, Rule]] = {
    "no-world-open-admin-ports": (
        "No SSH, Redis, Prometheus or Grafana port open to 0.0.0.0/0 or ::/0.",
        world_open_ports,
    ),
    "servers-labelled": (
        "Every hcloud server carries app, env and role (shared) or tenant labels.",
        missing_labels,
    ),
    "tenant-keep-disk": (
        "Tenant servers keep their disk size on resize (keep_disk=True).",
        tenant_without_keep_disk,
    ),
    "private-hosts-no-public-ipv4": (
        "Redis and monitoring servers have no public IPv4 unless allowed by policy config.",
        public_ipv4_on_private_host,
    ),
}
"""Policy name -> (description, rule function)."""


def check(
    resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> dict[str, list[str]]:
    """Apply every rule; return policy name -> violations for the rules that fired."""
    results = {name: rule(resource_type, props, config) for name, (_, rule) in RULES.items()}
    return {name: found for name, found in results.items() if found}
