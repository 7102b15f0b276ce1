"""``GET /healthz`` (liveness) and ``GET /readyz`` (database, bus, workers)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from peewee import PeeweeException

from control.web import runtime
from wire.errors import BusUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when the database and bus answer and every worker this process started is alive.

    Under gunicorn the workers run in the separate ``hermes worker`` process (its systemd unit
    restarts it), so a web-only process reports ``workers: "none in this process"`` and is
    ready on database and bus alone; ``hermes serve`` starts its workers in-process and a dead
    one makes it 503.
    """
    rt = runtime()
    checks: dict[str, object] = {}
    try:
        rt.db.execute_sql("SELECT 1").fetchone()
        checks["database"] = "ok"
    except (PeeweeException, OSError) as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        rt.bus.ping()
        checks["bus"] = "ok"
    except BusUnavailable as exc:
        checks["bus"] = f"error: {exc}"
    workers = rt.workers_alive()
    checks["workers"] = ({name: "ok" if alive else "dead" for name, alive in workers.items()}
                         or "none in this process")
    ready = checks["database"] == "ok" and checks["bus"] == "ok" and all(workers.values())
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503
