"""Slack: the Events API, interactivity and ``/hermes`` on slack-bolt, and the OAuth install.

Routes (``bp``): ``POST /webhooks/slack/events``, ``POST /webhooks/slack/interactions``,
``POST /webhooks/slack/commands``, ``GET /slack/install`` ("Add to Slack") and
``GET /slack/oauth_redirect`` (``oauth.v2.access``, then the installation is stored with its bot
token encrypted: ``control.services.slack_install``).

Every POST is checked before anything is parsed or stored, in this order: the v0 signature
over the raw body with ``SLACK_SIGNING_SECRET`` and the 5-minute replay window (401 otherwise:
https://docs.slack.dev/authentication/verifying-requests-from-slack), then the body's shape
(400).  Only then does bolt dispatch it, and bolt's own request verification runs the same
check again (its 401 is rendered as ours).  bolt runs with ``process_before_response``: the
listener runs inside the request, and all it does is fast local work (a database transaction
and one bus append, ``control.services.channel_routing``), so Slack gets its answer well within
its 3 seconds (https://docs.slack.dev/apis/events-api/#responding) and no thread outlives the
request.  The reply is the delivery worker's job: it posts with ``chat.postMessage`` and
streams with ``chat.update`` (``control.channels.slack``).

Idempotency: a message is routed once per Slack ``event_id`` (``WebhookEvent``), so a retry
(``X-Slack-Retry-Num``) publishes nothing twice; commands, shortcuts and modal submissions are
keyed by their ``trigger_id``.  An unlinked person gets an ephemeral answer and nothing
reaches any agent.  Who is speaking is ``<installation>:<user>`` (``ChatIdentity``); the
installation key is the team id (the enterprise id for an org-wide install).

The Slack app's configuration (https://api.slack.com/apps) that matches these routes: Event
Subscriptions ``<public url>/webhooks/slack/events`` with the bot events ``app_mention``,
``message.im`` and ``app_home_opened``; Interactivity ``<public url>/webhooks/slack/interactions``
with a global shortcut whose callback id is ``ask_hermes``; the slash command ``/hermes`` at
``<public url>/webhooks/slack/commands``; the Home tab and the Messages tab enabled; the OAuth
redirect URL ``<public url>/slack/oauth_redirect``; the bot scopes of ``SLACK_SCOPES``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from urllib.parse import parse_qs

from flask import g, jsonify, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_bolt.adapter.flask.handler import to_bolt_request, to_flask_response
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from control.channels import slack_views as views
from control.channels.base import InboundMessage
from control.channels.slack import chat_id_for, file_attachments
from control.errors import BadRequest, NotFound, ServiceUnavailable, Unauthorized
from control.services import channel_routing, channel_texts, linking
from control.services.slack_install import (
    DatabaseInstallationStore,
    DatabaseStateStore,
    StoreAuthorize,
    installation_key,
    is_installed,
)
from control.web import runtime
from control.web.auth import limiter
from control.web.webhooks import json_body, retry_later, webhook_blueprint
from wire.errors import BusUnavailable

log = logging.getLogger(__name__)

bp = webhook_blueprint("slack", __name__)  # signed by Slack (v0 signature)

INSTALL_PATH, REDIRECT_PATH = "/slack/install", "/slack/oauth_redirect"
CHANNEL = "slack"
NOT_INSTALLED = "Hermes is not installed in this workspace (any more); ask an admin to add it again."
THINKING = "Thinking… the answer arrives in your DM with Hermes."
# Slack's replay window: "more than five minutes from local time" is refused (signature docs).
REPLAY_WINDOW = 300  # seconds
# Per client (IPv4 address or IPv6 /64): every visit of the install page stores an OAuth state
# row; a person adding the app to a workspace or two needs a handful.
INSTALL_LIMITS = "10 per minute; 60 per hour"
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")


def init_app(app, rt) -> None:
    """Build the bolt app for ``rt`` (a ``control.runtime.Runtime``) and register ``bp``.

    Slack stays off while ``SLACK_SIGNING_SECRET`` is unset (every webhook answers 401, the
    install routes 404); the install routes also need ``SLACK_CLIENT_ID`` and
    ``SLACK_CLIENT_SECRET``.
    """
    app.extensions["slack"] = build_bolt_app(rt) if rt.settings.slack_signing_secret else None
    app.register_blueprint(bp)


def build_bolt_app(rt) -> App:
    """The bolt ``App`` with its listeners, our installation/state stores and ``authorize``."""
    settings = rt.settings
    store = DatabaseInstallationStore(rt.secrets_box)
    oauth = None
    if settings.slack_client_id and settings.slack_client_secret:
        oauth = OAuthSettings(
            client_id=settings.slack_client_id, client_secret=settings.slack_client_secret,
            scopes=list(settings.slack_scopes), installation_store=store,
            installation_store_bot_only=True, state_store=DatabaseStateStore(),
            install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH,
            redirect_uri=settings.public_url.rstrip("/") + REDIRECT_PATH)
    bolt = App(signing_secret=settings.slack_signing_secret,
               client=WebClient(base_url=settings.slack_api_base.rstrip("/") + "/", timeout=10),
               installation_store=store, installation_store_bot_only=True,
               # bolt's own Authorize classes return None too; App's annotation omits it.
               authorize=StoreAuthorize(store),  # type: ignore[arg-type]
               oauth_settings=oauth,
               process_before_response=True, raise_error_for_unhandled_request=False,
               logger=log)
    _Listeners(rt).register(bolt)
    return bolt


class _Listeners:
    """bolt listeners; each does its routing inside the request (module docstring)."""

    def __init__(self, rt):
        self.rt = rt

    def register(self, bolt: App) -> None:
        bolt.event("message")(self.direct_message)
        bolt.event("app_mention")(self.mention)
        bolt.event("app_home_opened")(self.home_opened)
        bolt.command("/hermes")(self.command)
        bolt.shortcut(views.ASK_SHORTCUT)(self.open_ask)
        bolt.action(views.OPEN_ASK)(self.open_ask)
        bolt.action(views.OPEN_LINK)(self.open_link)
        bolt.action("hermes_dashboard")(lambda ack: ack())  # a URL button: Slack opens it
        bolt.view(views.ASK_MODAL)(self.ask_submitted)
        bolt.view(views.LINK_MODAL)(self.link_submitted)
        bolt.error(self.failed)

    # -- routing -----------------------------------------------------------------------------

    def route(self, message: InboundMessage) -> channel_routing.InboundResult:
        rt = self.rt
        result = channel_routing.route_inbound(
            message, rt.bus, channel_texts.SLACK, envelope_key=rt.envelope_key,
            paused_notice=rt.tasks.paused_notice,
            ingest_media=rt.tasks.ingest_media)
        g.slack_outcome = result.outcome
        return result

    @staticmethod
    def failed(error: Exception) -> None:
        """bolt's error handler: keep the error for the view, which answers for it."""
        g.slack_error = error

    # -- events ------------------------------------------------------------------------------

    def direct_message(self, event: dict, body: dict, context, client) -> None:
        """``message.im``: a person's message in their DM with the bot."""
        if event.get("channel_type") != "im" or event.get("subtype") not in (None, "file_share") \
                or event.get("bot_id"):
            g.slack_outcome = "ignored"
            return
        key = _key(context)
        user = str(event.get("user") or "")
        result = self.route(_inbound(
            key, user, str(body["event_id"]), "message.im", str(event.get("ts") or ""),
            str(event.get("text") or ""), attachments=file_attachments(event, key)))
        if result.answer:
            _ephemeral(client, event.get("channel"), user, result.answer)

    def mention(self, event: dict, body: dict, context, client) -> None:
        """``app_mention``: answered in a thread of the message that mentioned the bot."""
        key = _key(context)
        user = str(event.get("user") or "")
        thread = str(event.get("thread_ts") or event.get("ts") or "")
        text = _MENTION.sub("", str(event.get("text") or "")).strip()
        result = self.route(_inbound(
            key, user, str(body["event_id"]), "app_mention", str(event.get("ts") or ""), text,
            chat_id=chat_id_for(key, str(event.get("channel")), thread),
            attachments=file_attachments(event, key)))
        if result.answer:
            _ephemeral(client, event.get("channel"), user, result.answer, thread)

    def home_opened(self, event: dict, context, client) -> None:
        """``app_home_opened`` on the Home tab: publish the person's Home view."""
        g.slack_outcome = "ignored"
        if event.get("tab") != "home":
            return
        self.publish_home(client, _key(context), str(event.get("user") or ""))
        g.slack_outcome = "answered"

    def publish_home(self, client, key: str, user: str) -> None:
        tenant = linking.tenant_for_chat(CHANNEL, f"{key}:{user}")
        view = views.home_view(tenant, self.rt.settings.public_url.rstrip("/") + "/dashboard")
        try:
            client.views_publish(user_id=user, view=view)
        except SlackApiError as exc:
            log.warning("views.publish for %s failed: %s", user, exc.response.get("error"))

    # -- /hermes, the shortcut and the modals ----------------------------------------------------

    def command(self, ack, command: dict, context) -> None:
        """``/hermes [link CODE | help | question]``: an ephemeral answer at once; a question
        goes to the agent, whose reply arrives in the person's DM."""
        key = _key(context)
        user = str(command.get("user_id") or "")
        text = str(command.get("text") or "").strip()
        head, _, rest = text.partition(" ")
        parsed = (head.lower(), rest.strip()) if head.lower() in ("link", "help") else None
        if not text:
            parsed = ("help", "")
        result = self.route(_inbound(
            key, user, f"command:{command.get('trigger_id')}", "slash_command",
            str(command.get("trigger_id")), text, command=parsed))
        ack(response_type="ephemeral", text=result.answer or (
            THINKING if result.outcome in ("published", "duplicate") else channel_texts.SLACK.linked_help))

    def open_ask(self, ack, body: dict, client) -> None:
        """The "Ask Hermes" global shortcut or Home button: open the question modal."""
        ack()
        self.open_view(client, body, views.ask_modal())

    def open_link(self, ack, body: dict, client) -> None:
        """The Home tab's "Link with a code" button: open the link-code modal."""
        ack()
        self.open_view(client, body, views.link_modal())

    @staticmethod
    def open_view(client, body: dict, view: dict) -> None:
        try:
            client.views_open(trigger_id=body["trigger_id"], view=view)
            g.slack_outcome = "answered"
        except SlackApiError as exc:  # an expired trigger: the person just clicks again
            log.warning("views.open failed: %s", exc.response.get("error"))

    def ask_submitted(self, ack, body: dict, view: dict, context) -> None:
        """The question modal was submitted: route it; an unlinked person sees why in the modal."""
        key = _key(context)
        user = str(body["user"]["id"])
        text = views.submitted_value(view, views.QUESTION_BLOCK, views.QUESTION_INPUT)
        result = self.route(_inbound(
            key, user, f"view:{body.get('trigger_id') or view.get('id')}", "view_submission",
            str(view.get("id") or ""), text))
        if result.answer:
            ack(response_action="errors", errors={views.QUESTION_BLOCK: result.answer[:150]})
        else:
            ack()

    def link_submitted(self, ack, body: dict, view: dict, context, client) -> None:
        """The link-code modal was submitted: redeem the code, then refresh the Home tab."""
        key = _key(context)
        user = str(body["user"]["id"])
        code = views.submitted_value(view, views.CODE_BLOCK, views.CODE_INPUT)
        result = self.route(_inbound(
            key, user, f"view:{body.get('trigger_id') or view.get('id')}", "view_submission",
            str(view.get("id") or ""), "", command=("link", code)))
        if result.outcome == "linked":
            ack()
            self.publish_home(client, key, user)
        else:
            ack(response_action="errors",
                errors={views.CODE_BLOCK: (result.answer or "Already handled.")[:150]})


