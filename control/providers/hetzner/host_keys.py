"""Each tenant VM's SSH host key, made here and pinned before the VM exists (issue #19, finding 7).

Hetzner reuses private IPs, so trusting whatever key an address first shows (the old
``StrictHostKeyChecking=accept-new`` with one shared ``known_hosts``) broke SSH to every new
VM on a recycled address ("host key changed": its backups, archive and restore retried
forever) and trusted the first key any machine on that address presented.  Instead:

* at provisioning the control plane makes an Ed25519 host key pair for the tenant's machine
  and hands it to cloud-init (``ssh_keys``, cloud-init's documented way to set host keys, with
  no other type generated; ``infra.tenant_config.render_cloud_init``), so the key is known
  before the VM boots and comes from no one on the network: no tenant can forge it;
* the public key is pinned in ``<dir>/<tenant>/known_hosts`` under the alias
  ``hermes-tenant-<tenant>`` (``HostKeyAlias``), so the pin names the machine, not its address;
* every SSH to the VM uses ``StrictHostKeyChecking=yes`` with ``UserKnownHostsFile`` = that
  file and no global file;
* deprovisioning removes the directory, so the key stops being trusted with the machine.

The private key is kept next to the pin (mode 0600, directory 0700) so a repeated
``provision`` (idempotent) renders the same cloud-init; it is readable on the VM by root only
once the image blocks the metadata service for other users.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control.errors import ProvisioningError

PRIVATE_KEY = "ssh_host_ed25519_key"
KNOWN_HOSTS = "known_hosts"


def host_key_alias(tenant: str) -> str:
    """Return the name a tenant machine's pin is recorded under (``hermes-tenant-<tenant>``)."""
    return f"hermes-tenant-{tenant}"


def known_hosts_dir(settings) -> Path:
    """Return where the control plane keeps the pins: ``<settings.data_dir>/known_hosts``."""
    return Path(settings.data_dir) / "known_hosts"


@dataclass(frozen=True)
class HostKey:
    """One machine's host key pair: ``private`` (OpenSSH PEM) and ``public`` (``ssh-ed25519
    AAAA... comment``)."""

    private: str
    public: str


@dataclass(frozen=True)
class HostKeyStore:
    """The per-machine host keys and known-hosts files under ``root`` (see the module doc).

    Attributes:
        root: directory of one subdirectory per tenant machine.
    """

    root: Path

    def _dir(self, tenant: str) -> Path:
        if not tenant or "/" in tenant or tenant.startswith("."):
            raise ProvisioningError(f"invalid tenant id {tenant!r} for a host key")
        return Path(self.root) / tenant

    def known_hosts(self, tenant: str) -> Path:
        """Return the path of ``tenant``'s known-hosts file (it may not exist)."""
        return self._dir(tenant) / KNOWN_HOSTS

    def ensure(self, tenant: str) -> HostKey:
        """Return ``tenant``'s host key, making and pinning a new one when there is none.

        Raises:
            ProvisioningError: invalid tenant id.
            OSError: the directory cannot be written.
        """
        directory = self._dir(tenant)
        private_path = directory / PRIVATE_KEY
        if not private_path.exists():
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption()).decode()
            partial = private_path.with_suffix(".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(pem)
            partial.replace(private_path)  # a crash never leaves half a key behind
        pem = private_path.read_text()
        key_line = serialization.load_ssh_private_key(pem.encode(), password=None).public_key(
            ).public_bytes(serialization.Encoding.OpenSSH,
                           serialization.PublicFormat.OpenSSH).decode()  # "ssh-ed25519 AAAA..."
        pin = f"{host_key_alias(tenant)} {key_line}\n"
        known_hosts = self.known_hosts(tenant)
        if not known_hosts.exists() or known_hosts.read_text() != pin:
            known_hosts.write_text(pin)
        return HostKey(private=pem, public=f"{key_line} {host_key_alias(tenant)}")

    def ssh_options(self, tenant: str) -> dict[str, str]:
        """Return the ``ssh -o`` options that accept only ``tenant``'s pinned key.

        Raises:
            ProvisioningError: no key is pinned for ``tenant`` (never provisioned here, or
                deprovisioned): SSH would have nothing to check the machine against.
        """
        known_hosts = self.known_hosts(tenant)
        if not known_hosts.is_file():
            raise ProvisioningError(f"no pinned SSH host key for tenant {tenant} ({known_hosts});"
                                    f" refusing to trust the machine at its address")
        return {"StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(known_hosts),
                "GlobalKnownHostsFile": "/dev/null", "HostKeyAlias": host_key_alias(tenant),
                "UpdateHostKeys": "no"}

    def adopt(self, source: str, tenant: str) -> HostKey:
        """Move ``source``'s key (a warm-pool server's, pinned at its creation) to ``tenant``,
        re-pinned under the tenant's alias; an absent ``source`` leaves ``tenant``'s own key.

        Raises:
            ProvisioningError: an invalid id.
        """
        origin, target = self._dir(source), self._dir(tenant)
        if origin.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            origin.rename(target)
        return self.ensure(tenant)

    def remove(self, tenant: str) -> None:
        """Forget ``tenant``'s machine key and pin (at deprovision); absent is fine."""
        shutil.rmtree(self._dir(tenant), ignore_errors=True)
