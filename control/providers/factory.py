"""Pick the ``Provisioner`` implementation named by settings."""

from __future__ import annotations


def provisioner_from_settings(settings):
    """Return the provisioner for ``settings.provisioner`` (``local`` or ``hetzner``).

    Raises:
        ConfigError: the Hetzner provisioner is selected but its configuration is incomplete.
    """
    if settings.provisioner == "local":
        from control.providers.local import LocalProvisioner

        return LocalProvisioner(settings.agents_dir, env_label=settings.env)
    from control.providers.hetzner.settings import hetzner_provisioner

    return hetzner_provisioner(settings)
