"""How a tenant's agent data leaves its machine on deprovision (strategies for the archive step).

Every strategy is a callable ``(tenant, address, store, key, metadata) -> ArchiveResult``:

* ``SshTarArchiver`` (production): stops the agent's units (so its SQLite files are at rest),
  then runs ``tar -czf - -C /var/lib/hermes .`` on the VM over OpenSSH and streams its stdout
  straight into the object store (S3 multipart upload through boto3's managed transfer), so the
  archive never lands on the control host's disk.  With ``live=True`` (nightly backups) the units
  keep running and the remote command is the agent's own consistent snapshot,
  ``python -m agent.backup snapshot --data-dir /var/lib/hermes -`` (SQLite online backup of each
  store, run as the agent's user); ``restore_command`` is its counterpart for a restore onto a VM.
* ``LocalDirectoryArchiver`` (embedded default and tests): archives ``<root>/<tenant>``.

Restores (a resubscribed tenant's archive onto its new machine) are ``DataRestorer``s:
``SshTarArchiver.restore`` on a VM, ``LocalDirectoryRestorer`` for a local data dir.

A strategy raises ``ProvisioningError`` on any failure; the provisioner then destroys nothing.
No test here reaches a real sshd: tests run the remote command through an ``ssh`` look-alike
that executes it locally (``tests/providers/test_hetzner_deprovision.py``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from control.errors import ProvisioningError
from control.providers.archive import ArchiveResult, ObjectStore, archive_directory, archive_stream
from control.providers.hetzner.host_keys import HostKeyStore
from infra.tenant_config import AGENT_DATA_DIR, AGENT_UNITS

#: The agent's interpreter and system user on a tenant VM (``agent_image/image_settings.py``:
#: ``hermes_prefix``/venv and ``hermes_user``).
AGENT_PYTHON = "/opt/hermes/venv/bin/python"
AGENT_USER = "hermes"


class DataArchiver(Protocol):
    """Archive one tenant's agent data into ``store`` under ``key``."""

    def __call__(
        self, tenant: str, address: str | None, store: ObjectStore, key: str,
        metadata: dict[str, str],
    ) -> ArchiveResult: ...


class DataRestorer(Protocol):
    """Restore a tenant's archive (``.tar.gz`` bytes, already checked against its manifest)
    onto its machine with the agent stopped, replacing whatever stores a first boot made;
    return the restore's report line.  Raises ``ProvisioningError`` on failure."""

    def __call__(self, tenant: str, address: str | None, archive: bytes) -> str: ...


@dataclass
class LocalDirectoryRestorer:
    """Restore into ``<root>/<tenant>`` with ``python -m agent.backup restore --force`` (the
    layout ``LocalProvisioner`` and tests use; the one restore ``agent.backup`` implements).

    Attributes:
        root: parent of the per-tenant data directories.
        python: the interpreter with the ``agent`` package.
    """

    root: str | os.PathLike
    python: str = sys.executable

    def __call__(self, tenant, address, archive) -> str:
        target = Path(self.root) / tenant
        argv = [self.python, "-m", "agent.backup", "restore", "--force", "--data-dir", str(target), "-"]
        return feed_command(argv, archive, what=f"restoring tenant {tenant} into {target}")


@dataclass
class LocalDirectoryArchiver:
    """Archive ``<root>/<tenant>`` (the layout ``LocalProvisioner`` and tests use).

    A tenant without a directory is archived as an empty archive only when ``allow_missing``;
    otherwise that is an error, because deprovisioning must never silently lose data.
    """

    root: str | os.PathLike
    allow_missing: bool = False

    def __call__(self, tenant, address, store, key, metadata) -> ArchiveResult:
        src = Path(self.root) / tenant
        if not src.is_dir():
            if not self.allow_missing:
                raise ProvisioningError(f"no agent data directory for tenant {tenant} at {src}")
            src.mkdir(parents=True)
        return archive_directory(store, src, key, {**metadata, "source": f"local:{src}"})


