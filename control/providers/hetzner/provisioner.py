"""``HetznerProvisioner``: one Pulumi stack per tenant, run through the Automation API.

Each tenant gets stack ``{env}-tenant-{tenant}`` in project ``hermes-tenants`` whose inline
program is ``infra.tenant.build(tenant, plan)`` (one server from the pinned snapshot, labelled
``app, env, tenant, plan``).  Around the Pulumi calls this module adds what a fleet needs:

* a per-stack file lock (``locking``), so two workers never run one stack at once;
* retries with backoff on Hetzner 429/5xx and concurrent updates, and recovery of interrupted
  updates (``stacks``); servers a dropped pending create left behind are deleted;
* server type validation against ``GET /v1/server_types`` before every create or resize;
* resize: upgrades now, downgrades at the billing period end (``resizes``);
* deprovision: archive ``/var/lib/hermes`` to object storage FIRST, then ``destroy`` and
  ``remove_stack``; a failed archive destroys nothing;
* pause/resume (a canceled subscription's grace period): power the server off/on through the
  hcloud API, disk kept; provision with ``restore_archive_key``: restore the archive over SSH
  right after ``up``, before the control plane waits for the agent;
* an orphan sweep through the hcloud API (``reconcile``) and drift checks
  (``drift``);
* a warm pool (issue 22, ``control.services.warm_pool``): pool servers are created straight
  through the hcloud API from the pinned snapshot, labelled ``app, env, pool=<plan>,
  snapshot=<id>`` (no ``tenant`` label, so the tenant sweep leaves them to the pool's sweep),
  with only a one-time pool token and the control URL in their ``user_data``
  (``tc.render_pool_cloud_init``).  A claim renames and relabels the server as the tenant's,
  then the tenant's stack imports it (``TenantProgram.adopt``), under the stack lock as
  ``provision``; the tenant's config reaches the server through its bootstrap's fetch.
"""

from __future__ import annotations

import builtins
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from control.errors import ProvisioningError
from control.providers.archive import (
    ArchiveResult,
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    archive_key,
    read_archive,
)
from control.providers.base import (
    PLANS,
    MachineSpec,
    MachineStatus,
    PoolClaim,
    PoolServerInfo,
    Provisioner,
    ServerState,
)
from control.providers.hetzner.api_budget import CREATE_REQUESTS, UP_REQUESTS, ApiBudget
from control.providers.hetzner.archive import DataArchiver, DataRestorer, SshTarArchiver
from control.providers.hetzner.config import (
    PLAN_ORDER,
    SHARED_PROJECT,
    TENANT_PROJECT,
    HetznerConfig,
    TenantProgram,
)
from control.providers.hetzner.drift import check_drift
from control.providers.hetzner.host_keys import HostKeyStore
from control.providers.hetzner.locking import StackLock
from control.providers.hetzner.reconcile import SweepReport, find_orphans, server_address
from control.providers.hetzner.resizes import ScheduledResize, ScheduledResizes
from control.providers.hetzner.stacks import (
    SERVER_TYPE_TOKEN,
    RetryPolicy,
    StackRunner,
    tracked_server_ids,
)
from control.providers.hetzner.workspace import (
    ConfigEntry,
    PulumiStackWorkspace,
    StackRef,
    StackWorkspace,
)
from infra import hetzner_api
from infra import tenant_config as tc

log = structlog.get_logger(__name__)

# Hetzner server ``status`` values (docs.hetzner.cloud, "Servers") → MachineStatus.state.
_STATES = {"running": ServerState.RUNNING, "initializing": ServerState.PROVISIONING,
           "starting": ServerState.PROVISIONING, "rebuilding": ServerState.PROVISIONING,
           "migrating": ServerState.PROVISIONING, "stopping": ServerState.STOPPED,
           "off": ServerState.STOPPED, "deleting": ServerState.STOPPED,
           "unknown": ServerState.FAILED}


