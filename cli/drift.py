"""``hermes drift``: preview every stack for drift, sweep orphans, exit 1 on any finding.

Runs ``pulumi preview --refresh --expect-no-changes`` (through the Automation API) on the shared
stack of the environment and on every tenant stack, staggered by ``--delay`` seconds to respect
the Hetzner API limit, then the orphan sweep.  Exit codes: 0 in sync, 1 drift/orphans/errors.
Settings come from ``control.settings.Settings.from_env()`` (``HERMES_PROVISIONER=hetzner``).
"""

from __future__ import annotations

import click


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
@click.pass_context
def drift(ctx, work_dir: str, delay: float | None, sweep: bool):
    """Report infrastructure drift and orphaned servers; exit 1 when anything is found."""
    from control.errors import HermesError

    try:
        provisioner = (ctx.obj or {}).get("provisioner")
        if provisioner is None:
            from control.providers.hetzner_settings import hetzner_provisioner
            from control.settings import Settings

            provisioner = hetzner_provisioner(Settings.from_env())
        code, text = run_drift(provisioner, work_dir, delay, sweep)
    except HermesError as err:
        raise click.ClickException(err.message) from err
    click.echo(text)
    ctx.exit(code)
