"""Billing pages: plan and invoices, Stripe Checkout, the provisioning progress after paying,
the customer portal, and account deletion (issue #10).

Thin handlers over ``control.services.stripe_billing`` (Stripe API calls) and the tenant's rows.
A Stripe failure is a ``PaymentProviderError`` (502) and an unset ``STRIPE_SECRET_KEY`` a 503
"billing is not set up on this server"; the app's error handler renders both as a page for a
browser.  Another user's objects answer 404, never 403.
"""

from __future__ import annotations

import logging

import segno
from flask import Blueprint, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from control.db import write_transaction
from control.errors import (
    BadRequest,
    PaymentProviderError,
    ProvisioningError,
    ServiceUnavailable,
    Unauthorized,
)
from control.models import Machine, MachineState, Subscription, Tenant
from control.providers.base import PLANS
from control.services import linking
from control.services.accounts import authenticate, normalize_email
from control.services.dashboard import banner
from control.services.lifecycle import delete_tenant_data
from control.services.stripe_billing import (
    LIVE_STATUSES,
    NOT_SET_UP,
    SUBSCRIBED_STATUSES,
    StripeBilling,
    is_local_stripe,
    period_usage,
)
from control.web import runtime
from control.web.accounts import AUTH_LIMITS
from control.web.auth import limiter
from wire.errors import WireError

log = logging.getLogger(__name__)

bp = Blueprint("billing", __name__)

# The steps the success page shows, and which machine states belong to each
# (``MachineState``: requested -> provisioning -> booting -> ready).
STEPS = [("queued", "Queued"), ("server", "Creating your server"), ("agent", "Starting your agent"),
         ("ready", "Agent ready")]
STEP_OF_STATE: dict[str, str] = {
    MachineState.REQUESTED: "queued", MachineState.PROVISIONING: "server",
    MachineState.BOOTING: "agent", MachineState.READY: "ready",
    MachineState.UNHEALTHY: "ready", MachineState.FAILED: "failed",
    MachineState.DEPROVISIONING: "stopped", MachineState.DEPROVISIONED: "stopped"}
# What the success page says at each step (``billing.js`` swaps them as the state moves).
STEP_NOTES = {
    "payment": "Waiting for Stripe's confirmation of your payment…",
    "queued": "Your server is queued and will be created in a moment…",
    "server": "Creating your server…",
    "agent": "Your server is up; your agent is starting…",
    "ready": "Your agent is ready.",
    "failed": "Your server could not be created. The operator has been told and will fix it; "
              "you do not need to pay again.",
    "stopped": "Your agent is shut down (the subscription ended).",
}
# The dashboard's web chat (control/web/dashboard.py), the other way to talk to the agent.
WEB_CHAT = "/dashboard/chat"


class DeleteAccountForm(FlaskForm):
    """The account's e-mail address and password, typed again to confirm deletion."""

    email = EmailField("Your e-mail address", validators=[DataRequired()])
    password = PasswordField("Your password", validators=[DataRequired()])


@bp.app_context_processor
def _stripe_test_mode() -> dict:
    """``stripe_test_mode`` for every page: base.html shows the LOCAL TEST MODE banner."""
    return {"stripe_test_mode": is_local_stripe(runtime().settings)}


def _billing() -> StripeBilling:
    return StripeBilling(runtime().settings)


def _tenant() -> Tenant:
    return current_user.tenant


def _has_subscription(tenant: Tenant, statuses: tuple[str, ...]) -> bool:
    """True when the webhooks recorded a subscription of the tenant in one of ``statuses``."""
    return (Subscription.select().where((Subscription.tenant == tenant)
                                        & Subscription.status.in_(statuses)).exists())


@bp.get("/billing")
@login_required
def overview():
    """Plan, status, renewal date, usage this period against the plan, and the invoices."""
    tenant, settings = _tenant(), runtime().settings
    billing = _billing()
    subscription = billing.subscription(tenant)
    invoices = billing.invoices(tenant)
    usage = None
    if subscription and subscription["current_period_start"] and subscription["current_period_end"]:
        usage = period_usage(tenant, subscription["current_period_start"],
                             subscription["current_period_end"], settings.plan_budget_cents)
    return render_template("billing/overview.html", tenant=tenant, subscription=subscription,
                           invoices=invoices, usage=usage, banner=banner(tenant), plans=PLANS)


@bp.get("/billing/checkout")
@login_required
def checkout():
    """Start Stripe Checkout for ``?plan=light|heavy`` (303 to Stripe's page); a tenant that
    already pays goes to ``/billing`` instead."""
    plan = request.args.get("plan", "")
    if plan not in PLANS:
        raise BadRequest(f"choose a plan: {' or '.join(PLANS)}")
    tenant = _tenant()
    if _has_subscription(tenant, SUBSCRIBED_STATUSES):
        flash("You already have a subscription; change or cancel it here.", "info")
        return redirect(url_for("billing.overview"), code=303)
    success = url_for("billing.success", _external=True) + "?session_id={CHECKOUT_SESSION_ID}"
    cancel = url_for("billing.overview", _external=True)
    return redirect(_billing().checkout_url(tenant, plan, success, cancel), code=303)


