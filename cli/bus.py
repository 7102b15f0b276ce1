"""``hermes bus grant|revoke|rotate TENANT``: manage tenants' Redis ACL users.

The admin connection comes from ``--redis-url`` or, when that is not given, the environment
variable ``REDIS_URL``, verified against ``--ca-file`` / ``HERMES_BUS_CA_FILE`` for ``rediss://``
(``admin_url_option`` is the only place this module reads the environment; it moves to
``control/settings.py`` when the CLI reads settings there).
"""

from __future__ import annotations

import click

from wire.errors import WireError

REDIS_URL_ENV = "REDIS_URL"
CA_FILE_ENV = "HERMES_BUS_CA_FILE"


def admin_url_option(command):
    """Add ``--redis-url`` (default: ``$REDIS_URL``), the admin connection URL, and ``--ca-file``
    (default: ``$HERMES_BUS_CA_FILE``), the PEM CA of Redis's TLS certificate, to ``command``."""
    command = click.option(
        "--ca-file", envvar=CA_FILE_ENV, default="", show_envvar=True,
        help="PEM CA that signed the Redis server certificate (rediss:// only; empty: system CAs).",
    )(command)
    return click.option(
        "--redis-url", envvar=REDIS_URL_ENV, required=True, show_envvar=True,
        help="Admin connection URL, redis://user:password@host:port/db (rediss:// for TLS).",
    )(command)


def _admin(redis_url: str, ca_file: str):
    # deferred: keeps `hermes --help` light: loads redis (~130 ms)
    from wire.redis_bus import connect

    return connect(redis_url, ca_file=ca_file)


def _run(action):
    """Run ``action()``; turn bus and validation errors into a clean CLI error (exit 1)."""
    try:
        return action()
    except (WireError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def bus():
    """Manage tenants' access to the Redis bus (one ACL user per tenant)."""


advertised_host_option = click.option(
    "--advertised-host", default=None,
    help="Host the agent dials, if not the admin URL's host (e.g. a private IP).")


@bus.command()
@click.argument("tenant")
@admin_url_option
@advertised_host_option
def grant(tenant: str, redis_url: str, ca_file: str, advertised_host: str | None):
    """Create or rotate TENANT's ACL user and print its connection URL (contains the password)."""
    # deferred: keeps `hermes --help` light: loads redis (~120 ms)
    from control.services import bus_acl

    click.echo(_run(lambda: bus_acl.grant(_admin(redis_url, ca_file), tenant, advertised_host=advertised_host)))


@bus.command()
@click.argument("tenant")
@admin_url_option
@advertised_host_option
def rotate(tenant: str, redis_url: str, ca_file: str, advertised_host: str | None):
    """Give TENANT a new password (the old one stops working at once) and print the new URL."""
    # deferred: keeps `hermes --help` light: loads redis (~120 ms)
    from control.services import bus_acl

    click.echo(_run(lambda: bus_acl.rotate(_admin(redis_url, ca_file), tenant, advertised_host=advertised_host)))


@bus.command()
@click.argument("tenant")
@admin_url_option
def revoke(tenant: str, redis_url: str, ca_file: str):
    """Delete TENANT's ACL user and close its connections (nothing to do if it has none)."""
    # deferred: keeps `hermes --help` light: loads redis (~120 ms)
    from control.services import bus_acl

    deleted = _run(lambda: bus_acl.revoke(_admin(redis_url, ca_file), tenant))
    click.echo(f"revoked hermes-tenant-{tenant}" if deleted
               else f"hermes-tenant-{tenant} had no bus user")
