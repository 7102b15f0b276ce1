"""The Jobs API (``/api/jobs``, issue 23) and the dashboard's API page (tokens and jobs).

Thin handlers over ``control.services.jobs``.  The API authenticates with
``Authorization: Bearer <token>`` (a token made on ``/dashboard/api``), so it is CSRF-exempt and
answers JSON errors (``{"error", "message"}``): 401 bad token, 403 missing scope, 400 bad
input, 404 another tenant's or no job, 409 a job that already ended, 429 rate limited.
``POST`` honours ``Idempotency-Key`` (the same key and token return the first job, 200).
The dashboard page needs a session; its forms carry the CSRF token (flask-wtf).
"""

from __future__ import annotations

import hashlib
import logging
import re

from flask import Blueprint, jsonify, render_template, request, url_for
from flask_login import current_user, login_required

from control.db import write_transaction
from control.errors import BadRequest, NotFound
from control.models import ApiToken, Tenant
from control.services import jobs
from control.services.secrets_box import box_from_settings
from control.web import runtime
from control.web.auth import client_key, csrf, limiter
from control.web.webhooks import json_body

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)

# Requests per token and route (per client address without a token): two a second lets a
# batch client queue a hundred jobs in a minute and bounds what a leaked token can do; the
# daily budget bounds the spend.
API_LIMITS = "120/minute;3000/hour"
# Bytes: a prompt of MAX_PROMPT_CHARS characters of 4-byte UTF-8 plus the other fields.
MAX_BODY_BYTES = 128 * 1024


def _token_key() -> str:
    """Rate-limit key: the SHA-256 of the bearer token, else the client's address."""
    token = jobs.bearer(request.headers.get("Authorization", ""))
    return "token:" + hashlib.sha256(token.encode()).hexdigest() if token else client_key()


def _authenticated(scope: str) -> ApiToken:
    return jobs.authenticate(jobs.bearer(request.headers.get("Authorization", "")), scope)


def _queue_callbacks(ended) -> None:
    runtime().tasks.queue_job_callbacks(ended)


@bp.post("/api/jobs")
@csrf.exempt
@limiter.limit(API_LIMITS, key_func=_token_key)
def create_job():
    """Create a job: ``201`` with the job (``200`` with the first one for a repeated
    ``Idempotency-Key``); 400 on a malformed body."""
    token = _authenticated("jobs:write")
    request.max_content_length = MAX_BODY_BYTES
    body = json_body(request.get_data())
    job, created, ended = jobs.create_job(token, body, request.headers.get("Idempotency-Key"),
                                          runtime().bus)
    _queue_callbacks(ended)
    answer = jsonify(jobs.job_view(job))
    answer.headers["Location"] = url_for("jobs.get_job", job_id=job.public_id)
    return answer, 201 if created else 200


@bp.get("/api/jobs")
@csrf.exempt
@limiter.limit(API_LIMITS, key_func=_token_key)
def list_jobs():
    """The token's tenant's newest jobs (``?state=`` filters): ``{"jobs": [...]}``."""
    token = _authenticated("jobs:read")
    return jsonify(jobs=[jobs.job_view(j) for j in jobs.list_jobs(token.tenant_id,
                                                                  request.args.get("state"))])


@bp.get("/api/jobs/<job_id>")
@csrf.exempt
@limiter.limit(API_LIMITS, key_func=_token_key)
def get_job(job_id: str):
    """One job (poll it until its state is ``done``, ``failed`` or ``cancelled``)."""
    token = _authenticated("jobs:read")
    return jsonify(jobs.job_view(jobs.get_job(token.tenant_id, job_id)))


@bp.delete("/api/jobs/<job_id>")
@csrf.exempt
@limiter.limit(API_LIMITS, key_func=_token_key)
def cancel_job(job_id: str):
    """Cancel a waiting or queued job; answer it, now ``cancelled``."""
    token = _authenticated("jobs:write")
    ended = jobs.cancel_job(token.tenant_id, job_id, runtime().bus)
    _queue_callbacks(ended)
    return jsonify(jobs.job_view(jobs.get_job(token.tenant_id, job_id)))


def _tenant() -> Tenant:
    return Tenant.get_by_id(current_user.tenant.id)


def _page(status: int = 200, **shown):
    tenant = _tenant()
    return render_template("dashboard/api.html", tokens=jobs.tokens_of(tenant),
                           jobs=jobs.list_jobs(tenant.id, limit=50), scopes=jobs.SCOPES,
                           **shown), status


@bp.get("/dashboard/api")
@login_required
def page():
    """API tokens (create, revoke) and the latest jobs."""
    return _page()


@bp.post("/dashboard/api/tokens")
@login_required
def create_token():
    """Create a token from the form (``name``, ``scopes``); the page shows the token and its
    signing secret this once.  A bad form: the page with the error (400)."""
    try:
        with write_transaction():
            row, token, secret = jobs.create_token(
                _tenant(), request.form.get("name", ""), request.form.getlist("scopes"),
                box_from_settings(runtime().settings))
    except BadRequest as exc:
        return _page(400, error=str(exc))
    log.info("API token %s created", row.id)
    return _page(201, new_token=token, new_secret=secret, new_name=row.name)


@bp.post("/dashboard/api/tokens/<token_id>/revoke")
@login_required
def revoke_token(token_id: str):
    """Revoke one of the user's tokens (another user's, or an id that is not a number: 404);
    the page again."""
    if not re.fullmatch(r"[0-9]{1,18}", token_id):  # 18 digits fit a 64-bit key
        raise NotFound("No such token.")
    with write_transaction():
        row = jobs.revoke_token(_tenant(), int(token_id))
    return _page(200, notice=f"Token {row.name!r} revoked.")