def _inbound(key: str, user: str, event_id: str, event_type: str, message_id: str, text: str, *,
             chat_id: str | None = None, command: tuple[str, str] | None = None,
             attachments: list | tuple = ()) -> InboundMessage:
    """The ``InboundMessage`` of something ``user`` of workspace ``key`` did: the identity is
    ``<key>:<user>``; the reply goes to ``chat_id``, by default the person's DM with the bot."""
    return InboundMessage(channel=CHANNEL, event_id=event_id, event_type=event_type,
                          identity=f"{key}:{user}", user_id=user,
                          chat_id=chat_id or chat_id_for(key, f"@{user}"), message_id=message_id,
                          text=text, command=command, attachments=tuple(attachments))


def _key(context) -> str:
    return installation_key(context.enterprise_id, context.team_id,
                            context.is_enterprise_install) or ""


def _ephemeral(client, channel, user: str, text: str, thread: str | None = None) -> None:
    """Answer ``user`` only (``chat.postEphemeral``); a failure is logged, the event is done."""
    try:
        client.chat_postEphemeral(channel=channel, user=user, text=text,
                                  **({"thread_ts": thread} if thread else {}))
    except SlackApiError as exc:
        log.warning("chat.postEphemeral to %s failed: %s", user, exc.response.get("error"))


