"""Mission control (``/ops``, issue 21): operators run the fleet from the browser.

Thin handlers over ``control.services.operators``, ``attention``, ``ops_overview``,
``ops_dead_letters``, ``ops_provisioning`` and ``audit``, the services the ``hermes`` CLI
calls.  Every route but ``/ops/login`` answers 404, exactly like an unknown path, to anyone who
is not a signed-in operator (a user's session included), so the console is invisible to the
internet; a POST is then checked for its CSRF token (flask-wtf, the blueprint is exempt from
the app-wide check so that the 404 comes first) and for the operator's role
(``operators.require``: 403).  Each change writes one audit row.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from control.db import write_transaction
from control.errors import BadRequest, ServiceUnavailable, Unauthorized
from control.models import Operator
from control.services import (
    attention,
    audit,
    llm_registry,
    operators,
    ops_channels,
    ops_dead_letters,
    ops_fleet,
    ops_history,
    ops_overview,
    ops_provisioning,
    ops_tenants,
    slo,
)
from control.web import ops_session
from control.web.accounts import AUTH_LIMITS, FAILED_LOGINS_PER_ACCOUNT
from control.web.auth import account_key, csrf, limiter
from wire.errors import WireError

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)
csrf.exempt(bp)  # checked by the blueprint itself, after the 404 guard

ATTENTION_ACTIONS = ("acknowledge", "assign", "snooze", "resolve")
DEAD_LETTER_ACTIONS = ("requeue", "discard")
FLEET_ACTIONS = ("restart", "pause", "resume", "reprovision", "resize", "deprovision")


def _runtime():
    return current_app.extensions["hermes"]


def _operator() -> Operator:
    """The signed-in operator (the guard let the request through, so there is one)."""
    operator = ops_session.current()
    assert operator is not None
    return operator


def _actor() -> audit.Actor:
    operator = _operator()
    return audit.Actor(name=operator.email, role=operator.role,
                       source=request.remote_addr or "")


def _id(value: str) -> int:
    """A path segment that must be a positive id; anything else is 404."""
    if not value.isdigit() or len(value) > 12:
        abort(404)
    return int(value)


@bp.before_request
def _guard():
    """404 to anyone but a signed-in operator (the sign-in page excepted), then CSRF.

    Flask's automatic ``OPTIONS`` answer is left alone: like a 405, it names the methods of a
    path, which ``/openapi.json`` publishes anyway.
    """
    if request.method == "OPTIONS":
        return
    if request.endpoint != "ops.login" and ops_session.current() is None:
        abort(404)
    if request.method == "POST":
        csrf.protect()


@bp.context_processor
def _helpers():
    operator = ops_session.current()
    return {"operator": operator,
            "can": (lambda action: operator is not None and operators.allowed(operator, action))}


@bp.route("/ops/login", methods=["GET", "POST"])
@limiter.limit(AUTH_LIMITS, methods=["POST"])
@limiter.limit(FAILED_LOGINS_PER_ACCOUNT, methods=["POST"], key_func=account_key,
               deduct_when=lambda response: response.status_code != 303)
def login():
    """Sign in with e-mail, password and the current TOTP code; then the overview."""
    if request.method != "POST":  # GET, or HEAD
        if ops_session.current() is not None:
            return redirect(url_for("ops.overview"), code=303)
        return render_template("ops/login.html", error=None)
    form = request.form
    try:
        operator = operators.authenticate(form.get("email", ""), form.get("password", ""),
                                          form.get("totp", ""), _runtime().secrets_box)
    except Unauthorized as exc:
        log.warning("ops sign-in refused from %s", request.remote_addr)
        return render_template("ops/login.html", error=exc.message,
                               email=form.get("email", "")[:320]), 400
    # A fresh Flask session (and CSRF token) for the signed-in operator: no fixation.
    session.clear()
    log.info("operator %s signed in from %s", operator.email, request.remote_addr)
    return ops_session.start(redirect(url_for("ops.overview"), code=303), operator)


@bp.post("/ops/logout")
def logout():
    """Sign out: this and every other session of the operator end."""
    operators.end_sessions(_operator())
    session.clear()
    return ops_session.end(redirect(url_for("ops.login"), code=303))


@bp.get("/ops")
def overview():
    """Machines by state, users, message rate, error rates, spend, attention, dead letters."""
    rt = _runtime()
    view = ops_overview.overview(rt.bus, rt.settings.plan_budget_cents)
    return render_template("ops/overview.html", view=view, slos=slo.report(rt.bus),
                           failed=ops_provisioning.ledger("failed")[:10])


@bp.get("/ops/attention")
def attention_queue():
    """The attention queue: open items not snoozed; ``?all=1`` adds snoozed ones."""
    items = attention.open_items() if request.args.get("all") == "1" else attention.queue()
    return render_template("ops/attention.html", items=items,
                           assignees=[o.email for o in operators.listing()
                                      if o.role != "viewer"])


@bp.get("/ops/attention.json")
def attention_export():
    """Every unresolved item, snoozed ones too, as JSON (``{"items": [...]}``)."""
    return _download({"items": [attention.as_dict(item) for item in attention.open_items()]},
                     "hermes-attention.json")


@bp.post("/ops/attention/<item>/<action>")
def attention_action(item: str, action: str):
    """Acknowledge, assign (``assignee``), snooze (``hours``) or resolve (``note``) an item."""
    item_id = _id(item)
    if action not in ATTENTION_ACTIONS:
        abort(404)
    operators.require(_operator(), f"attention.{action}")
    actor, form = _actor(), request.form
    with write_transaction():
        if action == "acknowledge":
            before, after = attention.acknowledge(item_id, actor.name)
        elif action == "assign":
            before, after = attention.assign(item_id, form.get("assignee", "")[:320])
        elif action == "snooze":
            hours = form.get("hours", "")
            if not hours.isdigit() or len(hours) > 4:
                raise BadRequest("hours must be a whole number")
            before, after = attention.snooze(item_id, int(hours))
        else:
            before, after = attention.resolve(item_id, actor.name, form.get("note", ""))
        audit.record(actor, f"attention.{action}", f"attention:{item_id}", before, after)
    flash(f"Attention item {item_id}: {action} done.", "ok")
    return redirect(url_for("ops.attention_queue"), code=303)


@bp.get("/ops/dead-letters")
def dead_letters():
    """Dead letters per stream with their reason and masked payload."""
    bus = _runtime().bus
    try:
        letters, counts = ops_dead_letters.listing(bus), ops_dead_letters.counts(bus)
    except WireError as exc:
        raise ServiceUnavailable(f"the bus cannot be reached: {exc}") from exc
    return render_template("ops/dead_letters.html", letters=letters, counts=counts)


@bp.post("/ops/dead-letters/<action>")
def dead_letter_action(action: str):
    """Requeue or discard one dead letter (form fields ``stream`` and ``entry_id``)."""
    if action not in DEAD_LETTER_ACTIONS:
        abort(404)
    operators.require(_operator(), f"dead_letter.{action}")
    stream = ops_dead_letters.check_stream(request.form.get("stream", ""))
    entry_id = request.form.get("entry_id", "")[:64]
    change = ops_dead_letters.requeue if action == "requeue" else ops_dead_letters.discard
    try:
        result = change(_runtime().bus, stream, entry_id)
    except WireError as exc:
        raise ServiceUnavailable(f"the bus cannot be reached: {exc}") from exc
    audit.record(_actor(), f"dead_letter.{action}", f"{stream}#{entry_id}",
                 {"stream": stream, "entry_id": entry_id}, result)
    flash(f"Dead letter {entry_id} of {stream}: {action}d.", "ok")
    return redirect(url_for("ops.dead_letters"), code=303)


@bp.get("/ops/provisioning")
def provisioning_jobs():
    """The provisioning ledger; ``?state=failed|in_progress|all``."""
    which = request.args.get("state", "all")
    which = which if which in ops_provisioning.FILTERS else "all"
    return render_template("ops/provisioning.html", jobs=ops_provisioning.ledger(which),
                           which=which, filters=list(ops_provisioning.FILTERS))


@bp.get("/ops/provisioning/<tenant>")
def provisioning_job(tenant: str):
    """One job's timeline: queued → stack up → server running → agent ready (or the failure)."""
    return render_template("ops/job.html", job=ops_provisioning.get(_id(tenant)))


