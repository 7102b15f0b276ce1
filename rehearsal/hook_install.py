"""The rehearsal's two replacements inside the control plane, installed at process start.

``HetznerProvisioner`` builds its Pulumi workspace (``PulumiStackWorkspace``) and its archiver
(``SshTarArchiver``) from settings; the rehearsal replaces exactly these two names in
``control.providers.hetzner.provisioner`` before the app or worker builds a provisioner:

* the workspace becomes ``rehearsal.engine.MockEngineWorkspace`` (same constructor);
* the archiver stays the production ``SshTarArchiver`` (same remote command: stop the units,
  tar ``/var/lib/hermes``), with ``ssh_binary`` pointing at ``HERMES_REHEARSAL_SSH``, the
  rehearsal's chroot transport (``rehearsal.ssh_standin``).

Nothing in ``control/`` knows about this: it is installed only through the rehearsal's
``sitecustomize`` (``rehearsal/hook``), never in a production process.
"""

from __future__ import annotations

import os


def install() -> None:
    """Patch ``control.providers.hetzner.provisioner`` for this process.

    Raises:
        KeyError: ``HERMES_REHEARSAL_SSH`` is not set.
    """
    from control.providers.hetzner import provisioner
    from control.providers.hetzner.archive import SshTarArchiver
    from rehearsal.engine import MockEngineWorkspace

    ssh_binary = os.environ["HERMES_REHEARSAL_SSH"]

    def archiver(key_path=None, host_keys=None):
        return SshTarArchiver(key_path=key_path, ssh_binary=ssh_binary, host_keys=host_keys)

    # A deliberate patch of the module's names for this process (so setattr, not assignment).
    setattr(provisioner, "PulumiStackWorkspace", MockEngineWorkspace)  # noqa: B010
    setattr(provisioner, "SshTarArchiver", archiver)  # noqa: B010