# -- request checks ------------------------------------------------------------------------------


def _bolt() -> App:
    """The bolt app; without ``SLACK_SIGNING_SECRET`` no request can be verified, so every
    one is refused as unauthenticated (as Telegram's webhook does without its secret)."""
    bolt = runtime_bolt()
    if bolt is None:
        raise Unauthorized("Slack is not configured on this server (SLACK_SIGNING_SECRET)")
    return bolt


def runtime_bolt() -> App | None:
    """The app's bolt ``App`` (None while Slack is not configured)."""
    from flask import current_app

    return current_app.extensions.get("slack")


def verify_signature(raw: bytes, secret: str, now: float | None = None) -> None:
    """Check ``X-Slack-Signature`` over the raw body bytes and the timestamp's replay window.

    The scheme (https://docs.slack.dev/authentication/verifying-requests-from-slack): ``v0=``
    and the hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{body}`` with the signing
    secret, the timestamp at most ``REPLAY_WINDOW`` seconds from now.  Computed on bytes (bolt's
    check decodes the body first, which a non-UTF-8 body would crash), compared in constant time.

    Raises:
        Unauthorized: missing, malformed, stale or wrong.
    """
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    now = time.time() if now is None else now
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > REPLAY_WINDOW:
        raise Unauthorized("missing or stale X-Slack-Request-Timestamp")
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw,
                                hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.encode("utf-8", "replace"), expected.encode()):
        raise Unauthorized("bad or missing X-Slack-Signature")


