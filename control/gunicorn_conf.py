"""gunicorn settings for the control plane: ``gunicorn --config python:control.gunicorn_conf``.

Only what the command line of ``hermes-control.service`` cannot say: in Prometheus multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``, see ``control.web.metrics``) a worker that exits must have
its live gauge files marked dead, as the prometheus_client docs ("Multiprocess Mode",
gunicorn) require.  Counters and histograms of dead workers are kept, so totals never drop.
"""

from __future__ import annotations

from prometheus_client import multiprocess

from control.settings import Settings


def child_exit(server, worker) -> None:
    """gunicorn server hook, run in the master after a worker exited (any reason).

    Args:
        server: the gunicorn ``Arbiter``.
        worker: the exited ``Worker``; its ``pid`` names its metric files.
    """
    directory = Settings.from_env().metrics_multiproc_dir
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
