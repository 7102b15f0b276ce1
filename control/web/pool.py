"""``GET /api/pool/config``: where a warm-pool server's bootstrap fetches its tenant (issue 22).

The caller is identified by the one-time pool token in its boot config alone (``Authorization:
Bearer``), never by anything it sends; ``control.services.warm_pool.fetch_config`` answers
``204`` while it is unclaimed, its config once (``200``), and ``401``/``404`` otherwise.
CSRF-exempt: the caller is a server with a bearer token, not a browser session.  The body holds
secrets: never logged.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from control.services import warm_pool
from control.services.secrets_box import box_from_settings
from control.web import runtime
from control.web.auth import csrf

bp = Blueprint("pool", __name__)
csrf.exempt(bp)  # pool servers authenticate with their bearer token

PATH = "/api/pool/config"


@bp.route(PATH, methods=["GET"])
def pool_config():
    """Answer a pool server's poll.

    Returns:
        204 (not claimed yet: poll again) or 200 ``{"env": {...}, "files": {...}}``, with
        ``Cache-Control: no-store``.

    Raises:
        Unauthorized: no bearer token, or one no pool server holds (401).
        NotFound: the config was fetched already or the server is retiring (404).
    """
    config = warm_pool.fetch_config(request.headers.get("Authorization", ""),
                                    box_from_settings(runtime().settings))
    answer = Response(status=204) if config is None else jsonify(config)
    answer.headers["Cache-Control"] = "no-store"
    return answer
