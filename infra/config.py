"""The only reader of Pulumi config in ``infra/``.

* ``load_shared_config()`` reads the shared stack's keys (project namespace ``hermes-max``),
  declared with descriptions and defaults in ``Pulumi.yaml``; per-environment values live in
  ``Pulumi.<env>.yaml``. The Pulumi CLI applies ``Pulumi.yaml`` defaults before the program
  runs, so every key is read here with ``require*``.
* ``load_tenant_config()`` reads a tenant stack's keys (namespace ``hermes``), set by
  ``HetznerProvisioner``; the contract is ``infra.tenant_config.TENANT_CONFIG_KEYS``.

Secrets are only ever read with ``require_secret`` and stay ``pulumi.Output`` values.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi

from infra import tenant_config as tc

_WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


@dataclass(frozen=True)
class SharedConfig:
    """One environment's shared-stack settings (see ``Pulumi.yaml`` for each key's meaning).

    Addresses and CIDRs are strings in standard notation; server types are Hetzner type names
    (validated against the API by Hetzner at create time); archive credentials are secrets.
    """

    env: str
    location: str
    network_zone: str
    network_cidr: str
    shared_subnet_cidr: str
    tenant_subnet_cidr: str
    ops_cidrs: tuple[str, ...]
    ssh_public_keys: tuple[str, ...]
    shared_image: str
    control_server_type: str
    redis_server_type: str
    monitoring_server_type: str
    control_private_ip: str
    redis_private_ip: str
    monitoring_private_ip: str
    redis_public_ipv4: bool
    monitoring_public_ipv4: bool
    snapshot_id: str
    tenant_server_type_light: str
    tenant_server_type_heavy: str
    archive_endpoint: str
    archive_bucket: str
    archive_region: str
    archive_access_key: pulumi.Output[str]
    archive_secret_key: pulumi.Output[str]


@dataclass(frozen=True)
class TenantConfig:
    """One tenant stack's settings (keys in ``infra.tenant_config.TENANT_CONFIG_KEYS``).

    ``network_id`` is the Hetzner network id as an int; ``firewall_labels`` are the labels that
    satisfy the tenant firewall's selector; ``server_types`` maps plan -> Hetzner server type;
    ``agent_settings`` maps each set key of ``tc.AGENT_SETTINGS`` and ``tc.AGENT_FILES`` to its
    value: a ``pulumi.Output`` (secret) for secret keys, a string otherwise.
    """

    env: str
    location: str
    snapshot_id: str
    network_id: int
    firewall_labels: dict[str, str]
    server_types: dict[str, str]
    ssh_key_names: tuple[str, ...]
    agent_settings: dict[str, str | pulumi.Output[str]]


def _cidrs(key: str, values: list[str], *, allow_world: bool = False) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise pulumi.RunError(f"config {key}: {value!r} is not a CIDR ({exc})") from exc
        if not allow_world and net in _WORLD:
            raise pulumi.RunError(f"config {key}: {value} would open the port to the world")
        out.append(str(net))
    if not out:
        raise pulumi.RunError(f"config {key} must list at least one CIDR")
    return tuple(out)


def _check_within(key: str, inner: str, outer: str) -> None:
    inner_net = ipaddress.ip_network(inner if "/" in inner else f"{inner}/32")
    outer_net = ipaddress.ip_network(outer)
    if inner_net.version != outer_net.version or not inner_net.subnet_of(outer_net):  # type: ignore[arg-type]
        raise pulumi.RunError(f"config {key}: {inner} is not inside {outer}")


def load_shared_config() -> SharedConfig:
    """Read and validate the shared stack's config.

    Raises:
        pulumi.ConfigMissingError: a key without a ``Pulumi.yaml`` default is unset.
        pulumi.RunError: an ops CIDR is malformed or the whole Internet, or an address lies
            outside its network.
    """
    cfg = pulumi.Config()
    network_cidr = cfg.require("networkCidr")
    shared = SharedConfig(
        env=tc.check_label_value(cfg.require("env"), "env"),
        location=cfg.require("location"),
        network_zone=cfg.require("networkZone"),
        network_cidr=network_cidr,
        shared_subnet_cidr=cfg.require("sharedSubnetCidr"),
        tenant_subnet_cidr=cfg.require("tenantSubnetCidr"),
        ops_cidrs=_cidrs("opsCidrs", cfg.require_object("opsCidrs")),
        ssh_public_keys=tuple(cfg.require_object("sshPublicKeys")),
        shared_image=cfg.require("sharedImage"),
        control_server_type=cfg.require("controlServerType"),
        redis_server_type=cfg.require("redisServerType"),
        monitoring_server_type=cfg.require("monitoringServerType"),
        control_private_ip=cfg.require("controlPrivateIp"),
        redis_private_ip=cfg.require("redisPrivateIp"),
        monitoring_private_ip=cfg.require("monitoringPrivateIp"),
        redis_public_ipv4=cfg.require_bool("redisPublicIpv4"),
        monitoring_public_ipv4=cfg.require_bool("monitoringPublicIpv4"),
        snapshot_id=cfg.require("snapshotId"),
        tenant_server_type_light=cfg.require("tenantServerTypeLight"),
        tenant_server_type_heavy=cfg.require("tenantServerTypeHeavy"),
        archive_endpoint=cfg.require("archiveEndpoint"),
        archive_bucket=cfg.require("archiveBucket"),
        archive_region=cfg.require("archiveRegion"),
        archive_access_key=cfg.require_secret("archiveAccessKey"),
        archive_secret_key=cfg.require_secret("archiveSecretKey"),
    )
    _check_within("sharedSubnetCidr", shared.shared_subnet_cidr, network_cidr)
    _check_within("tenantSubnetCidr", shared.tenant_subnet_cidr, network_cidr)
    fixed_ips = {
        "controlPrivateIp": shared.control_private_ip,
        "redisPrivateIp": shared.redis_private_ip,
        "monitoringPrivateIp": shared.monitoring_private_ip,
    }
    for key, ip in fixed_ips.items():
        _check_within(key, ip, shared.shared_subnet_cidr)
    if not shared.ssh_public_keys:
        raise pulumi.RunError("config sshPublicKeys must list at least one public key")
    return shared


def _tenant_value(cfg: pulumi.Config, key: str) -> str | None:
    spec = tc.TENANT_CONFIG_KEYS[key]
    if spec.default is not None:
        return cfg.get(spec.name) or spec.default
    if spec.optional:
        return cfg.get(spec.name)
    return cfg.require(spec.name)


def _required_value(cfg: pulumi.Config, key: str) -> str:
    """``_tenant_value`` of a key the tenant program cannot do without.

    Raises:
        pulumi.RunError: the key is optional in ``infra.tenant_config`` and unset.
    """
    value = _tenant_value(cfg, key)
    if value is None:
        raise pulumi.RunError(f"tenant stack config: {key} is required")
    return value


def load_tenant_config() -> TenantConfig:
    """Read and validate a tenant stack's config (namespace ``hermes``).

    Raises:
        pulumi.ConfigMissingError: a required key is unset (including the agent's required
            settings, e.g. ``hermes:busUrl``, ``hermes:dailyBudgetCents``).
        pulumi.RunError: ``hermes:networkId`` is not an integer or ``hermes:firewallLabel`` is
            not an equality label selector.
    """
    cfg = pulumi.Config(tc.NAMESPACE)
    network_id = _required_value(cfg, tc.NETWORK_ID)
    try:
        network = int(network_id)
        firewall_labels = tc.parse_label_selector(_required_value(cfg, tc.FIREWALL_LABEL))
        env = tc.check_label_value(_required_value(cfg, tc.ENV), "env")
    except ValueError as exc:
        raise pulumi.RunError(f"tenant stack config: {exc}") from exc
    ssh_keys = _tenant_value(cfg, tc.SSH_KEY_NAMES) or ""
    return TenantConfig(
        env=env,
        location=_required_value(cfg, tc.LOCATION),
        snapshot_id=_required_value(cfg, tc.SNAPSHOT_ID),
        network_id=network,
        firewall_labels=firewall_labels,
        server_types={
            plan: _required_value(cfg, key) for plan, key in tc.PLAN_SERVER_TYPE_KEYS.items()
        },
        ssh_key_names=tuple(name.strip() for name in ssh_keys.split(",") if name.strip()),
        agent_settings=_agent_settings(cfg),
    )


def _agent_settings(cfg: pulumi.Config) -> dict[str, str | pulumi.Output[str]]:
    """Read every agent setting and file key and the host key; secrets only through ``require_secret`` /
    ``get_secret`` so they never exist as plain strings in the program."""
    values: dict[str, str | pulumi.Output[str]] = {}
    keys = [spec.key for spec in tc.AGENT_SETTINGS] + [f.key for f in tc.AGENT_FILES] + \
        list(tc.HOST_KEY_KEYS)
    for key in keys:
        spec = tc.TENANT_CONFIG_KEYS[key]
        value: str | pulumi.Output[str] | None
        if not spec.secret:
            value = _tenant_value(cfg, key)
        elif spec.optional:
            value = cfg.get_secret(spec.name)
        else:
            value = cfg.require_secret(spec.name)
        if value is not None:
            values[key] = value
    return values