@bp.post("/ops/provisioning/<tenant>/retry")
def provisioning_retry(tenant: str):
    """Provision a failed tenant again (``provisioning.reprovision``, as the CLI)."""
    tenant_id = _id(tenant)
    operators.require(_operator(), "provisioning.retry")
    before, after, outcome = ops_provisioning.retry(tenant_id, _runtime().tasks.provision_machine)
    audit.record(_actor(), "provisioning.retry", f"tenant:{tenant_id}", before,
                 {**after, "outcome": outcome})
    flash(f"Tenant {tenant_id}: {outcome.replace('_', ' ')}.", "ok")
    return redirect(url_for("ops.provisioning_job", tenant=tenant_id), code=303)


@bp.get("/ops/fleet")
def fleet():
    """Every machine: tenant, plan, state, address, last heartbeat; ``?q=`` e-mail or id."""
    search = request.args.get("q", "")[:320]
    return render_template("ops/fleet.html", rows=ops_fleet.fleet(search), search=search,
                           plans=ops_fleet.PLANS)


@bp.get("/ops/tenants")
def tenants():
    """Tenants by newest; ``?q=`` e-mail (part of it) or id."""
    search = request.args.get("q", "")[:320]
    return render_template("ops/tenants.html", rows=ops_tenants.search(search), search=search)


@bp.get("/ops/tenants/<tenant>")
def tenant(tenant: str):
    """One tenant: subscription, linked channels, usage and spend, recent deliveries."""
    return render_template("ops/tenant.html", t=ops_tenants.detail(_id(tenant)))


