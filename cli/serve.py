"""``hermes serve``: run the control plane, its workers and the local agents.

Logging is set up by the ``hermes`` group (``cli.main.configure_logging``, HERMES_LOG_FORMAT).
"""

from __future__ import annotations

import click

from control.errors import HermesError
from control.settings import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
def serve(host: str) -> None:
    """Serve webhooks on HERMES_PORT and run every worker until SIGINT/SIGTERM."""
    # deferred: keeps `hermes --help` light: loads huey, redis, peewee (~290 ms)
    from control.server import Server

    try:
        server = Server(Settings.from_env(), host=host)
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc
    server.serve_forever()


@click.command()
@click.option("--workers", default=4, show_default=True, help="Huey worker threads.")
def worker(workers: int) -> None:
    """Run the task consumer and the delivery worker without HTTP (production, next to gunicorn)."""
    # deferred: keeps `hermes --help` light: loads huey, redis, peewee (~290 ms)
    from control.server import Server

    try:
        server = Server(Settings.from_env(), upgrade_schema=False)
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc
    server.work_forever(workers)
