"""Connections to third-party services (issue #13): the JSON API for the signed-in user, the
OAuth callback, the dashboard's Connections page and ``POST /webhooks/composio``.

Thin handlers over ``control.services.connections``.  The API answers JSON errors, 401 (not
a redirect to the sign-in page) without a session; POST and DELETE need the session's CSRF
token in ``X-CSRFToken`` (flask-wtf).  Everything is the current user's tenant's: another
user's connection is "not found" (404).
"""

from __future__ import annotations

import logging
from functools import wraps

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from control.errors import BadRequest, Unauthorized
from control.models import ConnectionStatus, Tenant
from control.services import connections
from control.web import runtime
from control.web.auth import csrf
from control.web.webhooks import WEBHOOK_MAX_BYTES, json_body

log = logging.getLogger(__name__)

bp = Blueprint("connections", __name__)


def service() -> connections.Connections:
    """The ``Connections`` service of the current app (``connections.from_runtime``)."""
    return connections.from_runtime(runtime())


def _tenant() -> Tenant:
    return Tenant.get_by_id(current_user.tenant.id)


def api_login_required(view):
    """Like ``login_required``, but a JSON 401 instead of a redirect to the sign-in page."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            raise Unauthorized("Sign in first.")
        return view(*args, **kwargs)

    return wrapper


@bp.get("/api/hermes/connections")
@api_login_required
def list_connections():
    """``{"connections": [...]}``: every service with the user's status (``overview``)."""
    return jsonify(connections=connections.overview(_tenant()))


@bp.post("/api/hermes/connections/<key>")
@api_login_required
def connect(key: str):
    """Connect service ``key``: OAuth ``{"status", "redirect_url"}``; API key (JSON body with
    the credential fields) ``{"status"}``."""
    svc = connections.service_or_404(key)
    payload = request.get_json(silent=True) if svc.auth == "api_key" else None
    if svc.auth == "api_key" and payload is None:
        raise BadRequest("Send a JSON object with the credential fields.", code="bad_json")
    callback = url_for("connections.callback", _external=True)
    answer = service().connect(_tenant(), key, payload, callback)
    return jsonify(answer), 201


@bp.delete("/api/hermes/connections/<key>")
@api_login_required
def disconnect(key: str):
    """Disconnect service ``key``; ``{"status": "removed"}``."""
    service().disconnect(_tenant(), key)
    return jsonify(status="removed")


@bp.get("/connections/callback")
@login_required
def callback():
    """Where Composio's consent page returns the browser (``connected_account_id`` in the
    query); the account's status is read from Composio, then back to the Connections page."""
    account_id = request.args.get("connected_account_id", "")
    if not account_id or len(account_id) > 100:
        raise BadRequest("The connection callback lacks its connected account id.")
    row = service().complete_oauth(_tenant(), account_id)
    name = connections.service_or_404(row.service).name
    if row.status == ConnectionStatus.ACTIVE:
        flash(f"{name} is connected. Your agent can use it from your next message on.", "ok")
    else:
        flash(f"{name} was not connected ({row.status}). You can try again.", "error")
    return redirect(url_for("connections.page"))


@bp.get("/dashboard/connections")
@login_required
def page():
    """The Connections page: a card per service with its status and connect/disconnect."""
    return render_template("dashboard/connections.html",
                           services=connections.overview(_tenant()),
                           set_up=bool(runtime().settings.composio_api_key))


@bp.post("/webhooks/composio")
def webhook():
    """Composio's webhooks: verified (Standard Webhooks, 5-minute tolerance) before anything
    is parsed or stored, idempotent on ``webhook-id``."""
    rt = runtime()
    request.max_content_length = WEBHOOK_MAX_BYTES
    secret = rt.settings.composio_webhook_secret
    if not secret:
        # Like Telegram's webhook: nothing can verify, so nothing is accepted.
        log.error("COMPOSIO_WEBHOOK_SECRET is not set; refusing Composio webhooks")
        raise Unauthorized("Composio webhooks are not configured", code="bad_signature")
    raw = request.get_data(cache=False)
    webhook_id = connections.verify_webhook(raw, request.headers, secret)
    event = json_body(raw)
    if not isinstance(event, dict):
        raise BadRequest("a Composio event must be a JSON object")
    outcome = service().apply_webhook(webhook_id, event)
    return jsonify(received=True, outcome=outcome)


csrf.exempt(webhook)  # signed by Composio (Standard Webhooks), not by a form token
