"""``hermes drift``: preview every stack for drift, sweep orphans, exit 1 on any finding.

Runs ``pulumi preview --refresh --expect-no-changes`` (through the Automation API) on the shared
stack of the environment and on every tenant stack, staggered by ``--delay`` seconds to respect
the Hetzner API limit, then the orphan sweep.  Exit codes: 0 in sync, 1 drift/orphans/errors.
Settings come from ``control.settings.Settings.from_env()`` (``HERMES_PROVISIONER=hetzner``).
"""

from __future__ import annotations

import click

from cli.context import open_runtime
from control.errors import HermesError
from control.settings import Settings


def run_drift(provisioner, work_dir: str, delay: float | None, sweep: bool) -> tuple[int, str]:
    """Run the checks on ``provisioner``; return ``(exit code, report text)``."""
    report = provisioner.drift(work_dir, delay=delay, sweep=sweep)
    return (0 if report.ok else 1), report.render()


@click.command()
@click.option("--work-dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False),
              help="Directory holding Pulumi.yaml (the repository root).")
@click.option("--delay", type=float, default=None,
              help="Seconds between two stack previews (default: the configured drift delay).")
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="Run the orphan sweep after the previews.")
@click.option("--textfile", type=click.Path(dir_okay=False), default=None,
              help="Also write hermes_drift_detected (0/1) to this node_exporter textfile "
                   "(the DriftDetected alert in dashboards/alerts reads it).")
@click.option("--record", is_flag=True,
              help="Also record the result in the control database's audit trail (action "
                   "drift.check), for mission control's overview; run it on the control host.")
@click.pass_context
def drift(ctx, work_dir: str, delay: float | None, sweep: bool, textfile: str | None,
          record: bool):
    """Report infrastructure drift and orphaned servers; exit 1 when anything is found."""
    try:
        provisioner = (ctx.obj or {}).get("provisioner")
        if provisioner is None:
            # deferred: keeps `hermes --help` light: loads tenacity, infra (~90 ms)
            from control.providers.hetzner.settings import hetzner_provisioner

            provisioner = hetzner_provisioner(Settings.from_env())
        code, text = run_drift(provisioner, work_dir, delay, sweep)
    except HermesError as err:
        raise click.ClickException(err.message) from err
    click.echo(text)
    if textfile:
        write_drift_textfile(textfile, drifted=code != 0)
    if record:
        record_drift(ok=code == 0, report=text)
    ctx.exit(code)


def record_drift(ok: bool, report: str) -> None:
    """Append the ``drift.check`` audit row: ``{"ok": bool, "report": first 2,000 characters}``."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.db import write_transaction
    from control.services import audit

    runtime = open_runtime()
    with runtime.db.connection_context(), write_transaction():
        audit.record(audit.Actor.cli(), "drift.check", "infrastructure", None,
                     {"ok": ok, "report": report[:2000]})


def write_drift_textfile(path: str, drifted: bool) -> None:
    """Atomically write the ``hermes_drift_detected`` gauge in Prometheus text format.

    node_exporter's textfile collector reads ``*.prom`` files; writing a temp file and renaming
    it avoids a half-written scrape (node_exporter docs, "Textfile Collector").
    """
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        out.write("# HELP hermes_drift_detected 1 when the last hermes drift run found drift.\n"
                  "# TYPE hermes_drift_detected gauge\n"
                  f"hermes_drift_detected {1 if drifted else 0}\n")
    os.replace(tmp, path)
