"""Pick the ``Provisioner`` implementation named by settings."""

from __future__ import annotations

from control.providers.hetzner.settings import hetzner_provisioner
from control.providers.local import LocalProvisioner


def provisioner_from_settings(settings):
    """Return the provisioner for ``settings.provisioner`` (``local`` or ``hetzner``).

    Raises:
        ConfigError: the Hetzner provisioner is selected but its configuration is incomplete.
    """
    if settings.provisioner == "local":
        return LocalProvisioner(settings.agents_dir, env_label=settings.env)
    return hetzner_provisioner(settings)
