"""``hermes operators``: mission-control operators (issue 21), managed only from here.

``add`` reads the password from standard input (so it stays out of the shell history and the
process list) and prints the TOTP provisioning URI once; every change writes an audit row
(actor ``cli:<OS user>``).
"""

from __future__ import annotations

import sys

import click

from cli.context import open_runtime
from control.errors import HermesError


def _run(action):
    """Run ``action()``; a ``HermesError`` (bad input, unknown operator) exits 1 cleanly."""
    try:
        return action()
    except HermesError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def operators():
    """Operators of mission control (/ops): add, list, remove, reset their TOTP."""


@operators.command()
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), required=True,
              help="viewer reads; operator also acts on attention, dead letters and machines; "
                   "admin also deprovisions and reads the audit trail.")
def add(email: str, role: str):
    """Add an operator; the password is read from standard input (its first line).

    Prints the otpauth:// URI to scan into an authenticator app: it is shown only now.
    """
    # deferred: keeps `hermes --help` light: loads peewee, argon2, pyotp (~220 ms)
    from control.services import audit
    from control.services import operators as service

    rt = open_runtime()
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    _operator, uri = _run(lambda: service.add(email, role, password, rt.secrets_box,
                                              audit.Actor.cli()))
    click.echo(f"operator {email} added as {role}; scan this into an authenticator app "
               "(it is not shown again):")
    click.echo(uri)


@operators.command("list")
def list_operators():
    """One line per operator: e-mail, role, created, last sign-in (UTC)."""
    # deferred: keeps `hermes --help` light: loads peewee, argon2, pyotp (~220 ms)
    from control.services import operators as service

    open_runtime()
    rows = service.listing()
    for op in rows:
        last = op.last_login_at.strftime("%Y-%m-%d %H:%M") if op.last_login_at else "never"
        click.echo(f"{op.email}\t{op.role}\t{op.created_at:%Y-%m-%d}\t{last}")
    if not rows:
        click.echo("no operators; add one with: hermes operators add EMAIL --role admin")


@operators.command()
@click.argument("email")
def remove(email: str):
    """Remove an operator; their sessions end at once."""
    # deferred: keeps `hermes --help` light: loads peewee, argon2, pyotp (~220 ms)
    from control.services import audit
    from control.services import operators as service

    open_runtime()
    _run(lambda: service.remove(email, audit.Actor.cli()))
    click.echo(f"operator {email} removed")


@operators.command("reset-totp")
@click.argument("email")
def reset_totp(email: str):
    """Give an operator a new TOTP secret (a lost phone); prints the new otpauth:// URI once
    and ends their sessions."""
    # deferred: keeps `hermes --help` light: loads peewee, argon2, pyotp (~220 ms)
    from control.services import audit
    from control.services import operators as service

    rt = open_runtime()
    uri = _run(lambda: service.reset_totp(email, rt.secrets_box, audit.Actor.cli()))
    click.echo(uri)
