"""``HetznerConfig``: everything ``HetznerProvisioner`` needs, built once from settings.

The tenant stack config it produces follows ``infra.tenant_config.TENANT_CONFIG_KEYS`` (the
contract of ``infra.tenant.build``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from control.errors import ConfigError, ProvisioningError
from control.providers.hetzner_workspace import ConfigEntry
from infra import tenant_config as tc

#: Project of the tenant stacks (one stack per tenant, ``{env}-tenant-{tenant}``).
TENANT_PROJECT = "hermes-tenants"
#: Project of the shared stack (``Pulumi.yaml`` ``name``), one stack per environment.
SHARED_PROJECT = "hermes-max"
#: Plan sizes, smallest first; resizing towards a lower index is a downgrade.
PLAN_ORDER = ("light", "heavy")


@dataclass(frozen=True)
class TenantProgram:
    """The inline Pulumi program of one tenant stack: ``infra.tenant.build(tenant, plan)``."""

    tenant: str
    plan: str

    def __call__(self) -> None:
        from infra.tenant import build

        build(self.tenant, self.plan)


@dataclass(frozen=True)
class HetznerConfig:
    """Settings of the Hetzner provisioner.

    Attributes:
        env: environment name (``staging``, ``prod``); the ``env`` label and stack name prefix.
        hcloud_token: Hetzner Cloud API token (read+write) for type validation and sweeps.
        snapshot_id: pinned base snapshot id (shared stack output ``snapshotId``).
        network_id: private network id (shared stack output ``networkId``).
        firewall_label: tenant firewall selector, e.g. ``hermes-firewall=staging-tenant``.
        control_url: control-plane base URL the agents report to.
        pulumi_backend_url: Pulumi state backend (``file:///var/lib/hermes/pulumi`` or
            ``s3://<bucket>?endpoint=<location>.your-objectstorage.com``).
        pulumi_passphrase: passphrase of Pulumi's ``passphrase`` secrets provider.
        hcloud_endpoint: API base URL; default Hetzner's.
        location: Hetzner location of tenant servers; default ``nbg1`` (as the tenant program).
        server_types: plan → Hetzner server type; defaults ``cx23`` (light), ``cx33`` (heavy).
        ssh_key_names: Hetzner SSH key names put on tenant servers (ops access, archive).
        pulumi_home: ``PULUMI_HOME`` (plugins, credentials); ``None`` for ``~/.pulumi``.
        s3_endpoint: S3 endpoint of the archive bucket, e.g. ``https://fsn1.your-objectstorage.com``.
        s3_bucket: archive bucket; empty means archives go to ``archive_dir`` (local store).
        s3_access_key, s3_secret_key: S3 credentials of the archive bucket.
        s3_region: S3 signing region (Hetzner: the location, ``fsn1``).
        archive_dir: directory of the local object store used when ``s3_bucket`` is empty.
        ssh_key_path: private key the archive step uses to reach VMs over SSH (``root``).
        lock_dir: directory of the per-stack lock files.
        state_dir: directory of the provisioner's own records (scheduled downgrades).
        lock_timeout: how long to wait for a busy stack lock, seconds; default 900.
        retry_attempts: attempts per Pulumi operation on 429/5xx/concurrency; default 5.
        retry_base_delay: first backoff pause, seconds, doubled per attempt; default 2.
        retry_max_delay: longest backoff pause, seconds; default 60 (the API refills 1
            request per second: 3600 per hour).
        drift_delay: pause between two stack previews in ``hermes drift``, seconds; default 5
            (a refresh reads every resource of a stack from the API).
    """

    env: str
    hcloud_token: str
    snapshot_id: str
    network_id: str
    firewall_label: str
    control_url: str
    pulumi_backend_url: str
    pulumi_passphrase: str
    hcloud_endpoint: str = "https://api.hetzner.cloud/v1"
    location: str = "nbg1"
    server_types: dict[str, str] = field(
        default_factory=lambda: {"light": "cx23", "heavy": "cx33"})
    ssh_key_names: tuple[str, ...] = ()
    pulumi_home: str | None = None
    s3_endpoint: str | None = None
    s3_bucket: str = ""
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str | None = None
    archive_dir: str = "/var/lib/hermes/archives"
    ssh_key_path: str | None = None
    lock_dir: str = "/var/lib/hermes/locks"
    state_dir: str = "/var/lib/hermes/provisioner"
    lock_timeout: float = 900.0
    retry_attempts: int = 5
    retry_base_delay: float = 2.0
    retry_max_delay: float = 60.0
    drift_delay: float = 5.0

    def __post_init__(self):
        required = ("env", "hcloud_token", "snapshot_id", "network_id", "firewall_label",
                    "control_url", "pulumi_backend_url", "pulumi_passphrase")
        missing = [name for name in required if not getattr(self, name)]
        if missing:
            raise ConfigError(f"Hetzner provisioner settings missing: {', '.join(missing)}")
        unknown = set(self.server_types) ^ set(PLAN_ORDER)
        if unknown:
            raise ConfigError(f"server_types must name exactly the plans {PLAN_ORDER}")
        try:
            tc.parse_label_selector(self.firewall_label)
            tc.check_label_value(self.env, "env")
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def stack_name(self, tenant: str) -> str:
        """Return the tenant's stack name, ``{env}-tenant-{tenant}``."""
        return f"{self.env}-tenant-{tenant}"

    def tenant_of(self, stack_name: str) -> str | None:
        """Return the tenant of a tenant stack name of this environment, else ``None``."""
        prefix = f"{self.env}-tenant-"
        return stack_name[len(prefix):] if stack_name.startswith(prefix) else None

    def public_config(self) -> dict[str, ConfigEntry]:
        """Return the non-secret tenant stack config (keys of ``TENANT_CONFIG_KEYS``)."""
        values = {
            tc.ENV: self.env, tc.LOCATION: self.location, tc.SNAPSHOT_ID: str(self.snapshot_id),
            tc.NETWORK_ID: str(self.network_id), tc.FIREWALL_LABEL: self.firewall_label,
            tc.SERVER_TYPE_LIGHT: self.server_types["light"],
            tc.SERVER_TYPE_HEAVY: self.server_types["heavy"], tc.CONTROL_URL: self.control_url,
        }
        if self.ssh_key_names:
            values[tc.SSH_KEY_NAMES] = ",".join(self.ssh_key_names)
        return {key: ConfigEntry(value) for key, value in values.items()}

    def tenant_config(self, tenant: str, agent_env: dict[str, str]) -> dict[str, ConfigEntry]:
        """Return the full tenant stack config; the bus URL and agent token become secrets.

        Args:
            agent_env: ``MachineSpec.env``; must hold ``HERMES_BUS_URL`` (with the tenant's own
                ACL credentials) and ``HERMES_AGENT_TOKEN``.

        Raises:
            ProvisioningError: one of the two is missing or empty.
        """
        missing = [k for k in ("HERMES_BUS_URL", "HERMES_AGENT_TOKEN") if not agent_env.get(k)]
        if missing:
            raise ProvisioningError(f"cannot provision {tenant}: machine spec lacks {missing}")
        return {
            **self.public_config(),
            tc.BUS_URL: ConfigEntry(agent_env["HERMES_BUS_URL"], secret=True),
            tc.AGENT_TOKEN: ConfigEntry(agent_env["HERMES_AGENT_TOKEN"], secret=True),
        }

    def redacted(self) -> dict[str, object]:
        """Return the fields with every credential replaced by ``***`` (for logs and reports)."""
        secret = {"hcloud_token", "pulumi_passphrase", "s3_secret_key", "s3_access_key"}
        return {f.name: ("***" if f.name in secret and getattr(self, f.name) else
                         getattr(self, f.name)) for f in fields(self)}