@dataclass
class SshTarArchiver:
    """Stream ``tar czf`` of the VM's data dir over SSH into the object store.

    Attributes:
        key_path: private key for ``user`` on the VMs (the image build's key), or ``None`` for
            the SSH agent.
        user: remote user (``root`` on Hetzner images).
        data_dir: remote directory to archive.
        ssh_binary: the OpenSSH client to run.
        connect_timeout: SSH ``ConnectTimeout``, seconds.
        extra_options: more ``-o`` options, e.g. ``{"ProxyJump": "ops@bastion"}``.
        stop_units: systemd units stopped before the tar (the agent's listener and Huey
            consumer from the base image); the machine is being deleted anyway.
        live: take the agent's consistent snapshot (``agent.backup``) with the units running
            instead of stopping them and tarring the directory (nightly backups).
        agent_python: the agent's interpreter on the VM (for ``agent.backup``).
        agent_user: user ``agent.backup`` runs as (through ``runuser``), so files it creates
            (SQLite ``-shm``) stay the agent's; ``None`` runs it as ``user``.
        host_keys: the machines' pinned host keys (``host_keys.HostKeyStore``); each command
            then trusts only its tenant's key.  ``None``: the operator's own ``known_hosts``,
            still with ``StrictHostKeyChecking=yes`` (never trust a key on first sight).
    """

    key_path: str | None = None
    user: str = "root"
    data_dir: str = AGENT_DATA_DIR
    ssh_binary: str = "ssh"
    connect_timeout: int = 15
    extra_options: dict[str, str] = field(default_factory=dict)
    stop_units: tuple[str, ...] = AGENT_UNITS
    live: bool = False
    agent_python: str = AGENT_PYTHON
    agent_user: str | None = AGENT_USER
    host_keys: HostKeyStore | None = None

    def _agent_backup(self, *args: str) -> str:
        """The remote ``python -m agent.backup ARGS --data-dir DATA_DIR -`` as the agent's user."""
        argv = [self.agent_python, "-m", "agent.backup", *args, "--data-dir", self.data_dir, "-"]
        if self.agent_user:
            argv = ["runuser", "-u", self.agent_user, "--", *argv]
        return shlex.join(argv)

    def remote_command(self) -> str:
        """Return the remote shell command printing the ``.tar.gz`` on stdout."""
        if self.live:
            return self._agent_backup("snapshot")
        remote = f"tar -czf - -C {shlex.quote(self.data_dir)} ."
        if self.stop_units:
            remote = f"systemctl stop {' '.join(map(shlex.quote, self.stop_units))} && {remote}"
        return remote

    def restore_command(self, force: bool = False) -> str:
        """Return the remote shell command restoring the ``.tar.gz`` read from stdin.

        The units are stopped around ``agent.backup restore`` (it must not run under a live
        agent) and started again whatever its outcome; the command exits with the restore's
        status.  ``force`` replaces the stores a freshly booted agent already created.
        """
        restore = self._agent_backup("restore", *(["--force"] if force else []))
        if not self.stop_units:
            return restore
        units = " ".join(map(shlex.quote, self.stop_units))
        return f"systemctl stop {units} && {{ {restore}; code=$?; systemctl start {units}; exit $code; }}"

    def command(self, address: str, remote: str | None = None, tenant: str | None = None
                ) -> list[str]:
        """Return the ssh argv running ``remote`` (default ``remote_command()``) on ``address``,
        the machine of ``tenant`` (required with ``host_keys``).

        Raises:
            ProvisioningError: ``host_keys`` has no pinned key for ``tenant``.
        """
        if self.host_keys is not None:
            if tenant is None:
                raise ProvisioningError(f"no tenant named for SSH to {address}: its pinned "
                                        f"host key cannot be chosen")
            host_key_options = self.host_keys.ssh_options(tenant)
        else:
            host_key_options = {"StrictHostKeyChecking": "yes"}
        options = {
            "BatchMode": "yes",
            "ConnectTimeout": str(self.connect_timeout),
            # Hetzner reuses private IPs: a machine is known by its pinned key, never by the
            # key its address showed first (issue #19, finding 7; host_keys.py).
            **host_key_options,
            **self.extra_options,
        }
        argv = [self.ssh_binary]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        if self.key_path:
            argv += ["-i", str(self.key_path)]
        return [*argv, f"{self.user}@{address}", remote or self.remote_command()]

    def __call__(self, tenant, address, store, key, metadata) -> ArchiveResult:
        if not address:
            raise ProvisioningError(f"tenant {tenant} has no reachable address to archive from")
        return stream_command(self.command(address, tenant=tenant), store, key,
                              {**metadata, "source": f"ssh:{address}:{self.data_dir}"},
                              what=f"archiving {self.data_dir} of tenant {tenant} over SSH")

    def restore(self, tenant: str, address: str | None, archive: bytes, force: bool = False) -> str:
        """Restore the ``.tar.gz`` bytes ``archive`` onto the VM at ``address`` (``restore_command``).

        Returns the restore's report line (JSON, from ``agent.backup``).

        Raises:
            ProvisioningError: no address, or the remote restore failed (refused, bad archive,
                SSH error).
        """
        if not address:
            raise ProvisioningError(f"tenant {tenant} has no reachable address to restore onto")
        return feed_command(self.command(address, self.restore_command(force), tenant), archive,
                            what=f"restoring tenant {tenant} onto {address} over SSH")


def stream_command(argv: list[str], store: ObjectStore, key: str, metadata: dict[str, str], *,
                   what: str) -> ArchiveResult:
    """Run ``argv`` and stream its stdout (a ``.tar.gz``) into ``store`` under ``key``.

    A non-zero exit deletes whatever was uploaded, so a truncated archive never looks good.

    Raises:
        ProvisioningError: the command failed (message: ``what``, exit status, stderr tail)
            or the upload failed.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are PIPEs
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
    drain.start()
    try:
        result = archive_stream(store, stdout, key, metadata)
    finally:
        stdout.close()
        code = proc.wait()
        drain.join()
    if code != 0:
        store.delete(key)
        store.delete(key + ".manifest.json")
        tail = b"".join(errors).decode(errors="replace").strip()[-500:]
        raise ProvisioningError(f"{what} failed (exit {code}): {tail}")
    return result


def feed_command(argv: list[str], archive: bytes, *, what: str) -> str:
    """Run ``argv`` with the bytes ``archive`` on its stdin; return its stderr's last line (the
    restore's report).

    Raises:
        ProvisioningError: the command exited non-zero (message: ``what``, status, stderr tail).
    """
    proc = subprocess.run(argv, input=archive, capture_output=True, check=False)
    stderr = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ProvisioningError(f"{what} failed (exit {proc.returncode}): {stderr[-500:]}")
    return stderr.splitlines()[-1] if stderr else ""
