"""Hetzner Cloud Firewalls of one environment, as a table of (port, source, purpose) per role.

Nothing is public except SSH from the ops CIDRs and 80/443 on the control host. Hetzner Cloud
Firewalls filter the *public* interfaces only (Hetzner docs, "Firewalls: FAQ"), so the
private-network rules below document which services may be reached on the private network; the
Ansible roles bind those services to the private address and the host firewall enforces it.
Outbound traffic is left open (no ``out`` rules means all outbound is allowed).

Ports (sources: Redis, Prometheus, Grafana, Alertmanager and node_exporter default ports):
22 SSH, 80/443 HTTP(S), 6379 Redis, 6380 Redis TLS, 9090 Prometheus, 3000 Grafana,
9093 Alertmanager, 9100 node_exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

WORLD = ("0.0.0.0/0", "::/0")

# role -> [(port, source kind, purpose)]; source kind is "ops", "private" or "world".
FIREWALL_TABLE: dict[str, list[tuple[str, str, str]]] = {
    "ssh": [("22", "ops", "SSH from the ops CIDRs")],
    "web": [("80", "world", "HTTP (ACME, redirect)"), ("443", "world", "HTTPS control plane")],
    "control": [("9100", "private", "node_exporter")],
    "redis": [
        ("6379", "private", "Redis"),
        ("6380", "private", "Redis TLS"),
        ("9100", "private", "node_exporter"),
    ],
    "monitoring": [
        ("9090", "private", "Prometheus"),
        ("3000", "private", "Grafana"),
        ("9093", "private", "Alertmanager"),
        ("9100", "private", "node_exporter"),
    ],
    "tenant": [("22", "ops", "SSH from the ops CIDRs"), ("9100", "private", "node_exporter")],
}

HOST_FIREWALLS: dict[str, tuple[str, ...]] = {
    "control": ("ssh", "web", "control"),
    "redis": ("ssh", "redis"),
    "monitoring": ("ssh", "monitoring"),
}
"""Shared host role -> the firewalls attached to it (80/443 only on the control host)."""


def firewall_rules(role: str, ops_cidrs: list[str],
                   private_cidr: str) -> list[hcloud.FirewallRuleArgsDict]:
    """Inbound TCP rules of the firewall named ``role`` in ``FIREWALL_TABLE``.

    Returns:
        ``hcloud.FirewallRuleArgsDict``-shaped dicts (``direction``, ``protocol``, ``port``,
        ``source_ips``, ``description``).

    Raises:
        KeyError: unknown role.
    """
    sources = {"ops": list(ops_cidrs), "private": [private_cidr], "world": list(WORLD)}
    return [
        {
            "direction": "in",
            "protocol": "tcp",
            "port": port,
            "source_ips": sources[kind],
            "description": purpose,
        }
        for port, kind, purpose in FIREWALL_TABLE[role]
    ]


@dataclass
class FirewallArgs:
    """Args of ``Firewalls``.

    Attributes:
        env: environment name (labels and firewall names).
        ops_cidrs: CIDRs allowed to SSH in (operators' offices, VPN, CI runners).
        private_cidr: the private network's CIDR (e.g. ``10.0.0.0/16``).
        tenant_label_selector: selector the tenant firewall applies to, e.g.
            ``hermes-firewall=staging-tenant``; tenant servers carry these labels.
    """

    env: str
    ops_cidrs: list[str]
    private_cidr: str
    tenant_label_selector: str


class Firewalls(pulumi.ComponentResource):
    """One ``hcloud.Firewall`` per ``FIREWALL_TABLE`` role.

    The tenant firewall is applied by label selector, so servers in tenant stacks get it without
    referencing this stack; the others are attached by id through ``Server.firewall_ids``.

    Attributes:
        firewalls: role -> ``hcloud.Firewall``.
        ids: role -> firewall id as ``Output[int]``.
    """

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hermes:infra:Firewalls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.firewalls: dict[str, hcloud.Firewall] = {}
        for role in FIREWALL_TABLE:
            apply_tos: list[hcloud.FirewallApplyToArgsDict] | None = (
                [{"label_selector": args.tenant_label_selector}] if role == "tenant" else None
            )
            self.firewalls[role] = hcloud.Firewall(
                f"{name}-{role}",
                name=f"hermes-{args.env}-{role}",
                rules=firewall_rules(role, args.ops_cidrs, args.private_cidr),
                apply_tos=apply_tos,
                labels={"app": "hermes", "env": args.env, "role": role},
                opts=child,
            )
        self.ids = {role: fw.id.apply(int) for role, fw in self.firewalls.items()}
        self.register_outputs({"ids": self.ids})

    def for_host(self, role: str) -> list[pulumi.Output[int]]:
        """Firewall ids to attach to the shared host with ``role`` (see ``HOST_FIREWALLS``)."""
        return [self.ids[name] for name in HOST_FIREWALLS[role]]