def _form(raw: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("body is not a UTF-8 form") from exc
    return {name: values[-1] for name, values in fields.items()}


def _no_nul(value) -> None:
    """Text with NUL cannot be stored (PostgreSQL text); refuse it like Telegram's webhook."""
    if isinstance(value, str) and "\x00" in value:
        raise BadRequest("a text field contains a NUL character")
    if isinstance(value, dict):
        for item in value.values():
            _no_nul(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul(item)


def check_event(raw: bytes) -> dict:
    """An Events API body: a JSON object; ``event_callback`` with an ``event_id`` and an event.

    Raises:
        BadRequest: anything else.
    """
    body = json_body(raw)
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise BadRequest("not a Slack Events API body: an object with a type is required")
    if body["type"] == "url_verification" and not isinstance(body.get("challenge"), str):
        raise BadRequest("url_verification without a challenge")
    if body["type"] == "event_callback":
        if not (isinstance(body.get("event_id"), str) and isinstance(body.get("event"), dict)
                and isinstance(body["event"].get("type"), str)):
            raise BadRequest("event_callback needs an event_id and an event object with a type")
        _typed(body, _ENVELOPE_FIELDS, "")
        if body["event"]["type"] in HANDLED_EVENTS:
            _typed(body["event"], _EVENT_FIELDS, "event.")
    _no_nul(body)
    return body


# The events this app handles, and the fields of them (and of their envelope) that it or bolt
# reads: strings in every Slack payload (https://docs.slack.dev/reference/events), so any other
# type is not from Slack and is refused before bolt's extractors meet it.
HANDLED_EVENTS = ("message", "app_mention", "app_home_opened")
_ENVELOPE_FIELDS = ("team_id", "enterprise_id", "api_app_id", "context_team_id",
                    "context_enterprise_id")
_EVENT_FIELDS = ("user", "text", "ts", "thread_ts", "event_ts", "channel", "channel_type",
                 "subtype", "tab", "bot_id", "team", "user_team")


def _typed(obj: dict, names: tuple[str, ...], where: str) -> None:
    """Refuse a present field of ``names`` that is neither a string nor null."""
    for name in names:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise BadRequest(f"{where}{name} must be a string")


def check_interaction(raw: bytes) -> dict:
    """An interactivity body: a form whose ``payload`` is a JSON object with a type.

    Raises:
        BadRequest: anything else.
    """
    payload = _form(raw).get("payload")
    if payload is None:
        raise BadRequest("an interaction is a form with a payload field")
    body = json_body(payload.encode())
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) \
            or not isinstance(body.get("user"), dict) or not isinstance(body["user"].get("id"), str):
        raise BadRequest("the interaction payload must be an object with a type and a user id")
    _typed(body, ("trigger_id", "callback_id", "api_app_id", "enterprise_id"), "")
    _typed(body["user"], ("team_id",), "user.")
    for name in ("team", "view", "channel", "container", "enterprise"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise BadRequest(f"{name} must be an object")
    _no_nul(body)
    return body


def check_command(raw: bytes) -> dict:
    """A slash command body: a form with ``command``, ``team_id``, ``user_id`` and
    ``trigger_id`` (or Slack's ``ssl_check=1`` probe).

    Raises:
        BadRequest: anything else.
    """
    fields = _form(raw)
    if fields.get("ssl_check") == "1":
        return fields
    missing = [f for f in ("command", "team_id", "user_id", "trigger_id") if not fields.get(f)]
    if missing:
        raise BadRequest(f"a slash command needs {', '.join(missing)}")
    _no_nul(fields)
    return fields


def _dispatch(check) -> object:
    """Verify, check the shape, let bolt dispatch; map bolt's answer to ours."""
    bolt = _bolt()
    raw = request.get_data()  # cached: bolt's Flask adapter reads it again
    verify_signature(raw, runtime().settings.slack_signing_secret)
    body = check(raw)
    g.slack_outcome, g.slack_error = None, None
    try:
        bolt_request = to_bolt_request(request)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        # bolt's context extractors met a shape Slack never sends; nothing was stored yet.
        raise BadRequest("the body has a field of a type Slack never sends") from exc
    context = bolt_request.context
    if not (body.get("type") == "url_verification" or body.get("ssl_check") == "1"
            or is_installed(context.enterprise_id, context.team_id,
                            context.is_enterprise_install)):
        log.warning("Slack request from a workspace without the app: ignored")
        if "command" in body:
            return jsonify(response_type="ephemeral", text=NOT_INSTALLED)
        return jsonify(ok=True, outcome="ignored")
    response = to_flask_response(bolt.dispatch(bolt_request))
    if isinstance(g.slack_error, BusUnavailable):
        raise retry_later(g.slack_error, "Slack will retry") from g.slack_error
    if g.slack_error is not None:
        raise g.slack_error
    if response.status_code == 401:  # bolt's own check (the same as ours) refused it
        raise Unauthorized("bad, missing or stale X-Slack-Signature")
    if response.status_code == 404:  # an event nobody listens to: acknowledged, not retried
        return jsonify(ok=True, outcome="ignored")
    if body.get("type") == "event_callback" and response.status_code == 200:
        # Slack reads only the status; the body says what happened (bolt's own text for a
        # workspace without the app is for interactive requests, not events).
        return jsonify(ok=True, outcome=g.slack_outcome or "ignored")
    return response


@bp.post("/webhooks/slack/events")
def events():
    """Events API requests: ``url_verification``, ``message.im``, ``app_mention``, ``app_home_opened``."""
    return _dispatch(check_event)


@bp.post("/webhooks/slack/interactions")
def interactions():
    """Interactivity: the global shortcut, Home tab buttons and modal submissions."""
    return _dispatch(check_interaction)


@bp.post("/webhooks/slack/commands")
def commands():
    """The ``/hermes`` slash command."""
    return _dispatch(check_command)


def _oauth() -> object:
    bolt = runtime_bolt()
    if bolt is None or bolt.oauth_flow is None:
        raise NotFound("Slack installation is not offered on this server (SLACK_SIGNING_SECRET, "
                       "SLACK_CLIENT_ID, SLACK_CLIENT_SECRET)")
    response = SlackRequestHandler(bolt).handle(request)
    if response.status_code >= 500:
        raise ServiceUnavailable("the Slack installation could not be stored; try again")
    if response.status_code >= 400:
        raise BadRequest("The Slack installation did not complete (the link expired, was used "
                         "already, or Slack refused it). Start again from /slack/install.")
    return response


@bp.get(INSTALL_PATH)
@limiter.limit(INSTALL_LIMITS)
def install():
    """The "Add to Slack" page: a link to Slack's authorize URL with a fresh ``state``."""
    return _oauth()


@bp.get(REDIRECT_PATH)
def oauth_redirect():
    """Slack's redirect after the person approved: exchange the code, store the installation."""
    return _oauth()
