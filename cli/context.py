"""Shared set-up for CLI commands that read the control-plane database."""

from __future__ import annotations

import click


def open_runtime():
    """Return a ``Runtime`` built from the environment, or exit with a clear message."""
    from control.errors import HermesError
    from control.runtime import Runtime
    from control.settings import Settings

    try:
        return Runtime(Settings.from_env())
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc


def find_tenant(email: str):
    """Return the tenant with ``email`` or exit with status 1."""
    from control.models import Tenant

    tenant = Tenant.get_or_none(Tenant.email == email)
    if tenant is None:
        raise click.ClickException(f"no tenant with email {email}")
    return tenant