def _status(tenant: Tenant) -> dict:
    """What the success page follows: machine state, its step, the plan, and once the agent is
    ready the Telegram deep link (a link token is issued for it if none is current)."""
    machine = Machine.get_or_none(Machine.tenant == tenant)
    state = machine.state if machine is not None else None
    step = STEP_OF_STATE.get(state or "", "payment")
    link = None
    if step == "ready":
        settings = runtime().settings
        with write_transaction():
            token = linking.current_token(tenant, settings.link_token_ttl)
        link = linking.deep_link(settings.telegram_bot_username, token.token)
    return {"state": state, "step": step, "plan": tenant.plan, "account": tenant.status,
            "telegram_link": link, "web_chat": WEB_CHAT if link else None}


@bp.get("/billing/success")
@login_required
def success():
    """After paying: provisioning progress (``billing.js`` polls ``status.json``), then how to
    link Telegram (deep link and QR code) and the web chat."""
    tenant = _tenant()
    payment = None
    session_id = request.args.get("session_id")
    if session_id and runtime().settings.stripe_secret_key:
        try:
            payment = _billing().checkout_session(tenant, session_id)
        except PaymentProviderError:
            payment = {"status": "unknown", "payment_status": "unknown", "plan": None}
    status = _status(tenant)
    qr = None
    if status["telegram_link"]:
        qr = segno.make(status["telegram_link"], error="m").svg_inline(
            scale=5, dark="#000000", light="#ffffff", title="Telegram link QR code")
    keys = [key for key, _label in STEPS]
    at = keys.index(status["step"]) if status["step"] in keys else -1
    return render_template("billing/success.html", status=status, steps=STEPS, at=at,
                           payment=payment, qr=qr, notes=STEP_NOTES,
                           link_hours=runtime().settings.link_token_ttl // 3600)


@bp.get("/billing/status.json")
@login_required
def status_json():
    """The signed-in user's provisioning status as JSON (``_status``)."""
    return jsonify(_status(_tenant()))


@bp.get("/billing/portal")
@login_required
def portal():
    """Open the Stripe customer portal (303); without a subscription, back to ``/billing``."""
    tenant = _tenant()
    if not tenant.stripe_customer_id:
        flash("You have no subscription to manage yet: choose a plan first.", "info")
        return redirect(url_for("billing.overview"), code=303)
    return redirect(_billing().portal_url(tenant, url_for("billing.overview", _external=True)),
                    code=303)


@bp.route("/account/delete", methods=["GET", "POST"])
@login_required
@limiter.limit(AUTH_LIMITS, methods=["POST"])
def delete_account():
    """Delete the account after the user typed its e-mail address and password: cancel the
    Stripe subscriptions, delete every piece of the tenant's data (the machine without an
    archive included), sign out, and confirm.  A wrong confirmation changes nothing (400)."""
    form = DeleteAccountForm()
    if not form.validate_on_submit():
        return render_template("billing/account_delete.html", form=form), (
            400 if form.is_submitted() else 200)
    account = current_user.account
    if not _confirmed(account, form.email.data or "", form.password.data or ""):
        form.form_errors.append("That is not this account's e-mail address and password; "
                                "nothing was deleted.")
        return render_template("billing/account_delete.html", form=form), 400
    tenant, email = account.tenant, account.email
    settings = runtime().settings
    if settings.stripe_secret_key:
        canceled = StripeBilling(settings).cancel_subscriptions(tenant)
    elif _has_subscription(tenant, LIVE_STATUSES):
        raise ServiceUnavailable(f"{NOT_SET_UP}, so your subscription cannot be canceled; "
                                 "nothing was deleted")
    else:
        canceled = []
    try:
        delete_tenant_data(tenant, runtime())
    except (ProvisioningError, WireError) as exc:
        log.error("account deletion of tenant %s stopped: %s", tenant.id, exc)
        raise ServiceUnavailable("Your subscription is canceled, but your agent's server could "
                                 "not be deleted just now; nothing else was deleted. Please try "
                                 "again in a few minutes.") from exc
    logout_user()
    session.clear()
    return render_template("billing/account_deleted.html", email=email, canceled=len(canceled))


def _confirmed(account, email: str, password: str) -> bool:
    """True when ``email`` and ``password`` are the signed-in account's own."""
    try:
        typed = normalize_email(email)
    except BadRequest:
        return False
    if typed != account.email:
        return False
    try:
        return authenticate(typed, password).id == account.id
    except Unauthorized:
        return False
