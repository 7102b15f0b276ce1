"""A shared host: one ``hcloud.Server`` on the private network with fixed labels and address.

``RedisHost``, ``MonitoringHost`` and ``ControlHost`` subclass ``SharedHost`` and only differ in
role, public addressing and the outputs they expose. Software on the hosts is configured by the
Ansible roles in ``roles/`` (inventory grouped by the ``role`` label).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_hcloud as hcloud


def host_labels(env: str, role: str) -> dict[str, str]:
    """Labels every shared server carries: ``app=hermes``, ``env``, ``role``."""
    return {"app": "hermes", "env": env, "role": role}


@dataclass
class HostArgs:
    """Args of a ``SharedHost``.

    Attributes:
        env: environment name (label ``env``, server name ``hermes-<env>-<role>``).
        server_type: Hetzner server type name, e.g. ``cx33`` (4 vCPU, 8 GB RAM).
        image: OS image name or id, e.g. ``ubuntu-22.04``.
        location: Hetzner location, e.g. ``nbg1``.
        network_id: private network id.
        subnet_id: subnet the fixed ``private_ip`` belongs to.
        private_ip: fixed address on the private network.
        firewall_ids: firewalls attached by id.
        ssh_key_ids: Hetzner SSH key ids (or names) installed for root.
        placement_group_id: spread placement group (distinct physical hosts), if any.
        public_ipv4: give the server a public IPv4 address.
        public_ipv6: give the server a public IPv6 address (outbound package installs).
        depends_on: resources that must exist first (the subnet: Hetzner rejects attaching a
            server to a network without a subnet in its zone).
    """

    env: str
    server_type: str
    image: str
    location: str
    network_id: pulumi.Input[int]
    subnet_id: pulumi.Input[str]
    private_ip: str
    firewall_ids: list[pulumi.Input[int]]
    ssh_key_ids: list[pulumi.Input[str]]
    placement_group_id: pulumi.Input[int] | None = None
    public_ipv4: bool = False
    public_ipv6: bool = True
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class SharedHost(pulumi.ComponentResource):
    """A shared server labelled ``app``/``env``/``role`` with a fixed private address.

    Attributes:
        server: the ``hcloud.Server``.
        private_ip: its private address (``Output[str]``).
        public_ipv4: its public IPv4 address, or ``None`` when it has none.
    """

    ROLE = "shared"
    TYPE = "hermes:infra:SharedHost"

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(self.TYPE, name, None, opts)
        self.server = hcloud.Server(
            name,
            name=f"hermes-{args.env}-{self.ROLE}",
            server_type=args.server_type,
            image=args.image,
            location=args.location,
            labels=host_labels(args.env, self.ROLE),
            ssh_keys=args.ssh_key_ids,
            firewall_ids=args.firewall_ids,
            placement_group_id=args.placement_group_id,
            networks=[
                {
                    "network_id": args.network_id,
                    "subnet_id": args.subnet_id,
                    "ip": args.private_ip,
                    # pulumi-hcloud docs: an explicit empty list avoids detach/attach on every apply.
                    "alias_ips": [],
                }
            ],
            public_nets=[{"ipv4_enabled": args.public_ipv4, "ipv6_enabled": args.public_ipv6}],
            delete_protection=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.private_ip = pulumi.Output.from_input(args.private_ip)
        self.public_ipv4 = self.server.ipv4_address if args.public_ipv4 else None
        self.register_outputs({"private_ip": self.private_ip, **self._role_outputs(args)})

    def _role_outputs(self, args: HostArgs) -> dict[str, pulumi.Output]:
        """Set and return role-specific outputs; subclasses override (called once, last)."""
        return {}
