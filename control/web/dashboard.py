"""The signed-in user's dashboard (issue #10): overview, quick chat, settings, linked chats and
the command reference.

Thin handlers over ``control.services.dashboard``, ``web_chat`` and ``tenant_settings``.  Every
page needs a session (flask-login); everything is the current user's tenant's, so another
user's message or chat is "not found" (404), never "forbidden".
"""

from __future__ import annotations

import re

import segno
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required

from control.channels.whatsapp import link_url
from control.db import write_transaction
from control.errors import BadRequest, Conflict, NotFound
from control.models import Tenant
from control.services import dashboard, linking, tenant_settings, web_chat
from control.web import stream_cap
from wire.commands import COMMANDS

bp = Blueprint("dashboard", __name__)
#: ``/goal`` arguments the agent reads as subcommands, not objectives (``agent.commands.cmd_goal``).
GOAL_VERBS = frozenset({"status", "pause", "resume", "cancel"})


def _runtime():
    return current_app.extensions["hermes"]


def _tenant():
    """The signed-in user's tenant, re-read so a change made in another request shows."""
    return Tenant.get_by_id(current_user.tenant.id)


@bp.context_processor
def _account_banner():
    """Every dashboard page shows the account banner (past due, paused) when there is one."""
    if not current_user.is_authenticated:
        return {}
    return {"account_banner": dashboard.banner(_tenant())}


@bp.get("/dashboard")
@login_required
def overview():
    """Machine state, plan, usage this period against the budget, and links onwards."""
    tenant = _tenant()
    view = dashboard.overview(tenant, _runtime().settings.plan_budget_cents)
    return render_template("dashboard/overview.html", view=view, tenant=tenant)


@bp.get("/dashboard/chat")
@login_required
def chat():
    """The quick chat page with the recent web conversation."""
    tenant = _tenant()
    return render_template("dashboard/chat.html", messages=web_chat.history(tenant),
                           max_chars=web_chat.MAX_CHARS)


@bp.post("/dashboard/chat/messages")
@login_required
def send_message():
    """Publish a chat message (JSON ``{"text"}`` or a form field ``text``); answer
    ``202 {"envelope_id", "stream_url"}``."""
    payload = request.get_json(silent=True) if request.is_json else None
    if request.is_json and not isinstance(payload, dict):
        raise BadRequest("Send a JSON object with a text field.", code="bad_json")
    text = (payload or {}).get("text") if payload is not None else request.form.get("text")
    if text is not None and not isinstance(text, str):
        raise BadRequest("text must be a string.", code="bad_json")
    envelope = web_chat.send(_tenant(), text or "", _runtime().bus)
    return jsonify(envelope_id=envelope.id,
                   stream_url=url_for("dashboard.chat_stream", envelope_id=envelope.id)), 202


@bp.post("/dashboard/goals")
@login_required
def start_goal():
    """Start a goal from the chat page's form (field ``objective``, issue 23): it reaches the
    agent as ``/goal OBJECTIVE`` on the web chat, where the goal's progress reports appear.
    An empty objective, one that is a ``/goal`` subcommand word, or a chat that cannot take
    messages (paused, not ready, too long) is flashed back; nothing is sent."""
    objective = " ".join((request.form.get("objective") or "").split())
    try:
        if not objective:
            raise BadRequest("Describe what the goal should achieve.", code="empty_goal")
        if objective.lower() in GOAL_VERBS:
            raise BadRequest(f"“{objective}” is a goal command; type /goal {objective} in the chat, "
                             "or describe what the goal should achieve.", code="goal_verb")
        web_chat.send(_tenant(), f"/goal {objective}", _runtime().bus)
    except (BadRequest, Conflict) as exc:
        flash(str(exc), "error")
    else:
        flash("Goal started: your agent works on it on its own and reports here.", "ok")
    return redirect(url_for("dashboard.chat"))


@bp.get("/dashboard/chat/stream/<envelope_id>")
@login_required
def chat_stream(envelope_id: str):
    """The reply to ``envelope_id`` as server-sent events (``web_chat.reply_events``)."""
    tenant = _tenant()
    web_chat.check_envelope(tenant, envelope_id)
    db = _runtime().db

    def read():
        # One short connection per poll: a stream may last two minutes and must not hold a
        # pooled database connection all that time.
        with db.connection_context():
            return web_chat.reply_state(envelope_id)

    release = stream_cap.take_slot(tenant.id)  # 429 beyond the tenant's cap
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering (nginx)
    return stream_cap.held_while_open(
        Response(web_chat.reply_events(read), mimetype="text/event-stream", headers=headers),
        release)


