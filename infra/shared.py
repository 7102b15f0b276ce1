"""The shared stack of one environment: network, firewalls, SSH keys, placement group and the
Redis, monitoring and control hosts, plus the outputs tenant stacks and operators need.

Stack outputs (camelCase, read by ``HetznerProvisioner`` and the Ansible inventories):
``env``, ``location``, ``networkId``, ``networkCidr``, ``sharedSubnetId``, ``tenantSubnetId``,
``firewallIds`` (role -> id), ``tenantFirewallLabel``, ``snapshotId``, ``redisPrivateIp``,
``redisUrl``, ``monitoringPrivateIp``, ``controlPrivateIp``, ``controlPublicIpv4``,
``sshKeyNames`` (comma-separated), ``placementGroupId``, ``tenantServerTypeLight``,
``tenantServerTypeHeavy``, ``archiveEndpoint``, ``archiveBucket``, ``archiveRegion`` and the
secrets ``archiveAccessKey``, ``archiveSecretKey``.
"""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.components.control_host import ControlHost, ControlHostArgs
from infra.components.firewall import FirewallArgs, Firewalls
from infra.components.monitoring_host import MonitoringHost, MonitoringHostArgs
from infra.components.network import NetworkArgs, PrivateNetwork
from infra.components.redis_host import RedisHost, RedisHostArgs
from infra.components.ssh_keys import SshKeys, SshKeysArgs
from infra.config import SharedConfig, load_shared_config


def tenant_firewall_label(env: str) -> str:
    """Label selector of the tenant firewall in ``env`` (tenant servers carry its label)."""
    return f"hermes-firewall={env}-tenant"


def _host_args(
    cfg: SharedConfig,
    net: PrivateNetwork,
    fws: Firewalls,
    keys: SshKeys,
    spread: hcloud.PlacementGroup,
    role: str,
) -> dict:
    """The ``HostArgs`` fields common to every shared host with ``role``."""
    return {
        "env": cfg.env,
        "image": cfg.shared_image,
        "location": cfg.location,
        "network_id": net.network_id,
        "subnet_id": net.shared_subnet.id,
        "firewall_ids": fws.for_host(role),
        "ssh_key_ids": keys.ids,
        "placement_group_id": spread.id.apply(int),
        "depends_on": [net.shared_subnet],
    }


def build_shared_stack(cfg: SharedConfig | None = None) -> None:
    """Declare the shared stack's resources and outputs in the current Pulumi program.

    Args:
        cfg: settings; read from the stack's config when omitted.
    """
    cfg = cfg or load_shared_config()
    net = PrivateNetwork(
        "network",
        NetworkArgs(
            env=cfg.env,
            ip_range=cfg.network_cidr,
            shared_subnet=cfg.shared_subnet_cidr,
            tenant_subnet=cfg.tenant_subnet_cidr,
            network_zone=cfg.network_zone,
        ),
    )
    tenant_label = tenant_firewall_label(cfg.env)
    fws = Firewalls(
        "firewalls",
        FirewallArgs(
            env=cfg.env,
            ops_cidrs=list(cfg.ops_cidrs),
            private_cidr=cfg.network_cidr,
            tenant_label_selector=tenant_label,
        ),
    )
    keys = SshKeys("ssh-keys", SshKeysArgs(env=cfg.env, public_keys=list(cfg.ssh_public_keys)))
    # Spread: each shared host on a different physical machine (Hetzner "Placement groups").
    spread = hcloud.PlacementGroup(
        "shared-spread",
        name=f"hermes-{cfg.env}-shared",
        type="spread",
        labels={"app": "hermes", "env": cfg.env},
    )

    redis = RedisHost(
        "redis",
        RedisHostArgs(
            **_host_args(cfg, net, fws, keys, spread, "redis"),
            server_type=cfg.redis_server_type,
            private_ip=cfg.redis_private_ip,
            public_ipv4=cfg.redis_public_ipv4,
        ),
    )
    monitoring = MonitoringHost(
        "monitoring",
        MonitoringHostArgs(
            **_host_args(cfg, net, fws, keys, spread, "monitoring"),
            server_type=cfg.monitoring_server_type,
            private_ip=cfg.monitoring_private_ip,
            public_ipv4=cfg.monitoring_public_ipv4,
        ),
    )
    control = ControlHost(
        "control",
        ControlHostArgs(
            **_host_args(cfg, net, fws, keys, spread, "control"),
            server_type=cfg.control_server_type,
            private_ip=cfg.control_private_ip,
        ),
    )

    outputs = {
        "env": cfg.env,
        "location": cfg.location,
        "networkId": net.network_id,
        "networkCidr": cfg.network_cidr,
        "sharedSubnetId": net.shared_subnet.id,
        "tenantSubnetId": net.tenant_subnet.id,
        "firewallIds": fws.ids,
        "tenantFirewallLabel": tenant_label,
        "snapshotId": cfg.snapshot_id,
        "redisPrivateIp": redis.private_ip,
        "redisUrl": redis.url,
        "monitoringPrivateIp": monitoring.private_ip,
        "controlPrivateIp": control.private_ip,
        "controlPublicIpv4": control.public_ipv4,
        "sshKeyNames": ",".join(keys.names),
        "placementGroupId": spread.id.apply(int),
        "tenantServerTypeLight": cfg.tenant_server_type_light,
        "tenantServerTypeHeavy": cfg.tenant_server_type_heavy,
        "archiveEndpoint": cfg.archive_endpoint,
        "archiveBucket": cfg.archive_bucket,
        "archiveRegion": cfg.archive_region,
        # Secret already: read with ``require_secret`` (infra/config.py).
        "archiveAccessKey": cfg.archive_access_key,
        "archiveSecretKey": cfg.archive_secret_key,
    }
    for name, value in outputs.items():
        pulumi.export(name, value)
