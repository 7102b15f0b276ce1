"""The ``Provisioner`` interface (DESIGN.md, "Contracts").

A provisioner owns the lifecycle of one machine per tenant.  Every method is idempotent:
calling ``provision`` twice for a tenant never creates a second machine.  Implementations:
``LocalProvisioner`` (embedded default: a supervised agent process per tenant on this host)
and ``HetznerProvisioner`` (Pulumi Automation API, one stack per tenant).
"""

from __future__ import annotations

import abc
import builtins
from dataclasses import dataclass, field
from enum import StrEnum

from control.errors import ProvisioningError
from control.providers.archive import ArchiveResult, ObjectStore

PLANS = ("light", "heavy")


@dataclass(frozen=True)
class MachineSpec:
    """What the agent on a tenant's machine needs to start.

    Attributes:
        tenant: tenant id (string).
        plan: ``light`` or ``heavy``.
        env: environment variables handed to the agent, named as in ``agent/config.py``:
            ``HERMES_TENANT``, ``HERMES_BUS_URL`` (the tenant's own ACL user),
            ``HERMES_AGENT_TOKEN``, ``HERMES_CONTROL_URL``, ``HERMES_DAILY_BUDGET_CENTS`` (the
            plan's, ``control.services.agent_settings.agent_env_for``), ``HERMES_TZ``, the LLM
            settings (``HERMES_LLM``/``HERMES_LLM_CHAIN``/``HERMES_MODEL``, ``ANTHROPIC_*``,
            ``OPENAI_*``, ``HERMES_OPENAI_MODEL``) and ``HERMES_BUS_CA_FILE`` (a path on the
            control host; ``HetznerProvisioner`` ships the file's text to the VM).  Remote
            provisioners carry exactly the variables of ``infra.tenant_config.AGENT_SETTINGS``.
            Secret values live here and must never be logged.
        restore_archive_key: an archive in the provisioner's ``store`` (a canceled tenant's
            data, ``control.services.lifecycle``) to restore into the agent's data dir before
            the agent serves anyone; ``None``: a fresh data dir.
    """

    tenant: str
    plan: str
    env: dict[str, str] = field(default_factory=dict)
    restore_archive_key: str | None = None


class ServerState(StrEnum):
    """The provider's view of a machine (``MachineStatus.state``; string values).

    Not ``control.models.MachineState``: that is the control plane's lifecycle of the tenant's
    machine, which moves on this view and on the agent's own lifecycle events.
    """

    ABSENT = "absent"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class MachineStatus:
    """The provider's view of one tenant's machine.

    Attributes:
        tenant: tenant id.
        state: a ``ServerState``.
        plan: the plan the machine is sized for, if known.
        address: how to reach it (a private IP, or ``pid:<n>`` for a local process), if any.
        detail: a short human-readable note (last error, server type, ...).
        labels: the labels the machine carries (``app``, ``env``, ``tenant``, ``plan``).
    """

    tenant: str
    state: str
    plan: str | None = None
    address: str | None = None
    detail: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolServerInfo:
    """One pre-booted warm-pool server as the provider sees it (issue 22).

    Attributes:
        provider_id: the provider's handle (Hetzner server id, local slot name).
        plan: the plan it is sized for.
        snapshot: the image it was built from (``Provisioner.pool_snapshot`` at its creation).
        location: where it runs (Hetzner location; ``""`` locally).
        address: how to reach it, if known.
        claimed_by: the tenant it was handed to (its ``tenant`` label), else ``None``.
    """

    provider_id: str
    plan: str
    snapshot: str
    location: str = ""
    address: str | None = None
    claimed_by: str | None = None


@dataclass(frozen=True)
class PoolClaim:
    """A pool server handed to a tenant (``Provisioner.claim_pool_server``).

    Attributes:
        status: the tenant's machine as the provider now sees it.
        boot_config: what the server's bootstrap fetches once (``agent.pool_boot``):
            ``{"env": {variable: value}, "files": {absolute path: text}}``; holds secrets.
    """

    status: MachineStatus
    boot_config: dict


