"""``hermes slo``: the fleet's service-level objectives against their targets."""

from __future__ import annotations

import json

import click

from cli.context import open_runtime


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def slo(as_json: bool):
    """Provisioning success (30 days), per-VM uptime (30 days), delivery success and
    dead-letter rate (24 hours), each against its target (control.services.slo)."""
    # deferred: keeps `hermes --help` light: loads peewee, prometheus_client (~75 ms)
    from control.services.slo import report

    runtime = open_runtime()
    with runtime.db.connection_context():
        figures = report(runtime.bus)
    if as_json:
        click.echo(json.dumps(figures, sort_keys=True))
        return
    for name, figure in figures.items():
        value = figure.get("value", figure.get("worst"))
        shown = "no data" if value is None else f"{value:.2%}"
        verdict = {True: "met", False: "MISSED", None: "-"}[figure["met"]]
        click.echo(f"{name:22}{shown:>10}  target {figure['target']:.1%}  {verdict}")
    below = figures["machine_uptime"]["below_target"]
    if below:
        click.echo(f"machines below the uptime target (tenant ids): {', '.join(map(str, below))}")
