"""``hermes attention``: items an operator must look at."""

from __future__ import annotations

import click

from cli.context import open_runtime


@click.group()
def attention():
    """Operator attention items (unknown plans, failed machines, refused deliveries)."""


@attention.command("list")
def list_items():
    """Print open attention items, oldest first."""
    # deferred: keeps `hermes --help` light: loads peewee (~65 ms)
    from control.services.attention import open_items

    open_runtime()
    items = open_items()
    for item in items:
        click.echo(f"{item.id}\t{item.created_at:%Y-%m-%d %H:%M}\t{item.kind}\t{item.subject}\t{item.detail}")
    if not items:
        click.echo("nothing needs attention")
