"""``HetznerConfig``: everything ``HetznerProvisioner`` needs, built once from settings.

The tenant stack config it produces follows ``infra.tenant_config.TENANT_CONFIG_KEYS`` (the
contract of ``infra.tenant.build``): the infrastructure keys from this config, the agent's
settings from ``MachineSpec.env`` through ``tc.AGENT_SETTINGS`` (secret keys flagged secret),
and the text of the files named by ``tc.AGENT_FILES`` (the Redis CA).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from control.errors import ConfigError, ProvisioningError
from control.providers.hetzner.workspace import ConfigEntry
from infra import tenant_config as tc

#: Project of the tenant stacks (one stack per tenant, ``{env}-tenant-{tenant}``).
TENANT_PROJECT = "hermes-tenants"
#: Project of the shared stack (``Pulumi.yaml`` ``name``), one stack per environment.
SHARED_PROJECT = "hermes-max"
#: Plan sizes, smallest first; resizing towards a lower index is a downgrade.
PLAN_ORDER = ("light", "heavy")
#: LLM backends the base image installs by default (``agent_image`` ``hermes_llm_backends``).
IMAGE_LLM_BACKENDS = ("anthropic", "openai_compat")


@dataclass(frozen=True)
class TenantProgram:
    """The inline Pulumi program of one tenant stack: ``infra.tenant.build(tenant, plan)``;
    ``adopt``: a claimed warm-pool server's id to import (``build``'s ``adopt``)."""

    tenant: str
    plan: str
    adopt: str | None = None

    def __call__(self) -> None:
        # deferred: infra.tenant imports pulumi, pulumi_hcloud (~0.2 s); only Pulumi runs this
        from infra.tenant import build

        build(self.tenant, self.plan, adopt=self.adopt)


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
        known_hosts_dir: the machines' pinned SSH host keys (``host_keys.HostKeyStore``).
        lock_timeout: how long to wait for a busy stack lock, seconds; default 900.
        retry_attempts: attempts per Pulumi operation on 429/5xx/concurrency; default 5.
        retry_base_delay: first backoff pause, seconds, doubled per attempt; default 2.
        retry_max_delay: longest backoff pause, seconds; default 60 (the API refills 1
            request per second: 3600 per hour).
        drift_delay: pause between two stack previews in ``hermes drift``, seconds; default 5
            (a refresh reads every resource of a stack from the API).
        image_llm_backends: LLM backends the pinned snapshot's image installs (the image
            build's ``hermes_llm_backends``, also its snapshot label ``llm-backends``); default
            ``anthropic``, ``openai_compat``. A chain naming another backend is refused at
            provision time: the agent could not import it and would crash-loop.
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
    known_hosts_dir: str = "/var/lib/hermes/known_hosts"
    lock_timeout: float = 900.0
    retry_attempts: int = 5
    retry_base_delay: float = 2.0
    retry_max_delay: float = 60.0
    drift_delay: float = 5.0
    image_llm_backends: tuple[str, ...] = IMAGE_LLM_BACKENDS

    def __post_init__(self):
        required = ("env", "hcloud_token", "snapshot_id", "network_id", "firewall_label",
                    "control_url", "pulumi_backend_url", "pulumi_passphrase")
        missing = [name for name in required if not getattr(self, name)]
        if missing:
            raise ConfigError(f"Hetzner provisioner settings missing: {', '.join(missing)}")
        unknown = set(self.server_types) ^ set(PLAN_ORDER)
        if unknown:
            raise ConfigError(f"server_types must name exactly the plans {PLAN_ORDER}")
        unknown_backends = set(self.image_llm_backends) - set(tc.LLM_BACKENDS)
        if unknown_backends or not self.image_llm_backends:
            raise ConfigError(f"image_llm_backends must be some of {tc.LLM_BACKENDS}, "
                              f"not {self.image_llm_backends}")
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
        """Return the full tenant stack config for ``tenant``'s agent.

        Every ``tc.AGENT_SETTINGS`` entry whose variable is set in ``agent_env`` becomes its
        config key (``secret=True`` for API keys, bus URL and agent token: Pulumi encrypts
        them in state and the tenant program reads them with ``require_secret``); every
        ``tc.AGENT_FILES`` variable names a file on this host whose text becomes its key.
        ``hermes:controlUrl`` comes from ``control_url``.

        Args:
            agent_env: ``MachineSpec.env``: ``HERMES_BUS_URL`` (the tenant's own ACL user),
                ``HERMES_AGENT_TOKEN``, ``HERMES_DAILY_BUDGET_CENTS`` and the LLM settings;
                optional ``HERMES_TZ`` and ``HERMES_BUS_CA_FILE`` (path of the Redis CA PEM).

        Raises:
            ProvisioningError: a required variable is missing; the LLM chain is unusable
                (``anthropic`` without ``ANTHROPIC_API_KEY``, ``openai_compat`` without
                ``OPENAI_BASE_URL``, a backend not in ``image_llm_backends``; code
                ``llm_not_configured``); ``HERMES_TZ`` is not an IANA zone; the CA file is
                unreadable or not PEM. Raised before any stack exists, so no VM boots into a
                crash loop.
        """
        required = [spec.agent_variable for spec in tc.AGENT_SETTINGS
                    if not (spec.optional or spec.default) and spec.key != tc.CONTROL_URL]
        missing = [name for name in required if not agent_env.get(name)]
        if missing:
            raise ProvisioningError(f"cannot provision {tenant}: machine spec lacks {missing}")
        try:
            tc.check_llm_settings(agent_env, self.image_llm_backends)
        except ValueError as err:
            raise ProvisioningError(f"cannot provision {tenant}: {err}",
                                    code="llm_not_configured") from err
        _check_time_zone(tenant, agent_env.get("HERMES_TZ", ""))
        entries = {spec.key: ConfigEntry(agent_env[spec.agent_variable], secret=spec.secret)
                   for spec in tc.AGENT_SETTINGS if agent_env.get(spec.agent_variable)}
        for agent_file in tc.AGENT_FILES:
            if agent_env.get(agent_file.env_var):
                entries[agent_file.key] = ConfigEntry(
                    _read_pem(tenant, agent_env[agent_file.env_var]),
                    secret=tc.TENANT_CONFIG_KEYS[agent_file.key].secret)
        return {**entries, **self.public_config()}

    def redacted(self) -> dict[str, object]:
        """Return the fields with every credential replaced by ``***`` (for logs and reports)."""
        secret = {"hcloud_token", "pulumi_passphrase", "s3_secret_key", "s3_access_key"}
        return {f.name: ("***" if f.name in secret and getattr(self, f.name) else
                         getattr(self, f.name)) for f in fields(self)}


def _check_time_zone(tenant: str, zone: str) -> None:
    """Refuse a ``HERMES_TZ`` the agent would refuse (it must name an IANA zone)."""
    if not zone:
        return
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ProvisioningError(f"cannot provision {tenant}: HERMES_TZ {zone!r} is not an IANA "
                                "time zone") from err


def _read_pem(tenant: str, path: str) -> str:
    """Return the PEM text at ``path`` (a CA certificate the agent must trust)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ProvisioningError(f"cannot provision {tenant}: cannot read {path}: {err}") from err
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ProvisioningError(f"cannot provision {tenant}: {path} holds no PEM certificate")
    return text