class Provisioner(abc.ABC):
    """Lifecycle of one machine per tenant; all methods are idempotent.

    Attributes:
        store: the ``ObjectStore`` deprovision archives go to and restores read from (one
            format for every provider: ``control.providers.archive``, a gzipped tar of the
            agent's data dir with a manifest, under ``archive_key``).
    """

    store: ObjectStore

    @abc.abstractmethod
    def provision(self, spec: MachineSpec) -> MachineStatus:
        """Create (or adopt the existing) machine for ``spec.tenant`` and start its agent.

        Returns the machine's status once the provider reports it running.

        Raises:
            ProvisioningError: the machine could not be created or did not start.
        """

    @abc.abstractmethod
    def resize(self, tenant: str, plan: str) -> MachineStatus:
        """Change the tenant's machine to ``plan``'s size.

        Raises:
            ProvisioningError: unknown tenant or plan, or the provider refused.
        """

    @abc.abstractmethod
    def restart(self, tenant: str) -> MachineStatus:
        """Restart the tenant's agent on its kept data (an operator's "restart agent",
        mission control): the provider reboots the machine, so a hung agent or a wedged VM
        comes back too.  The agent reports ``ready`` itself; ``machine_health`` counts the
        reboot as downtime if it outlasts the missed heartbeats.

        Raises:
            ProvisioningError: the tenant has no running machine, or the provider refused.
        """

    @abc.abstractmethod
    def pause(self, tenant: str) -> MachineStatus:
        """Stop the tenant's agent and keep its machine and data (a canceled subscription's
        grace period); pausing a paused machine changes nothing.

        Raises:
            ProvisioningError: the tenant has no machine, or the provider refused.
        """

    @abc.abstractmethod
    def resume(self, tenant: str) -> MachineStatus:
        """Start a paused machine's agent again on its kept data; resuming a running one
        changes nothing.  Returns like ``provision``: the agent reports ``ready`` itself.

        Raises:
            ProvisioningError: the tenant has no machine, or the provider refused.
        """

    @abc.abstractmethod
    def deprovision(self, tenant: str, archive: bool = True) -> ArchiveResult | None:
        """Stop and delete the tenant's machine; archive its data to ``store`` first when
        ``archive``.

        Deprovisioning an absent machine is not an error.

        Returns:
            The stored archive, or ``None`` (no archive asked, or no machine).

        Raises:
            ProvisioningError: the archive or the deletion failed (nothing is deleted when the
                archive fails).
        """

    @abc.abstractmethod
    def status(self, tenant: str) -> MachineStatus:
        """Return the current status of the tenant's machine (``state='absent'`` if none)."""

    @abc.abstractmethod
    def list(self) -> list[MachineStatus]:
        """Return the status of every machine this provider manages."""

    # -- warm pool (issue 22, ``control.services.warm_pool``) --------------------------------
    def pool_snapshot(self) -> str | None:
        """Return the image new pool servers are built from, or ``None`` when this provider
        keeps no warm pool (then the pool is off and every machine is created cold)."""
        return None

    def create_pool_server(self, plan: str, pool_token: str, control_url: str) -> PoolServerInfo:
        """Boot an unassigned server of ``plan`` whose bootstrap polls
        ``{control_url}/api/pool/config`` with ``pool_token`` until it is handed a tenant's
        config, then starts the agent with it.

        Raises:
            ProvisioningError: this provider has no warm pool, or the create failed.
        """
        raise ProvisioningError(f"{type(self).__name__} keeps no warm pool")

    def claim_pool_server(self, provider_id: str, spec: MachineSpec) -> PoolClaim:
        """Make pool server ``provider_id`` the machine of ``spec.tenant`` (labels, records) and
        return the boot config its bootstrap will fetch; its agent starts once fetched.

        Raises:
            ProvisioningError: the server is gone or the provider refused.
        """
        raise ProvisioningError(f"{type(self).__name__} keeps no warm pool")

    def delete_pool_server(self, provider_id: str) -> None:
        """Delete an unassigned pool server; deleting an absent one is not an error.

        Raises:
            ProvisioningError: the provider refused.
        """
        raise ProvisioningError(f"{type(self).__name__} keeps no warm pool")

    def pool_servers(self) -> builtins.list[PoolServerInfo]:
        """Return every pool server this provider runs, claimed ones included."""
        return []

    def close(self) -> None:
        """Stop background work and release resources (local processes, connections)."""