class HetznerProvisioner(Provisioner):
    """Tenant machines on Hetzner Cloud, managed as Pulumi stacks.

    Args:
        config: see ``HetznerConfig``.
        workspace: the Pulumi boundary; default ``PulumiStackWorkspace`` (needs the CLI).
        hcloud_client: an ``hcloud.Client``; default one for ``config.hcloud_endpoint``.
        store: archive store; default S3 when ``config.s3_bucket`` is set, else local.
        archiver: how agent data leaves a VM; default ``SshTarArchiver`` over SSH.
        restorer: how an archive reaches a new VM (``provision`` with ``restore_archive_key``);
            default ``SshTarArchiver.restore`` over SSH with ``force``.
        sleep: pause function for retries and lock waits (tests inject a recorder).
        budget: the hcloud API budget each ``up`` and pool create takes from first
            (``api_budget``); default one of this process.
    """

    def __init__(self, config: HetznerConfig, *, workspace: StackWorkspace | None = None,
                 hcloud_client=None, store: ObjectStore | None = None,
                 archiver: DataArchiver | None = None, restorer: DataRestorer | None = None,
                 sleep: Callable[[float], None] = time.sleep, budget: ApiBudget | None = None):
        self.config = config
        self.budget = budget or ApiBudget(sleep=sleep)
        self.workspace = workspace or PulumiStackWorkspace(
            config.pulumi_backend_url, config.pulumi_passphrase, pulumi_home=config.pulumi_home,
            env_vars={"HCLOUD_TOKEN": config.hcloud_token, "HCLOUD_ENDPOINT": config.hcloud_endpoint},
        )
        self.hcloud = hcloud_client or hetzner_api.make_client(config.hcloud_token,
                                                               config.hcloud_endpoint)
        self.store = store or (
            S3ObjectStore(config.s3_bucket, endpoint_url=config.s3_endpoint,
                          access_key=config.s3_access_key, secret_key=config.s3_secret_key,
                          region=config.s3_region)
            if config.s3_bucket else LocalObjectStore(config.archive_dir))
        self.host_keys = HostKeyStore(Path(config.known_hosts_dir))
        ssh = SshTarArchiver(key_path=config.ssh_key_path, host_keys=self.host_keys)
        self.archiver = archiver or ssh
        self.restorer = restorer or functools.partial(ssh.restore, force=True)
        self.lock = StackLock(config.lock_dir, timeout=config.lock_timeout, sleep=sleep)
        self.runner = StackRunner(
            self.workspace,
            RetryPolicy(config.retry_attempts, config.retry_base_delay, config.retry_max_delay,
                        sleep),
            on_recovered=self._remove_untracked_servers,
        )
        self.resizes = ScheduledResizes(config.state_dir, self.lock)

    # -- naming -----------------------------------------------------------------------------
    def stack_ref(self, tenant: str, plan: str = "light") -> StackRef:
        """Return the tenant's stack reference with the program for ``plan``."""
        return StackRef(TENANT_PROJECT, self.config.stack_name(tenant), TenantProgram(tenant, plan))

    def shared_stack_ref(self, work_dir: str) -> StackRef:
        """Return the environment's shared stack (``Pulumi.yaml`` in ``work_dir``)."""
        return StackRef(SHARED_PROJECT, self.config.env, work_dir=work_dir)

    def tenant_stacks(self) -> list[str]:
        """Return the tenants that have a stack in this environment, sorted."""
        names = self.runner.list_stacks(TENANT_PROJECT)
        return sorted(t for t in map(self.config.tenant_of, names) if t)

    def _labels(self, tenant: str | None = None) -> dict[str, str]:
        labels = {"app": "hermes", "env": self.config.env}
        return {**labels, "tenant": tenant} if tenant else labels

    # -- checks -----------------------------------------------------------------------------
    @staticmethod
    def _check(tenant: str, plan: str | None = None) -> None:
        try:
            tc.check_label_value(tenant, "tenant id")
        except ValueError as err:
            raise ProvisioningError(str(err)) from err
        if not tenant:
            raise ProvisioningError("tenant id is empty")
        if plan is not None and plan not in PLANS:
            raise ProvisioningError(f"unknown plan {plan!r}; expected one of {PLANS}")

    def validate_server_type(self, plan: str) -> hetzner_api.ServerTypeInfo:
        """Check ``plan``'s configured server type against the Hetzner API now.

        Raises:
            ProvisioningError: the type is unknown, deprecated or unavailable at the location,
                or the API could not be asked.
        """
        from hcloud import APIException

        name = self.config.server_types[plan]
        try:
            return hetzner_api.validate_server_types(self.hcloud, [name],
                                                     self.config.location)[name]
        except hetzner_api.ServerTypeRejected as err:
            raise ProvisioningError(f"plan {plan}: {err}", code="server_type_rejected") from err
        except APIException as err:
            raise ProvisioningError(f"Hetzner API error while checking server types: {err}") \
                from err

    # -- Provisioner ------------------------------------------------------------------------
    def provision(self, spec: MachineSpec) -> MachineStatus:
        """Create or update the tenant's stack so exactly one server runs ``spec.plan``.

        Idempotent: a second call finds the stack and its server and changes nothing.

        Raises:
            ProvisioningError: bad tenant/plan, missing secrets in ``spec.env``, rejected server
                type, or a Pulumi failure that retries could not overcome.
        """
        self._check(spec.tenant, spec.plan)
        host_key = self.host_keys.ensure(spec.tenant)  # pinned before the VM exists
        config = {**self.config.tenant_config(spec.tenant, spec.env),
                  tc.SSH_HOST_KEY: ConfigEntry(host_key.private, secret=True),
                  tc.SSH_HOST_PUBLIC_KEY: ConfigEntry(host_key.public)}
        self.validate_server_type(spec.plan)
        archive = read_archive(self.store, spec.restore_archive_key) if spec.restore_archive_key \
            else None
        ref = self.stack_ref(spec.tenant, spec.plan)
        with self.lock.hold(ref.name):
            self.runner.ensure(ref)
            self.runner.set_config(ref, config)
            self.runner.recover(ref)
            self.budget.take(UP_REQUESTS)
            outputs = self.runner.up(ref)
            if archive is not None:
                self._restore(spec.tenant, outputs.get("private_ip"), archive)
        log.info("tenant_provisioned", tenant=spec.tenant, plan=spec.plan,
                 server_id=outputs.get("server_id"), restored=spec.restore_archive_key)
        return self._status_from_outputs(spec.tenant, outputs)

    def _restore(self, tenant: str, address: str | None, archive: bytes) -> None:
        """Restore ``archive`` onto the new VM over SSH, retrying while it boots.

        The image starts the agent's units at boot; the restore stops them, replaces the
        stores a first start made (``agent.backup restore --force``) and starts them again
        (``SshTarArchiver.restore_command``).  The control plane treats the machine as booting
        only after this, and ``run_provisioning`` ignores lifecycle events from before it.

        Raises:
            ProvisioningError: every attempt failed; its code is ``provisioning_transient``
                (``control.services.provisioning.TRANSIENT_CODE``), so provisioning is retried
                and the restore with it (``up`` finds the server, the restore is idempotent).
        """
        report = self._over_ssh(f"restoring tenant {tenant}'s archive",
                                lambda: self.restorer(tenant, address, archive))
        log.info("tenant_restored", tenant=tenant, report=report)

    def _over_ssh(self, what: str, step: Callable[[], Any]) -> Any:
        """Run an SSH ``step`` on a VM that may still be booting, with the API retry backoff.

        Raises:
            ProvisioningError: the last attempt failed (code ``provisioning_transient``).
        """
        for attempt in range(1, self.config.retry_attempts + 1):
            try:
                return step()
            except ProvisioningError as err:
                if attempt == self.config.retry_attempts:
                    raise ProvisioningError(f"{what} failed: {err}",
                                            code="provisioning_transient") from err
                # sshd is not up before the VM has booted: back off as for API retries.
                self.runner.policy.sleep(min(self.config.retry_base_delay * 2 ** (attempt - 1),
                                             self.config.retry_max_delay))
        raise AssertionError("unreachable: retry_attempts >= 1")

    def pause(self, tenant: str) -> MachineStatus:
        """Power the tenant's server off through the hcloud API (``poweroff``); its disk,
        and so the agent's data, is kept.  The agent's SQLite stores are written in WAL
        mode, whose committed transactions survive a power cut (https://sqlite.org/wal.html).

        Raises:
            ProvisioningError: no machine, or the Hetzner API refused.
        """
        return self._power(tenant, on=False)

    def resume(self, tenant: str) -> MachineStatus:
        """Power the tenant's server on (``poweron``); its units start the agent at boot.

        Raises:
            ProvisioningError: no machine, or the Hetzner API refused.
        """
        return self._power(tenant, on=True)

    def restart(self, tenant: str) -> MachineStatus:
        """Reboot the tenant's server through the hcloud API (``reboot``: an ACPI restart, so
        systemd stops the agent cleanly and starts it at boot; its disk is kept).

        Raises:
            ProvisioningError: no server, or the Hetzner API refused.
        """
        from hcloud import APIException

        def reboot(server_id: int) -> None:
            try:
                self.hcloud.servers.get_by_id(server_id).reboot().wait_until_finished()
            except APIException as err:
                raise ProvisioningError(f"Hetzner API error rebooting server {server_id}: {err}") \
                    from err

        return self._on_server(tenant, "restart", reboot, "tenant_restarted")

    def _power(self, tenant: str, on: bool) -> MachineStatus:
        return self._on_server(tenant, f"power {'on' if on else 'off'}",
                               lambda server_id: self._set_power(server_id, on),
                               "tenant_resumed" if on else "tenant_paused")

    def _on_server(self, tenant: str, what: str, act, event: str) -> MachineStatus:
        """Run ``act(server id)`` on the tenant's server under its stack lock, log ``event``
        and return the machine's status; ``what`` names the action in the error."""
        self._check(tenant)
        ref = self.stack_ref(tenant)
        with self.lock.hold(ref.name):
            server_id = self.runner.outputs(ref).get("server_id") if self.runner.exists(ref) \
                else None
            if not server_id:
                raise ProvisioningError(f"tenant {tenant} has no server to {what}")
            act(int(server_id))
        log.info(event, tenant=tenant, server_id=server_id)
        return self._status_from_outputs(tenant, self.runner.outputs(ref))

    def _set_power(self, server_id: int, on: bool) -> bool:
        """Power the server on (when it is ``off``) or off (unless it is); return whether it
        changed."""
        from hcloud import APIException

        try:
            server = self.hcloud.servers.get_by_id(server_id)
            if (server.status == "off") != on:
                return False
            action = server.power_on() if on else server.power_off()
            action.wait_until_finished()
        except APIException as err:
            raise ProvisioningError(f"Hetzner API error powering server {server_id} "
                                    f"{'on' if on else 'off'}: {err}") from err
        return True

    def resize(self, tenant: str, plan: str, at_period_end: bool | None = None) -> MachineStatus:
        """Move the tenant to ``plan``: now, or at the end of the billing period.

        Args:
            at_period_end: ``True`` records the change for ``apply_scheduled_resize``;
                ``False`` applies it now; ``None`` (default) defers downgrades and applies
                upgrades now (``PLAN_ORDER``).

        Returns:
            The machine's status; a deferred resize says so in ``detail`` (see also
            ``scheduled_resizes``).

        Raises:
            ProvisioningError: unknown tenant or plan, rejected type, or a Pulumi failure.
        """
        self._check(tenant, plan)
        ref = self.stack_ref(tenant, plan)
        if not self.runner.exists(ref):
            raise ProvisioningError(f"tenant {tenant} has no machine to resize")
        current = self.runner.outputs(ref).get("plan")
        if current == plan:
            self.resizes.cancel(tenant)
            return self.status(tenant)
        downgrade = current in PLAN_ORDER and PLAN_ORDER.index(plan) < PLAN_ORDER.index(current)
        if downgrade if at_period_end is None else at_period_end:
            record = self.resizes.schedule(tenant, current or "", plan)  # "": no plan output
            log.info("tenant_resize_scheduled", tenant=tenant, from_plan=current, to_plan=plan)
            return replace(self.status(tenant), detail=(
                f"resize {current} -> {plan} scheduled for the end of the billing period "
                f"(requested {record.requested_at})"))
        self.validate_server_type(plan)
        with self.lock.hold(ref.name):
            self.runner.set_config(ref, self.config.public_config())
            self.runner.recover(ref)
            self.budget.take(UP_REQUESTS)
            outputs = self.runner.up(ref)
        self.resizes.cancel(tenant)
        log.info("tenant_resized", tenant=tenant, from_plan=current, to_plan=plan)
        return self._status_from_outputs(tenant, outputs)

    def scheduled_resizes(self) -> list[ScheduledResize]:
        """Return the downgrades waiting for their period end."""
        return self.resizes.all()

    def apply_scheduled_resize(self, tenant: str) -> MachineStatus | None:
        """Apply ``tenant``'s scheduled downgrade now (billing calls this at the period end).

        Returns ``None`` when nothing was scheduled.
        """
        record = self.resizes.get(tenant)
        if record is None:
            return None
        return self.resize(tenant, record.to_plan, at_period_end=False)

    def deprovision(self, tenant: str, archive: bool = True) -> ArchiveResult | None:
        """Archive the agent's data (when ``archive``), then destroy and remove the stack.

        Returns:
            The stored archive, or ``None`` (no archive asked, or no machine).

        Raises:
            ProvisioningError: the archive failed (then nothing was destroyed), or the
                destroy/remove failed after retries.
        """
        self._check(tenant)
        ref = self.stack_ref(tenant)
        result = None
        with self.lock.hold(ref.name):
            if not self.runner.exists(ref):
                self.resizes.cancel(tenant)
                self.host_keys.remove(tenant)
                return None
            outputs = self.runner.outputs(ref)
            if archive and outputs.get("server_id"):
                meta = {"server-id": str(outputs["server_id"])}
                if self._set_power(int(outputs["server_id"]), on=True):
                    # A paused (powered-off) server is booted to be read; the archiver stops
                    # the agent's units before the tar, and sshd may need a moment.
                    result = self._over_ssh(f"archiving tenant {tenant}'s data", lambda: self._archive(
                        tenant, outputs.get("private_ip"), meta))
                else:
                    result = self._archive(tenant, outputs.get("private_ip"), meta)
            self.runner.destroy(ref)
            self.runner.remove(ref)
            self.host_keys.remove(tenant)  # the key is trusted no longer than its machine
        self.resizes.cancel(tenant)
        log.info("tenant_deprovisioned", tenant=tenant, archive=result and result.key)
        return result

    def status(self, tenant: str) -> MachineStatus:
        """Return the tenant's machine status (``absent`` without a stack)."""
        ref = self.stack_ref(tenant)
        if self.lock.is_held(ref.name):
            return MachineStatus(tenant, ServerState.PROVISIONING,
                                 detail="a stack operation is running")
        if not self.runner.exists(ref):
            return MachineStatus(tenant, ServerState.ABSENT)
        return self._status_from_outputs(tenant, self.runner.outputs(ref))

    def list(self) -> list[MachineStatus]:
        """Return one status per tenant stack, plus servers labelled for a tenant without one."""
        stacks = set(self.tenant_stacks())
        by_tenant: dict[str, list] = {}
        for server in hetzner_api.list_servers(self.hcloud, self._labels()):
            if tenant := (server.labels or {}).get("tenant"):
                by_tenant.setdefault(tenant, []).append(server)
        statuses = []
        for tenant in sorted(stacks | set(by_tenant)):
            servers = by_tenant.get(tenant, [])
            if not servers:
                busy = self.lock.is_held(self.config.stack_name(tenant))
                state = ServerState.PROVISIONING if busy else ServerState.FAILED
                statuses.append(MachineStatus(tenant, state,
                                              detail="" if busy else "stack has no server"))
                continue
            status = self._machine_status(tenant, servers[0])
            note = "" if tenant in stacks else "orphan: no stack; "
            if len(servers) > 1:
                note += f"{len(servers)} servers carry this tenant label; "
            statuses.append(replace(status, detail=note + status.detail))
        return statuses

    # -- warm pool --------------------------------------------------------------------------
    def pool_snapshot(self) -> str | None:
        """See ``Provisioner.pool_snapshot``: the pinned snapshot id."""
        return str(self.config.snapshot_id)

    def create_pool_server(self, plan: str, pool_token: str, control_url: str) -> PoolServerInfo:
        """See ``Provisioner.create_pool_server``: ``POST /v1/servers`` from the snapshot, one
        API request plus the create action's polls; its SSH host key is pinned first.

        Raises:
            ProvisioningError: unknown plan, or the Hetzner API refused (429s are transient).
        """
        from hcloud import APIException
        from hcloud.images import Image
        from hcloud.locations import Location
        from hcloud.networks import Network
        from hcloud.server_types import ServerType
        from hcloud.ssh_keys import SSHKey

        self._check("pool", plan)
        name = f"hermes-{self.config.env}-pool-{plan}-{secrets.token_hex(4)}"
        host_key = self.host_keys.ensure(name)
        labels = {**tc.parse_label_selector(self.config.firewall_label), "app": "hermes",
                  "env": self.config.env, "pool": plan, "snapshot": str(self.config.snapshot_id)}
        user_data = tc.render_pool_cloud_init(pool_token, control_url, {
            tc.SSH_HOST_KEY: host_key.private, tc.SSH_HOST_PUBLIC_KEY: host_key.public})
        self.budget.take(CREATE_REQUESTS)
        try:
            created = self.hcloud.servers.create(
                name=name, server_type=ServerType(name=self.config.server_types[plan]),
                image=Image(id=int(self.config.snapshot_id)),
                location=Location(name=self.config.location), labels=labels,
                user_data=user_data, networks=[Network(id=int(self.config.network_id))],
                ssh_keys=[SSHKey(name=k) for k in self.config.ssh_key_names])
        except APIException as err:
            self.host_keys.remove(name)
            # The cause tells a retry-worthy code (``provisioning.is_transient``).
            raise ProvisioningError(f"Hetzner API error creating pool server: {err}") from err
        log.info("pool_server_created", plan=plan, server_id=created.server.id)
        return PoolServerInfo(provider_id=str(created.server.id), plan=plan,
                              snapshot=str(self.config.snapshot_id), location=self.config.location)

    def claim_pool_server(self, provider_id: str, spec: MachineSpec) -> PoolClaim:
        """See ``Provisioner.claim_pool_server``: rename and relabel the server as the tenant's
        (``infra.tenant``'s name and labels, so Pulumi's import matches), move its pinned host
        key to the tenant, then ``up`` the tenant's stack importing it.  Idempotent: a retry
        finds the stack tracking the server.

        Raises:
            ProvisioningError: bad tenant/plan or settings, the server is gone, or the API or
                Pulumi refused.
        """
        from hcloud import APIException

        self._check(spec.tenant, spec.plan)
        settings = self.config.tenant_config(spec.tenant, spec.env)  # validates before any change
        ref = StackRef(TENANT_PROJECT, self.config.stack_name(spec.tenant),
                       TenantProgram(spec.tenant, spec.plan, adopt=provider_id))
        with self.lock.hold(ref.name):
            tracked = self.runner.outputs(ref).get("server_id") if self.runner.exists(ref) \
                else None
            if tracked not in (None, provider_id):
                raise ProvisioningError(f"tenant {spec.tenant}'s stack has server {tracked} "
                                        "already; not claiming a pool server")
            try:
                server = self.hcloud.servers.get_by_id(int(provider_id))
                server.update(name=tc.server_name(self.config.env, spec.tenant), labels={
                    **tc.parse_label_selector(self.config.firewall_label), "app": "hermes",
                    "env": self.config.env, "tenant": spec.tenant, "plan": spec.plan})
            except APIException as err:
                raise ProvisioningError(f"Hetzner API error claiming pool server {provider_id}: "
                                        f"{err}") from err
            host_key = self.host_keys.adopt(server.name, spec.tenant)
            config = {**settings, tc.SSH_HOST_KEY: ConfigEntry(host_key.private, secret=True),
                      tc.SSH_HOST_PUBLIC_KEY: ConfigEntry(host_key.public)}
            self.runner.ensure(ref)
            self.runner.set_config(ref, config)
            self.runner.recover(ref)
            self.budget.take(UP_REQUESTS)
            outputs = self.runner.up(ref)
        values = {key: entry.value for key, entry in settings.items()}
        boot = {"env": tc.agent_env(spec.tenant, values),
                "files": {f.path: values[f.key] for f in tc.AGENT_FILES if values.get(f.key)}}
        log.info("pool_server_claimed", tenant=spec.tenant, server_id=provider_id)
        return PoolClaim(self._status_from_outputs(spec.tenant, outputs), boot)

    def delete_pool_server(self, provider_id: str) -> None:
        """See ``Provisioner.delete_pool_server``: ``DELETE /v1/servers/{id}`` (absent: fine)
        and its pinned host key.

        Raises:
            ProvisioningError: the Hetzner API refused.
        """
        from hcloud import APIException

        try:
            server = self.hcloud.servers.get_by_id(int(provider_id))
            hetzner_api.delete_server(self.hcloud, server.id)
            self.host_keys.remove(server.name)
        except APIException as err:
            if err.code != "not_found":
                raise ProvisioningError(f"Hetzner API error deleting pool server {provider_id}: "
                                        f"{err}") from err

    def pool_servers(self) -> builtins.list[PoolServerInfo]:
        """See ``Provisioner.pool_servers``: servers labelled ``pool`` in this environment (one
        paginated listing)."""
        return [PoolServerInfo(provider_id=str(server.id), plan=server.labels["pool"],
                               snapshot=server.labels.get("snapshot", ""),
                               location=server.location.name if server.location else "",
                               address=server_address(server),
                               claimed_by=server.labels.get("tenant"))
                for server in hetzner_api.list_servers(self.hcloud, self._labels())
                if (server.labels or {}).get("pool")]

    # -- sweeps and drift -------------------------------------------------------------------
    def reconcile(self, known_tenants: set[str] | None = None, remove: bool = False
                  ) -> SweepReport:
        """Find (and with ``remove``, delete) orphaned tenant servers; see ``reconcile``.

        Removal keeps data: an orphan whose tenant still has a stack is deprovisioned through
        it (archive, destroy, remove); any other orphan is archived, then deleted through the
        hcloud API.  A failed archive leaves the server in place and is reported.
        """
        tracked = {}
        for tenant in self.tenant_stacks():
            tracked[tenant] = self.runner.outputs(self.stack_ref(tenant)).get("server_id")
        servers = hetzner_api.list_servers(self.hcloud, self._labels())
        report = find_orphans(servers, tracked, known_tenants,
                              busy=lambda t: self.lock.is_held(self.config.stack_name(t)))
        if not remove:
            return report
        for orphan in report.orphans:
            try:
                if orphan.reason == "inactive_tenant":
                    self.deprovision(orphan.tenant, archive=True)
                else:
                    key = archive_key(self.config.env, orphan.tenant).replace(
                        ".tar.gz", f"-server{orphan.server_id}.tar.gz")
                    self._archive(orphan.tenant, orphan.address,
                                  {"server-id": str(orphan.server_id), "reason": orphan.reason},
                                  key=key)
                    hetzner_api.delete_server(self.hcloud, orphan.server_id)
                report.removed.append(orphan.server_id)
            except Exception as err:  # noqa: BLE001 - one failing orphan must not stop the sweep
                report.failures[orphan.server_id] = str(err)
        return report

    def drift(self, work_dir: str, known_tenants: set[str] | None = None,
              delay: float | None = None, sweep: bool = True):
        """Preview the shared stack (``Pulumi.yaml`` in ``work_dir``) and every tenant stack for
        drift, ``delay`` seconds apart (default ``config.drift_delay``), then sweep orphans
        (report only) when ``sweep``.

        Returns a ``drift.DriftReport``.
        """
        refs = [self.stack_ref(t) for t in self.tenant_stacks()]
        return check_drift(
            self.runner, self.shared_stack_ref(work_dir), refs,
            delay=self.config.drift_delay if delay is None else delay,
            sleep=self.runner.policy.sleep,
            sweep=(lambda: self.reconcile(known_tenants, remove=False)) if sweep else None,
        )

    # -- helpers ----------------------------------------------------------------------------
    def _archive(self, tenant: str, address: str | None, metadata: dict[str, str],
                 key: str | None = None) -> ArchiveResult:
        key = key or archive_key(self.config.env, tenant)
        meta = {"tenant": tenant, "env": self.config.env, **metadata}
        try:
            result = self.archiver(tenant, address, self.store, key, meta)
        except ProvisioningError:
            raise
        except Exception as err:
            raise ProvisioningError(f"archiving tenant {tenant}'s data failed: {err}") from err
        log.info("tenant_archived", tenant=tenant, key=result.key, bytes=result.bytes)
        return result

    def _status_from_outputs(self, tenant: str, outputs: dict[str, Any]) -> MachineStatus:
        from hcloud import APIException

        server_id = outputs.get("server_id")
        if not server_id:
            return MachineStatus(tenant, ServerState.FAILED, plan=outputs.get("plan"),
                                 detail="stack has no server")
        try:
            server = self.hcloud.servers.get_by_id(int(server_id))
        except APIException as err:
            if err.code != "not_found":
                raise ProvisioningError(f"Hetzner API error reading server {server_id}: {err}") \
                    from err
            return MachineStatus(tenant, ServerState.FAILED, plan=outputs.get("plan"),
                                 detail=f"server {server_id} in the stack state is gone")
        return self._machine_status(tenant, server)

    def _machine_status(self, tenant: str, server) -> MachineStatus:
        labels = dict(server.labels or {})
        detail = (f"server {server.id} {server.name}, type {server.server_type.name}, "
                  f"hcloud status {server.status}")
        scheduled = self.resizes.get(tenant)
        if scheduled:
            detail += f"; resize to {scheduled.to_plan} scheduled for the period end"
        state = _STATES.get(server.status, ServerState.FAILED)
        return MachineStatus(tenant, state, plan=labels.get("plan"), address=server_address(server),
                             detail=detail, labels=labels)

    def _remove_untracked_servers(self, ref: StackRef, pending: builtins.list[dict]) -> None:
        """After dropping pending creates, delete the tenant's servers the state does not track
        (the create reached Hetzner but its result never reached the state)."""
        creates = [p for p in pending if p.get("type") == "creating"
                   and (p.get("resource") or {}).get("type") == SERVER_TYPE_TOKEN]
        tenant = self.config.tenant_of(ref.name)
        if not creates or not tenant:
            return
        tracked = tracked_server_ids(self.workspace.export_state(ref))
        for server in hetzner_api.list_servers(self.hcloud, self._labels(tenant)):
            if str(server.id) not in tracked:
                log.warning("untracked_server_deleted", tenant=tenant, server_id=server.id)
                hetzner_api.delete_server(self.hcloud, server.id)
