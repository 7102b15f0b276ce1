"""The environment's Hetzner private network and its two cloud subnets.

Shared hosts get fixed addresses in the shared subnet; tenant servers attach by network id
only, and Hetzner then puts them in the *last* subnet ordered by ip_range (pulumi-hcloud docs,
``Server.networks.network_id``), so the tenant subnet must sort after the shared one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud


@dataclass
class NetworkArgs:
    """Args of ``PrivateNetwork``.

    Attributes:
        env: environment name (label ``env``).
        ip_range: the network, e.g. ``10.0.0.0/16``.
        shared_subnet: subnet for shared hosts with fixed addresses, e.g. ``10.0.1.0/24``.
        tenant_subnet: subnet tenants are attached to, e.g. ``10.0.16.0/20``; must sort after
            ``shared_subnet``.
        network_zone: Hetzner network zone of the subnets (``eu-central`` holds nbg1/fsn1/hel1).
    """

    env: str
    ip_range: str
    shared_subnet: str
    tenant_subnet: str
    network_zone: str = "eu-central"


class PrivateNetwork(pulumi.ComponentResource):
    """A ``hcloud.Network`` with a shared-host subnet and a tenant subnet.

    Attributes:
        network, shared_subnet, tenant_subnet: the hcloud resources.
        network_id: the network id as ``Output[int]`` (what ``Server.networks`` takes).
    """

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hermes:infra:PrivateNetwork", name, None, opts)
        # Hetzner networks are IPv4 only (https://docs.hetzner.cloud/reference/cloud#networks).
        if ipaddress.IPv4Network(args.tenant_subnet) <= ipaddress.IPv4Network(args.shared_subnet):
            raise pulumi.RunError("tenant subnet must sort after the shared subnet")
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app": "hermes", "env": args.env}
        self.network = hcloud.Network(
            name, name=f"hermes-{args.env}", ip_range=args.ip_range, labels=labels, opts=child
        )
        self.network_id = self.network.id.apply(int)
        self.shared_subnet = self._subnet(f"{name}-shared", args.shared_subnet, args, child)
        self.tenant_subnet = self._subnet(f"{name}-tenants", args.tenant_subnet, args, child)
        self.register_outputs({"network_id": self.network_id})

    def _subnet(self, name: str, ip_range: str, args: NetworkArgs, opts) -> hcloud.NetworkSubnet:
        return hcloud.NetworkSubnet(
            name,
            network_id=self.network_id,
            type="cloud",
            network_zone=args.network_zone,
            ip_range=ip_range,
            opts=opts,
        )
