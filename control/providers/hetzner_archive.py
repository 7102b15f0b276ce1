"""How a tenant's agent data leaves its machine on deprovision (strategies for the archive step).

Every strategy is a callable ``(tenant, address, store, key, metadata) -> ArchiveResult``:

* ``SshTarArchiver`` (production): stops the agent's units (so its SQLite files are at rest),
  then runs ``tar -czf - -C /var/lib/hermes .`` on the VM over OpenSSH and streams its stdout straight into the object store (S3 multipart upload through
  boto3's managed transfer), so the archive never lands on the control host's disk.
* ``LocalDirectoryArchiver`` (embedded default and tests): archives ``<root>/<tenant>``.

A strategy raises ``ProvisioningError`` on any failure; the provisioner then destroys nothing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from control.errors import ProvisioningError
from control.providers.archive import ArchiveResult, ObjectStore, archive_directory, archive_stream
from infra.tenant_config import AGENT_DATA_DIR, AGENT_UNITS


class DataArchiver(Protocol):
    """Archive one tenant's agent data into ``store`` under ``key``."""

    def __call__(
        self, tenant: str, address: str | None, store: ObjectStore, key: str,
        metadata: dict[str, str],
    ) -> ArchiveResult: ...


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
    """

    key_path: str | None = None
    user: str = "root"
    data_dir: str = AGENT_DATA_DIR
    ssh_binary: str = "ssh"
    connect_timeout: int = 15
    extra_options: dict[str, str] = field(default_factory=dict)
    stop_units: tuple[str, ...] = AGENT_UNITS

    def command(self, address: str) -> list[str]:
        """Return the argv that prints the gzipped tar of ``data_dir`` on stdout."""
        options = {
            "BatchMode": "yes",
            "ConnectTimeout": str(self.connect_timeout),
            # Tenant VMs are recreated from a snapshot, so their host keys are new each time;
            # the private network is the trust boundary (SSH is closed to the world by firewall).
            "StrictHostKeyChecking": "accept-new",
            **self.extra_options,
        }
        argv = [self.ssh_binary]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        if self.key_path:
            argv += ["-i", str(self.key_path)]
        remote = f"tar -czf - -C {shlex.quote(self.data_dir)} ."
        if self.stop_units:
            remote = f"systemctl stop {' '.join(map(shlex.quote, self.stop_units))} && {remote}"
        return [*argv, f"{self.user}@{address}", remote]

    def __call__(self, tenant, address, store, key, metadata) -> ArchiveResult:
        if not address:
            raise ProvisioningError(f"tenant {tenant} has no reachable address to archive from")
        proc = subprocess.Popen(
            self.command(address), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        drain.start()
        try:
            result = archive_stream(
                store, proc.stdout, key, {**metadata, "source": f"ssh:{address}:{self.data_dir}"}
            )
        finally:
            proc.stdout.close()
            code = proc.wait()
            drain.join()
        if code != 0:
            # A truncated archive must not look like a good one.
            store.delete(key)
            store.delete(key + ".manifest.json")
            stderr = b"".join(errors).decode(errors="replace").strip()
            raise ProvisioningError(
                f"archiving {self.data_dir} of tenant {tenant} over SSH failed "
                f"(exit {code}): {stderr[-500:]}"
            )
        return result
