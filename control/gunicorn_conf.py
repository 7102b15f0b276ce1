"""gunicorn settings for the control plane: ``gunicorn --config python:control.gunicorn_conf``.

Only what the command line of ``hermes-control.service`` cannot say:

* In Prometheus multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, see ``control.web.metrics``) a
  worker that exits must have its live gauge files marked dead, as the prometheus_client docs
  ("Multiprocess Mode", gunicorn) require.  Counters and histograms of dead workers are kept,
  so totals never drop.
* The access log masks tokens (``MaskingLogger``; issue 19, finding 12).
"""

from __future__ import annotations

from gunicorn.glogging import Logger  # type: ignore[import-untyped]
from prometheus_client import multiprocess

from control.settings import Settings
from control.web.log_masking import mask_path, mask_url

# gunicorn access-log atoms that hold a request target or a Referer (gunicorn's "Access log
# format" docs): their tokens and query strings are masked before the line is written.
_TARGET_ATOMS = ("U", "{raw_uri}e", "{path_info}e", "{request_uri}e")
_QUERY_ATOMS = ("q", "{query_string}e")
_REFERER_ATOMS = ("f", "{referer}i", "{http_referer}e")


class MaskingLogger(Logger):
    """gunicorn's logger with tokens masked in every access-log atom that carries a URL
    (``control.web.log_masking``): the request line ``r`` keeps method and protocol, the path
    loses its query string and the token segment of reset, sign-up and media links."""

    def atoms(self, resp, req, environ, request_time) -> dict:
        """gunicorn's atoms (``Logger.atoms``), masked."""
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["r"] = (f"{environ.get('REQUEST_METHOD', '-')} "
                      f"{mask_path(environ.get('RAW_URI') or '-')} "
                      f"{environ.get('SERVER_PROTOCOL', '-')}")
        for name in _TARGET_ATOMS:
            if isinstance(atoms.get(name), str):
                atoms[name] = mask_path(atoms[name])
        for name in _QUERY_ATOMS:
            if name in atoms:
                atoms[name] = ""
        for name in _REFERER_ATOMS:
            if isinstance(atoms.get(name), str) and atoms[name] != "-":
                atoms[name] = mask_url(atoms[name])
        return atoms


logger_class = MaskingLogger


def child_exit(server, worker) -> None:
    """gunicorn server hook, run in the master after a worker exited (any reason).

    Args:
        server: the gunicorn ``Arbiter``.
        worker: the exited ``Worker``; its ``pid`` names its metric files.
    """
    directory = Settings.from_env().metrics_multiproc_dir
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
