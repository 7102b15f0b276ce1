"""The tenant program: one tenant's agent VM, declared in the current Pulumi program.

``HetznerProvisioner`` runs ``build(tenant_id, plan)`` inline through the Automation API, one
stack per tenant, after setting the stack config in ``infra.tenant_config.TENANT_CONFIG_KEYS``.

Design rules (DESIGN.md, "Plans and sizes"): the server boots from the pinned snapshot and
``ignore_changes`` on ``image`` and ``user_data`` keeps a new snapshot or re-rendered cloud-init
from replacing a running VM (credential rotation reaches the VM through ``hermes bus rotate``,
not a rebuild); ``keep_disk=True`` so a resize never grows the disk and a downgrade stays
possible; changing the plan changes ``server_type``, which Hetzner applies as a resize.
"""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra import tenant_config as tc
from infra.config import TenantConfig, load_tenant_config


def tenant_labels(cfg: TenantConfig, tenant_id: str, plan: str) -> dict[str, str]:
    """Labels of a tenant server: the tenant firewall's selector labels plus ``app=hermes``,
    ``env``, ``tenant`` and ``plan`` (DESIGN.md, "Contracts": the reconciler finds orphans by
    these).

    Raises:
        ValueError: ``tenant_id`` is not a valid label value, or the firewall selector would
            overwrite one of the standard labels.
    """
    standard = {
        "app": "hermes",
        "env": cfg.env,
        "tenant": tc.check_label_value(tenant_id, "tenant id"),
        "plan": plan,
    }
    clash = set(standard) & set(cfg.firewall_labels)
    if clash:
        raise ValueError(f"firewall label selector must not set {sorted(clash)}")
    return {**cfg.firewall_labels, **standard}


def server_type_for(cfg: TenantConfig, plan: str) -> str:
    """Hetzner server type of ``plan``.

    Raises:
        ValueError: unknown plan.
    """
    try:
        return cfg.server_types[plan]
    except KeyError:
        raise ValueError(
            f"unknown plan {plan!r}; expected one of {sorted(cfg.server_types)}"
        ) from None


def build(tenant_id: str, plan: str, adopt: str | None = None) -> None:
    """Declare ``tenant_id``'s server and export its ``server_id``, ``server_name``,
    ``private_ip``, ``server_type`` and ``plan``.

    ``adopt``: the id of an existing server to import instead of creating one (a claimed
    warm-pool server, issue 22; Pulumi's ``import`` resource option): the provisioner has
    given it this tenant's name and labels first, and ``image``/``user_data`` are ignored
    changes, so the import matches.  Once in the state the option changes nothing.

    The cloud-init ``user_data`` carries the agent's env file (every ``tc.AGENT_SETTINGS``
    key that is set) and files (``tc.AGENT_FILES``: the Redis CA). It is a Pulumi secret
    because it embeds the secret keys (bus URL, agent token, LLM API keys, all read with
    ``require_secret``/``get_secret``); no export carries any of them.

    Raises:
        ValueError: unknown plan or an invalid tenant id.
        pulumi.ConfigMissingError, pulumi.RunError: the tenant stack config is incomplete.
    """
    cfg = load_tenant_config()
    server_type = server_type_for(cfg, plan)
    labels = tenant_labels(cfg, tenant_id, plan)
    name = tc.server_name(cfg.env, tenant_id)
    user_data: pulumi.Output[str] = pulumi.Output.secret(
        pulumi.Output.all(**cfg.agent_settings).apply(
            lambda settings: tc.render_cloud_init(tenant_id, settings)
        )
    )
    server = hcloud.Server(
        "agent",
        name=name,
        server_type=server_type,
        image=cfg.snapshot_id,
        location=cfg.location,
        labels=labels,
        ssh_keys=list(cfg.ssh_key_names),
        networks=[{"network_id": cfg.network_id, "alias_ips": []}],
        public_nets=[{"ipv4_enabled": True, "ipv6_enabled": True}],
        user_data=user_data,
        keep_disk=True,
        opts=pulumi.ResourceOptions(ignore_changes=["image", "user_data"], import_=adopt),
    )
    pulumi.export("server_id", server.id)
    pulumi.export("server_name", server.name)
    pulumi.export("private_ip", server.networks.apply(_first_private_ip))
    pulumi.export("server_type", server.server_type)
    pulumi.export("plan", plan)


def _first_private_ip(networks) -> str | None:
    return networks[0].ip if networks else None
