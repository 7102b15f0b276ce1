"""Shared set-up for CLI commands that read the control-plane database."""

from __future__ import annotations

import click

from control.errors import HermesError
from control.settings import Settings


def open_runtime():
    """Return a ``Runtime`` built from the environment, or exit with a clear message."""
    # deferred: keeps `hermes --help` light: loads huey, redis, peewee (~280 ms)
    from control.runtime import Runtime

    try:
        return Runtime(Settings.from_env())
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc


def find_tenant(email: str):
    """Return the tenant with ``email`` or exit with status 1."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.models import Tenant

    tenant = Tenant.get_or_none(Tenant.email == email)
    if tenant is None:
        raise click.ClickException(f"no tenant with email {email}")
    return tenant
