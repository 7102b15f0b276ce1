"""Tenant machines on Hetzner Cloud: one Pulumi stack per tenant (``HERMES_PROVISIONER=hetzner``).

One job per module:

* ``provisioner``: ``HetznerProvisioner``, the ``Provisioner`` that orchestrates the rest;
* ``config``: ``HetznerConfig`` and the tenant stack's inline program;
* ``settings``: ``HetznerConfig`` built from ``control.settings.Settings``;
* ``workspace``: the Pulumi Automation API boundary (``StackWorkspace``);
* ``stacks``: retries and recovery of interrupted updates around the workspace;
* ``locking``: a per-stack file lock;
* ``resizes``: downgrades scheduled for the billing period end;
* ``archive``: the tenant's ``/var/lib/hermes`` archived before a destroy;
* ``reconcile`` and ``drift``: orphan sweep and drift checks.
"""

from control.providers.hetzner.config import HetznerConfig
from control.providers.hetzner.provisioner import HetznerProvisioner

__all__ = ["HetznerConfig", "HetznerProvisioner"]