@bp.get("/ops/channels")
def channels():
    """Each platform's health and reply outcomes (24 h); the latest failed and recovered
    deliveries."""
    return render_template("ops/channels.html", rows=ops_channels.channels(),
                           failed=ops_channels.latest("failed"),
                           recovered=ops_channels.latest("delivered", recovered_only=True))


@bp.get("/ops/llm")
def llm_backends():
    """The LLM backend registry (issue 23): each provider route's last health probe, each
    backend's calls, error rate and latency over the last hour, the reasons calls went where
    they did, and the latest calls."""
    return render_template("ops/llm.html", health=llm_registry.health(), backends=llm_registry.stats(),
                           reasons=llm_registry.reasons(), calls=llm_registry.selections(),
                           window_minutes=int(llm_registry.WINDOW.total_seconds() // 60))


@bp.get("/ops/history")
def history():
    """Messages, spend, errors and provisioning time as charts; ``?range=24h|7d|30d``."""
    which = request.args.get("range", "24h")
    which = which if which in ops_history.RANGES else "24h"
    return render_template("ops/history.html", charts=ops_history.history(which), which=which,
                           ranges=list(ops_history.RANGES))


@bp.get("/ops/fleet.json")
def fleet_export():
    """The fleet page's rows as JSON (``{"machines": [...]}``, ``?q=`` as the page)."""
    rows = ops_fleet.fleet(request.args.get("q", "")[:320])
    return _download({"machines": [row.as_dict() for row in rows]}, "hermes-fleet.json")


@bp.post("/ops/fleet/<tenant>/<action>")
def fleet_action(tenant: str, action: str):
    """Restart the agent, pause or resume it, reprovision, resize (``plan``) or deprovision
    (``confirm``: the tenant's e-mail, or its id when it has none, typed in full) a tenant's
    machine, as ``hermes tenants`` does."""
    tenant_id = _id(tenant)
    if action not in FLEET_ACTIONS:
        abort(404)
    operators.require(_operator(), f"machine.{action}")
    tasks = _runtime().tasks
    if action == "restart":
        before, after = ops_fleet.restart(tenant_id, tasks.restart_machine)
    elif action == "pause":
        before, after = ops_fleet.pause(tenant_id, tasks.operator_pause_machine)
    elif action == "resume":
        before, after = ops_fleet.resume(tenant_id, tasks.resume_machine)
    elif action == "reprovision":
        before, after = ops_fleet.reprovision(tenant_id, tasks.provision_machine)
    elif action == "resize":
        before, after = ops_fleet.resize(tenant_id, request.form.get("plan", ""),
                                         tasks.resize_machine)
    else:
        row = next(iter(ops_fleet.fleet(str(tenant_id))), None)
        expected = (row.email or str(tenant_id)) if row and row.tenant_id == tenant_id else None
        if expected is None:
            abort(404)
        if request.form.get("confirm", "").strip() != expected:
            raise BadRequest(f"type {expected} to confirm the deprovisioning")
        before, after = ops_fleet.deprovision(tenant_id, tasks.deprovision_machine)
    audit.record(_actor(), f"machine.{action}", f"tenant:{tenant_id}", before, after)
    flash(f"Tenant {tenant_id}: {action} queued.", "ok")
    return redirect(url_for("ops.fleet", q=tenant_id), code=303)


def _day(name: str) -> datetime | None:
    value = request.args.get(name, "")
    if not value:
        return None
    try:
        day = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise BadRequest(f"{name} must be a date, YYYY-MM-DD")
    return datetime.combine(day, time.max if name == "until" else time.min)


def _audit_rows() -> list:
    operators.require(_operator(), "audit.read")
    args = request.args
    return audit.query(actor=args.get("actor", "")[:320], action=args.get("action", "")[:100],
                       target=args.get("target", "")[:300], since=_day("since"),
                       until=_day("until"))


@bp.get("/ops/audit")
def audit_page():
    """The audit trail, newest first; filters ``actor``, ``action`` (``x.`` = prefix),
    ``target``, ``since``/``until`` (dates, UTC); admins only."""
    rows = _audit_rows()
    return render_template("ops/audit.html", rows=[audit.as_dict(r) for r in rows],
                           args=request.args)


@bp.get("/ops/audit.json")
def audit_export():
    """The filtered audit trail as JSON (``{"entries": [...]}``); admins only."""
    rows = _audit_rows()
    return _download({"entries": [audit.as_dict(r) for r in rows]}, "hermes-audit.json")


def _download(body: dict, filename: str):
    """``body`` as a JSON attachment named ``filename``."""
    response = jsonify(body)
    response.headers["Content-Disposition"] = f"attachment; filename={filename}"
    return response


@bp.after_request
def _no_store(response):
    """Operator pages hold fleet data: never cached (OWASP Session Management Cheat Sheet)."""
    response.headers["Cache-Control"] = "no-store"
    return response


