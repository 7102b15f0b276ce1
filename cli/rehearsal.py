"""``hermes rehearsal``: the production path on this machine (see ``rehearsal/run.py``).

Needs root (chroot, mount, overlayfs), redis-server, openssl, a local PostgreSQL server and
the ``infra``, ``control``, ``agent`` and ``dev`` extras (pyinfra, ansible-runner, gunicorn,
moto). Exits 1 with the failing step in the transcript.
"""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--timeout", default=180.0, show_default=True,
              help="Seconds to wait for each step (ready, reply, resize, archive).")
@click.option("--keep", is_flag=True, help="Keep the temporary directory after a success.")
def rehearsal(timeout: float, keep: bool) -> None:
    """Rehearse payment -> VM -> Telegram reply -> resize -> archive on this machine."""
    # deferred: keeps `hermes --help` light: loads peewee (~90 ms)
    from rehearsal.run import main

    sys.exit(main(timeout=timeout, keep=keep, echo=click.echo))
