"""``LocalProvisioner``: the embedded default — each tenant's agent is a supervised local process.

Every agent gets its own data directory ``<agents_dir>/<tenant>/`` holding ``machine.json``
(its spec, mode 0600 because it holds the agent token), ``agent.log`` and the agent's own
files.  A supervisor thread restarts an agent that dies, with exponential backoff.  Agents
are started in their own session (so a terminal's Ctrl-C reaches only ``hermes serve``, which
then stops them in order) and told our pid (``HERMES_PARENT_PID``), so each sets a
parent-death signal and none outlives the control plane.

``pause`` stops the agent and marks ``machine.json`` paused (data kept); ``resume`` starts it
again.  ``deprovision`` archives the data dir into the ``store`` in the one archive format of
``control.providers.archive`` (as ``HetznerProvisioner`` does), and ``provision`` with
``restore_archive_key`` restores such an archive with ``agent.backup restore`` before the agent
first starts.

Warm pool (issue 22): a pool server is a directory ``<agents_dir>/pool-<plan>-<hex>/`` whose
process is the bootstrap ``agent.pool_boot --exec``, polling the control plane with the one-time
token in its ``pool.token`` (0600).  ``claim_pool_server`` renames the directory to the
tenant's, writes its ``machine.json`` and supervises the process as the tenant's agent; the
bootstrap then fetches the config and execs the agent in place.  ``pool_image`` plays the
snapshot: changing it makes the pool's servers stale.

``provision`` returns as soon as the agent process runs, like a cloud API answering
``running``: the machine is ready only when the agent's lifecycle ``ready`` event reaches the
control plane (``control.services.machine_health``), exactly as on a VM.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from control.errors import ProvisioningError
from control.providers.archive import (
    ArchiveResult,
    LocalObjectStore,
    ObjectStore,
    archive_directory,
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
from control.providers.hetzner.archive import LocalDirectoryRestorer

log = logging.getLogger(__name__)

# HERMES_EMBEDDER_DIR: local agents share one exported embedding model (agent/config.py).
PASS_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "HERMES_TZ", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                    "HF_HOME", "TMPDIR", "HERMES_EMBEDDER_DIR")


@dataclass
class _Agent:
    spec: MachineSpec
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start_at: float = 0.0
    stopping: bool = False


class LocalProvisioner(Provisioner):
    """Runs agents as child processes of this host.

    Args:
        agents_dir: parent of the per-tenant data directories.
        env_label: value of the ``env`` label.
        stop_timeout: seconds between SIGTERM and SIGKILL when stopping an agent.
        python: interpreter that runs ``-m agent.main run``.
        store: where deprovision archives go; default ``<agents_dir>/../archives``.
        pool_image: what ``pool_snapshot`` reports (the local stand-in for a snapshot id).
        pool_poll_interval: seconds between a pool bootstrap's config polls.
    """

    def __init__(self, agents_dir: str | Path, env_label: str = "local",
                 stop_timeout: float = 10.0, python: str = sys.executable,
                 store: ObjectStore | None = None, pool_image: str = "local",
                 pool_poll_interval: float = 2.0):
        self.agents_dir = Path(agents_dir)
        self.agents_dir.mkdir(parents=True, exist_ok=True)
        self.env_label = env_label
        self.stop_timeout = stop_timeout
        self.python = python
        # <data_dir>/archives: the store ``backups.store_from_settings`` uses in local mode.
        self.store = store or LocalObjectStore(self.agents_dir.parent / "archives")
        self.restorer = LocalDirectoryRestorer(self.agents_dir, python)
        self._agents: dict[str, _Agent] = {}
        self.pool_image = pool_image
        self.pool_poll_interval = pool_poll_interval
        self._pool: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="agent-supervisor", daemon=True)
        self._supervisor.start()

    def data_dir(self, tenant: str) -> Path:
        """Return the tenant agent's data directory."""
        return self.agents_dir / tenant

    def provision(self, spec: MachineSpec) -> MachineStatus:
        """See ``Provisioner.provision``: start the agent, return ``running`` without waiting for
        it to be ready; an agent already running is left as it is."""
        if spec.plan not in PLANS:
            raise ProvisioningError(f"unknown plan {spec.plan!r}")
        with self._lock:
            agent = self._agents.get(spec.tenant)
            if agent is not None and agent.process is not None and agent.process.poll() is None:
                return self.status(spec.tenant)
            data = self.data_dir(spec.tenant)
            data.mkdir(parents=True, exist_ok=True)
            if spec.restore_archive_key:
                # Before the agent's first start, so it never serves anyone from empty stores.
                self.restorer(spec.tenant, None, read_archive(self.store, spec.restore_archive_key))
            machine_file = data / "machine.json"
            _write_private(machine_file, json.dumps({"tenant": spec.tenant, "plan": spec.plan,
                                                     "env": spec.env}))
            agent = self._agents[spec.tenant] = _Agent(spec)
            self._start(agent)
        return self.status(spec.tenant)

    def adopt(self) -> list[str]:
        """Start agents for every data directory with a ``machine.json`` (after a restart),
        except paused ones.

        Returns the tenant ids started; agents that fail to become ready are left to the
        supervisor's restarts.
        """
        started = []
        for machine_file in sorted(self.agents_dir.glob("*/machine.json")):
            saved = json.loads(machine_file.read_text())
            if saved.get("paused"):
                continue
            spec = MachineSpec(tenant=saved["tenant"], plan=saved["plan"], env=saved["env"])
            with self._lock:
                if spec.tenant in self._agents:
                    continue
                agent = self._agents[spec.tenant] = _Agent(spec)
                self._start(agent)
            started.append(spec.tenant)
        return started

    def _start(self, agent: _Agent) -> None:
        data = self.data_dir(agent.spec.tenant)
        env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
        env.update(agent.spec.env)
        env.update(HERMES_DATA_DIR=str(data), HERMES_TENANT=agent.spec.tenant, PYTHONUNBUFFERED="1",
                   HERMES_PARENT_PID=str(os.getpid()))
        with open(data / "agent.log", "ab") as logfile:
            agent.process = subprocess.Popen(
                [self.python, "-m", "agent.main", "run"], env=env, cwd=str(data),
                stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("started agent for tenant %s (pid %s)", agent.spec.tenant, agent.process.pid)

    def _log_tail(self, tenant: str, lines: int = 5) -> str:
        path = self.data_dir(tenant) / "agent.log"
        if not path.exists():
            return ""
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])

    def _supervise(self) -> None:
        while not self._closing.wait(0.2):
            with self._lock:
                for agent in self._agents.values():
                    self._check(agent)

    def _check(self, agent: _Agent) -> None:
        if agent.stopping or agent.process is None or agent.process.poll() is None:
            return
        now = time.monotonic()
        if agent.next_start_at == 0.0:
            delay = min(30.0, 0.5 * 2 ** min(agent.restarts, 6))
            agent.next_start_at = now + delay
            log.warning("agent for tenant %s exited with %s; restarting in %.1fs",
                        agent.spec.tenant, agent.process.returncode, delay)
        elif now >= agent.next_start_at:
            agent.restarts += 1
            agent.next_start_at = 0.0
            self._start(agent)

    def resize(self, tenant: str, plan: str) -> MachineStatus:
        """Record the new plan; local agents have no size, so nothing restarts."""
        if plan not in PLANS:
            raise ProvisioningError(f"unknown plan {plan!r}")
        with self._lock:
            agent = self._agents.get(tenant)
            if agent is None:
                raise ProvisioningError(f"tenant {tenant} has no machine")
            agent.spec = MachineSpec(tenant=tenant, plan=plan, env=agent.spec.env)
            machine_file = self.data_dir(tenant) / "machine.json"
            saved = json.loads(machine_file.read_text())
            saved["plan"] = plan
            _write_private(machine_file, json.dumps(saved))
        return self.status(tenant)

    def pause(self, tenant: str) -> MachineStatus:
        """Stop the agent (SIGTERM, then SIGKILL) and mark ``machine.json`` paused, so neither
        the supervisor nor ``adopt`` starts it; the data dir stays as it is."""
        with self._lock:
            machine_file = self.data_dir(tenant) / "machine.json"
            if not machine_file.exists():
                raise ProvisioningError(f"tenant {tenant} has no machine to pause")
            agent = self._agents.pop(tenant, None)
            if agent is not None:
                self._stop(agent)
            _update_machine_file(machine_file, paused=True)
        return self.status(tenant)

    def restart(self, tenant: str) -> MachineStatus:
        """Stop the tenant's agent process (SIGTERM, then SIGKILL) and start it again from its
        ``machine.json``; a paused machine is refused (resume it instead)."""
        with self._lock:
            machine_file = self.data_dir(tenant) / "machine.json"
            if not machine_file.exists() or tenant not in self._agents:
                raise ProvisioningError(f"tenant {tenant} has no running machine to restart")
            agent = self._agents[tenant]
            self._stop(agent)
            agent = self._agents[tenant] = _Agent(agent.spec)
            self._start(agent)
        return self.status(tenant)

    def resume(self, tenant: str) -> MachineStatus:
        """Start a paused agent again from its ``machine.json`` (same spec and secrets)."""
        with self._lock:
            agent = self._agents.get(tenant)
            if agent is not None and agent.process is not None and agent.process.poll() is None:
                return self.status(tenant)
            machine_file = self.data_dir(tenant) / "machine.json"
            if not machine_file.exists():
                raise ProvisioningError(f"tenant {tenant} has no machine to resume")
            saved = _update_machine_file(machine_file, paused=False)
            agent = self._agents[tenant] = _Agent(MachineSpec(tenant=tenant, plan=saved["plan"],
                                                              env=saved["env"]))
            self._start(agent)
        return self.status(tenant)

    def deprovision(self, tenant: str, archive: bool = True) -> ArchiveResult | None:
        """Stop the agent; archive its data dir to ``store`` first if asked (the format every
        provider uses, ``archive_directory``, without ``machine.json``'s secrets); then
        delete the data dir."""
        with self._lock:
            agent = self._agents.pop(tenant, None)
        if agent is not None:
            self._stop(agent)
        data = self.data_dir(tenant)
        if not data.exists():
            return None
        result = None
        if archive:
            result = archive_directory(
                self.store, data, archive_key(self.env_label, tenant),
                {"tenant": tenant, "env": self.env_label, "source": f"local:{data}"},
                exclude=frozenset({"machine.json"}))
        shutil.rmtree(data)
        return result

    def _stop(self, agent: _Agent) -> None:
        agent.stopping = True
        process = agent.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def status(self, tenant: str) -> MachineStatus:
        """See ``Provisioner.status``."""
        with self._lock:
            agent = self._agents.get(tenant)
        labels = {"app": "hermes", "env": self.env_label, "tenant": tenant}
        if agent is None or agent.process is None:
            state = (ServerState.STOPPED if (self.data_dir(tenant) / "machine.json").exists()
                     else ServerState.ABSENT)
            return MachineStatus(tenant=tenant, state=state, labels=labels)
        labels["plan"] = agent.spec.plan
        alive = agent.process.poll() is None
        state = ServerState.RUNNING if alive else ServerState.FAILED
        return MachineStatus(tenant=tenant, state=state, plan=agent.spec.plan,
                             address=f"pid:{agent.process.pid}",
                             detail=f"restarts={agent.restarts}" + ("" if alive else
                                                                    f"; log: {self._log_tail(tenant)}"),
                             labels=labels)

    def list(self) -> list[MachineStatus]:
        """See ``Provisioner.list``."""
        tenants = {p.parent.name for p in self.agents_dir.glob("*/machine.json")}
        with self._lock:
            tenants |= set(self._agents)
        return [self.status(t) for t in sorted(tenants)]

    def pids(self) -> dict[str, int]:
        """Return ``{tenant: pid}`` of running agents (for tests and ``hermes machines list``)."""
        with self._lock:
            return {t: a.process.pid for t, a in self._agents.items()
                    if a.process is not None and a.process.poll() is None}

    # -- warm pool ----------------------------------------------------------------------------
    def pool_snapshot(self) -> str | None:
        """See ``Provisioner.pool_snapshot``: ``pool_image``."""
        return self.pool_image

    def create_pool_server(self, plan: str, pool_token: str, control_url: str) -> PoolServerInfo:
        """See ``Provisioner.create_pool_server``: a slot directory and its bootstrap process."""
        if plan not in PLANS:
            raise ProvisioningError(f"unknown plan {plan!r}")
        slot = f"pool-{plan}-{secrets.token_hex(4)}"
        data = self.data_dir(slot)
        data.mkdir(parents=True)
        _write_private(data / "pool.token", pool_token)
        (data / "pool.json").write_text(json.dumps({"plan": plan, "snapshot": self.pool_image}))
        env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
        env.update(PYTHONUNBUFFERED="1", HERMES_PARENT_PID=str(os.getpid()))
        with self._lock, open(data / "agent.log", "ab") as logfile:
            self._pool[slot] = subprocess.Popen(
                [self.python, "-m", "agent.pool_boot", "--control-url", control_url,
                 "--token-file", "pool.token", "--exec",  # relative: it moves with the slot
                 "--interval", str(self.pool_poll_interval)],
                env=env, cwd=str(data), stdin=subprocess.DEVNULL, stdout=logfile,
                stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started pool server %s (pid %s)", slot, self._pool[slot].pid)
        return PoolServerInfo(provider_id=slot, plan=plan, snapshot=self.pool_image,
                              address=f"pid:{self._pool[slot].pid}")

    def claim_pool_server(self, provider_id: str, spec: MachineSpec) -> PoolClaim:
        """See ``Provisioner.claim_pool_server``: the slot becomes ``<agents_dir>/<tenant>``.

        Raises:
            ProvisioningError: the slot's process is gone, or the tenant has a data dir already.
        """
        with self._lock:
            process = self._pool.get(provider_id)
            mine = self._agents.get(spec.tenant)
            if process is None and mine is not None and mine.process is not None:
                # A retried hand-over: the slot is the tenant's already; new secrets.
                mine.spec = spec
                _write_private(self.data_dir(spec.tenant) / "machine.json", json.dumps(
                    {"tenant": spec.tenant, "plan": spec.plan, "env": spec.env}))
                return PoolClaim(self.status(spec.tenant), {"env": spec.env, "files": {}})
            if process is None or process.poll() is not None:
                raise ProvisioningError(f"pool server {provider_id} is not running")
            target = self.data_dir(spec.tenant)
            if target.exists():
                raise ProvisioningError(f"tenant {spec.tenant} has a data directory already")
            # The bootstrap's working directory moves with it: it starts the agent in the
            # tenant's directory (agent.pool_boot --exec).
            self.data_dir(provider_id).rename(target)
            _write_private(target / "machine.json", json.dumps(
                {"tenant": spec.tenant, "plan": spec.plan, "env": spec.env}))
            (target / "pool.json").unlink(missing_ok=True)
            del self._pool[provider_id]
            self._agents[spec.tenant] = _Agent(spec, process=process)
        return PoolClaim(self.status(spec.tenant), {"env": spec.env, "files": {}})

    def delete_pool_server(self, provider_id: str) -> None:
        """See ``Provisioner.delete_pool_server``: stop the bootstrap, delete the slot."""
        with self._lock:
            process = self._pool.pop(provider_id, None)
        if process is not None:
            self._stop(_Agent(MachineSpec(tenant=provider_id, plan=""), process=process))
        if provider_id.startswith("pool-"):
            shutil.rmtree(self.data_dir(provider_id), ignore_errors=True)

    def pool_servers(self) -> builtins.list[PoolServerInfo]:
        """See ``Provisioner.pool_servers``: every slot directory whose bootstrap runs (claimed
        ones were renamed; a slot left by an earlier ``hermes serve`` has none and is gone)."""
        servers: builtins.list[PoolServerInfo] = []
        for marker in sorted(self.agents_dir.glob("pool-*/pool.json")):
            saved = json.loads(marker.read_text())
            process = self._pool.get(marker.parent.name)
            if process is None or process.poll() is not None:
                continue
            servers.append(PoolServerInfo(
                provider_id=marker.parent.name, plan=saved["plan"], snapshot=saved["snapshot"],
                address=f"pid:{process.pid}"))
        return servers

    def close(self) -> None:
        """Stop the supervisor and every agent (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        self._closing.set()
        self._supervisor.join(timeout=5)
        with self._lock:
            agents = list(self._agents.values())
            self._agents.clear()
            pool = list(self._pool.values())
            self._pool.clear()
        for agent in agents:
            self._stop(agent)
        for process in pool:
            self._stop(_Agent(MachineSpec(tenant="", plan=""), process=process))


def _update_machine_file(path: Path, **changes) -> dict:
    """Apply ``changes`` to the saved spec in ``machine.json``; return the new content."""
    saved = {**json.loads(path.read_text()), **changes}
    _write_private(path, json.dumps(saved))
    return saved


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds the agent's secrets),
    never world-readable, not even between creation and a later chmod."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