@bp.route("/dashboard/settings", methods=["GET", "POST"])
@login_required
def settings():
    """Model, time zone, reply language and preferences; a bad field stores nothing (400)."""
    tenant = _tenant()
    catalog = tenant_settings.model_catalog(_runtime().agent_env())
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        form = tenant_settings.SettingsForm(**{k: request.form.get(k, "") for k in
                                                ("model", "timezone", "language", "preferences")})
        try:
            values = tenant_settings.validate(form, catalog)
        except tenant_settings.InvalidSettings as exc:
            errors, status = exc.errors, 400
            flash(exc.message, "error")
        else:
            with write_transaction():
                tenant_settings.save(tenant, values)
            flash("Settings saved. Your agent uses them from your next message on.", "ok")
            return redirect(url_for("dashboard.settings"))
        shown = form
    else:
        shown = tenant_settings.SettingsForm(model=tenant.model or "", timezone=tenant.timezone or "",
                                             language=tenant.language or "",
                                             preferences=tenant.preferences or "")
    return render_template("dashboard/settings.html", form=shown, errors=errors, catalog=catalog,
                           languages=tenant_settings.LANGUAGES, zones=tenant_settings.zone_names(),
                           max_preferences=tenant_settings.PREFERENCES_MAX_CHARS,
                           default_tz=_runtime().settings.default_tz), status


@bp.get("/dashboard/chats")
@login_required
def chats():
    """Linked chats, and how to link Telegram (deep link and QR code) and WhatsApp (wa.me link)."""
    tenant = _tenant()
    settings_ = _runtime().settings
    with write_transaction():
        token = linking.current_token(tenant, settings_.link_token_ttl)
    link = linking.deep_link(settings_.telegram_bot_username, token.token)
    qr_svg = segno.make(link, error="m").svg_inline(scale=4, dark="#e6e8ee", light="#171a21",
                                                    title="QR code of the Telegram link")
    whatsapp = current_app.extensions.get("whatsapp")
    whatsapp_link = (link_url(whatsapp.business_number, token.token)
                     if whatsapp and whatsapp.business_number else None)
    return render_template("dashboard/chats.html", chats=dashboard.linked_chats(tenant),
                           mask=dashboard.mask_chat_id, link=link, qr_svg=qr_svg,
                           expires_at=token.expires_at, code=token.token,
                           whatsapp_link=whatsapp_link)


@bp.post("/dashboard/chats/<identity_id>/unlink")
@login_required
def unlink(identity_id: str):
    """Unlink one of the user's chats (another user's chat, or an id that is not a number: 404)."""
    if not re.fullmatch(r"[0-9]{1,18}", identity_id):  # 18 digits fit a 64-bit key
        raise NotFound("No such linked chat.")
    with write_transaction():
        removed = dashboard.unlink(_tenant(), int(identity_id))
    flash(f"Unlinked the {removed.channel.title()} chat {dashboard.mask_chat_id(removed.chat_id)}.", "ok")
    return redirect(url_for("dashboard.chats"))


@bp.get("/dashboard/export")
@login_required
def export():
    """Everything the user's agent keeps, as one zip download (``control.services.export``)."""
    # deferred: export would pull the provisioner stack (tenacity, infra: ~80 ms) into the web app
    from control.services.export import export_tenant

    made = export_tenant(_runtime().settings, _tenant())
    return Response(made.data, mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{made.filename}"',
                             "Cache-Control": "no-store"})


@bp.get("/dashboard/commands")
@login_required
def commands():
    """The agent's chat commands, generated from ``wire.commands``."""
    return render_template("dashboard/commands.html", commands=command_reference())


def command_reference() -> list[dict]:
    """Return ``[{"command", "description", "usage": [lines]}]`` for every command of
    ``wire.commands.COMMANDS``, in menu order: the description the bot menus show and each way
    of writing the command."""
    return [{"command": c.name, "description": c.description, "usage": list(c.usage)}
            for c in COMMANDS]
