"""peewee models of the control plane: tenants, billing, machines, chats, messages and usage.

Models bind to ``control.db.database`` (a proxy) and never read configuration.  Times are
naive UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    ModelSelect,
    TextField,
)

from control.db import database


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (how every model stores time)."""
    return datetime.now(UTC).replace(tzinfo=None)


class BaseModel(Model):
    # Declarations for the type checker only: peewee's metaclass adds ``id`` (the AutoField of a
    # model without a primary key), ``<fk>_id`` accessors and backrefs when a class is created,
    # and ignores bare annotations.
    id: AutoField[int]

    class Meta:
        database = database


class TenantStatus(StrEnum):
    """The states of a ``Tenant`` (stored as their string values)."""

    PENDING = "pending"
    """Signed up or paid, not both yet."""
    ACTIVE = "active"
    PAST_DUE = "past_due"
    """A renewal payment failed; Stripe is retrying."""
    CANCELED = "canceled"
    """No paid subscription left: grace, archive, or gone (``control.services.lifecycle``)."""


class Tenant(BaseModel):
    """A user of the service; ``status`` a ``TenantStatus``.

    Preferences the user sets on the dashboard (``None``: the control plane's default):
    ``timezone`` (IANA name), ``language`` (BCP 47 tag for replies), ``model`` (from the
    router's catalog), ``preferences`` (free text about the user and how to answer, at most
    1000 characters).  Subscription lifecycle (issue #10), naive UTC: ``past_due_since``,
    ``grace_until`` (end of the paused period after a cancellation), ``paused_at``,
    ``archive_key`` / ``archived_at`` (where the machine's data went at the end of grace) and
    ``deleted_at`` (account deleted; the row stays as a tombstone for idempotent webhooks).
    """

    email = CharField(null=True, unique=True)
    stripe_customer_id = CharField(null=True, unique=True)
    plan = CharField(null=True)
    status = CharField(default=TenantStatus.PENDING)
    timezone = CharField(null=True)
    language = CharField(null=True)
    model = CharField(null=True)
    preferences = TextField(null=True)
    past_due_since = DateTimeField(null=True)
    grace_until = DateTimeField(null=True)
    paused_at = DateTimeField(null=True)
    archive_key = CharField(null=True)
    archived_at = DateTimeField(null=True)
    deleted_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # MCP proxy (issue #13, ``control/services/mcp_proxy.py``): SHA-256 of the agent's token,
    # and the Composio endpoint it is proxied to (SecretsBox-encrypted JSON).
    mcp_token_hash = CharField(null=True)
    mcp_upstream = TextField(null=True)
    accounts: ModelSelect[Account]
    subscriptions: ModelSelect[Subscription]
    machines: ModelSelect[Machine]
    link_tokens: ModelSelect[LinkToken]
    chats: ModelSelect[ChatIdentity]
    messages: ModelSelect[Message]
    deliveries: ModelSelect[Delivery]
    usage: ModelSelect[Usage]
    connections: ModelSelect[Connection]


class Account(BaseModel):
    """A web login, one per tenant (issue #10).

    ``email`` is stored lower-cased; ``password_hash`` is an Argon2id PHC string
    (argon2-cffi).  ``session_version`` is part of every session's user id, so bumping it
    (password change, reset, "sign out everywhere", deletion) ends every open session.
    Optional TOTP (issue 19, ``control.services.account_totp``): ``totp_secret`` is the
    RFC 6238 secret, ``SecretsBox``-encrypted (None: off); ``totp_last_step`` the last
    30-second step a code was accepted for, so no code is accepted twice.
    """

    tenant = ForeignKeyField(Tenant, backref="accounts", unique=True)
    tenant_id: IntegerField[int]
    email = CharField(unique=True)
    password_hash = CharField()
    session_version = IntegerField(default=0)
    totp_secret = TextField(null=True)
    totp_last_step = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)
    resets: ModelSelect[PasswordReset]


class PasswordReset(BaseModel):
    """A single-use password reset link; only the SHA-256 of its token is stored."""

    account = ForeignKeyField(Account, backref="resets", on_delete="CASCADE")
    account_id: IntegerField[int]
    token_hash = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class SignupRequest(BaseModel):
    """A sign-up waiting for its address to be confirmed (``control.services.signup``): the
    account is created, and attached to a tenant with that address, only when the mailed link
    is used.  Only the SHA-256 of the link's token is kept; ``password_hash`` is the Argon2id
    hash of the password chosen at sign-up; ``plan`` is the checkout to go on to, if any."""

    email = CharField(index=True)
    password_hash = CharField()
    plan = CharField(null=True)
    token_hash = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class OutboxMail(BaseModel):
    """An e-mail to send (transactional outbox): written with the change that causes it,
    sent by a worker over SMTP when ``SMTP_URL`` is set, else printed by ``hermes serve``."""

    to_addr = CharField()
    subject = CharField()
    body = TextField()
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)
    attempts = IntegerField(default=0)
    error = TextField(default="")


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses (https://docs.stripe.com/api/subscriptions/object#subscription_object-status)."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


class Subscription(BaseModel):
    """A Stripe subscription.  ``plan`` is ``light`` | ``heavy`` | ``None`` (unknown price).

    ``status_at``: the ``created`` time (naive UTC) of the Stripe event that set ``status``;
    older events never change it (``control.services.billing``, event ordering).
    """

    stripe_subscription_id = CharField(unique=True)
    tenant = ForeignKeyField(Tenant, backref="subscriptions", null=True)
    tenant_id: IntegerField[int | None]
    stripe_customer_id = CharField(null=True, index=True)
    status = CharField(default=SubscriptionStatus.INCOMPLETE)
    plan = CharField(null=True)
    price_id = CharField(null=True)
    current_period_end = DateTimeField(null=True)
    status_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class MachineState(StrEnum):
    """The states of a ``Machine`` (stored as their string values).

    ``requested`` → ``provisioning`` (the provisioner is creating it) → ``booting`` (the
    provider says it runs; waiting for the agent's lifecycle ``ready`` event) → ``ready``
    ⇄ ``unhealthy`` (heartbeats stopped; back to ready on the next one).  A transient failure
    or a ready timeout goes back to ``requested`` for another attempt; the last one ends in
    ``failed``.  Cancellation: ``paused`` (grace period, agent stopped, data kept; resuming goes
    back to ``booting``) → ``deprovisioning`` → ``deprovisioned``.
    """

    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    BOOTING = "booting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    PAUSED = "paused"
    DEPROVISIONING = "deprovisioning"
    DEPROVISIONED = "deprovisioned"


class Machine(BaseModel):
    """A tenant's VM (or local agent process); ``state`` is a ``MachineState``.

    ``boot_deadline_at``: when a booting machine's agent must have reported ready (naive UTC);
    ``last_heartbeat_at``: the agent's last lifecycle event.
    """

    tenant = ForeignKeyField(Tenant, backref="machines", unique=True)
    tenant_id: IntegerField[int]
    plan = CharField()
    state = CharField(default=MachineState.REQUESTED.value)
    address = CharField(null=True)
    detail = TextField(default="")
    attempts = IntegerField(default=0)
    requested_at = DateTimeField(default=utcnow)
    provisioning_at = DateTimeField(null=True)
    ready_at = DateTimeField(null=True)
    failed_at = DateTimeField(null=True)
    boot_deadline_at = DateTimeField(null=True)
    last_heartbeat_at = DateTimeField(null=True)
    agent_version = CharField(null=True)
    updated_at = DateTimeField(default=utcnow)


class WebhookEvent(BaseModel):
    """A processed webhook delivery, unique per ``(provider, event_id)`` (idempotency key)."""

    provider = CharField()
    event_id = CharField()
    event_type = CharField(default="")
    received_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("provider", "event_id"), True),)


class LinkToken(BaseModel):
    """A single-use token linking a chat to a tenant; expires at ``expires_at``."""

    token = CharField(unique=True)
    tenant = ForeignKeyField(Tenant, backref="link_tokens")
    tenant_id: IntegerField[int]
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class ChatIdentity(BaseModel):
    """A chat on a platform linked to a tenant, unique per ``(channel, chat_id)``."""

    channel = CharField()
    chat_id = CharField()
    user_id = CharField(default="")
    tenant = ForeignKeyField(Tenant, backref="chats")
    tenant_id: IntegerField[int]
    linked_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("channel", "chat_id"), True),)


class Message(BaseModel):
    """The conversation log: one row per inbound envelope (``in``), per final reply (``out``)
    and per control-plane answer (``out``, ``envelope_id`` ``control-…``, no tenant when the
    chat is not linked), each with its platform message id."""

    tenant = ForeignKeyField(Tenant, backref="messages", null=True)
    tenant_id: IntegerField[int | None]
    envelope_id = CharField()
    direction = CharField()
    channel = CharField()
    chat_id = CharField()
    text = TextField(default="")
    platform_message_id = CharField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        # The second serves mission control's time-window counts (issue 21, ops_overview).
        indexes = ((("envelope_id", "direction"), True),
                   (("created_at", "direction", "tenant"), False))


class DeliveryState(StrEnum):
    """The states of a ``Delivery`` (stored as their string values).

    ``sending``: the platform message exists or is being sent, and is still being edited;
    ``delivered``: the final text is on the platform and is never sent again;
    ``failed``: the platform refused the reply for good or reported it undeliverable
    (``Delivery.failure`` says why); it is not retried.
    """

    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(BaseModel):
    """The delivery ledger: one row per reply, so a restart never resends a delivered reply.

    ``state`` is a ``DeliveryState``. ``reply_to`` is the platform id of the user's message
    being answered. ``pending_text`` is set while a ``sendMessage`` whose outcome is not yet
    recorded is in flight (the send intent), with ``pending_after`` the highest platform message
    id of the chat known before it; ``chunk_message_ids`` lists (comma-separated) the ids of the
    continuation messages of a reply longer than the platform's limit.  ``platform_status`` is
    the latest status the platform reported for the reply (WhatsApp: ``sent``, ``delivered``,
    ``read``, ``failed``; null until one arrives) and ``failure`` why it was not delivered.
    """

    envelope_id = CharField(unique=True)
    tenant = ForeignKeyField(Tenant, backref="deliveries")
    tenant_id: IntegerField[int]
    channel = CharField()
    chat_id = CharField(index=True)
    platform_message_id = CharField(null=True)
    reply_to = CharField(null=True)
    pending_text = TextField(null=True)
    pending_after = CharField(null=True)
    chunk_message_ids = TextField(default="")
    last_text = TextField(default="")
    state = CharField(default=DeliveryState.SENDING.value)
    recovered = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)
    delivered_at = DateTimeField(null=True)
    platform_status = CharField(null=True)
    failure = TextField(default="")

    class Meta:
        # Mission control's failed-reply rate over the last hour (issue 21, ops_overview).
        indexes = ((("created_at", "state"), False),)


class Usage(BaseModel):
    """One LLM call's usage: tokens, cost in cents (float), latency in milliseconds;
    ``goal_id`` / ``job_id``: the agent's goal or the job the call worked for (issue 23)."""

    tenant = ForeignKeyField(Tenant, backref="usage")
    tenant_id: IntegerField[int]
    envelope_id = CharField(null=True)
    model = CharField(default="")
    input_tokens = IntegerField(default=0)
    output_tokens = IntegerField(default=0)
    cost_cents = FloatField(default=0.0)
    latency_ms = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    goal_id = IntegerField(null=True)
    job_id = CharField(null=True)


class LlmToken(BaseModel):
    """A tenant's LLM-gateway token (issue #19, ``control/services/llm_gateway.py``): only its
    SHA-256 (hex) is stored; one per tenant, replaced at every provisioning, deleted at
    deprovisioning."""

    tenant = ForeignKeyField(Tenant, backref="llm_tokens", unique=True)
    tenant_id: IntegerField[int]
    token_hash = CharField(unique=True)
    issued_at = DateTimeField(default=utcnow)


class LlmCall(BaseModel):
    """One call through the LLM gateway, metered from the provider's own usage fields.

    ``api``: ``anthropic`` | ``openai`` | ``transcription``; ``status``: the HTTP status the
    agent got; tokens as the provider reported them; ``audio_seconds`` for transcriptions;
    ``cost_cents`` (float, ``wire.pricing``) is what the plan's daily budget counts;
    ``latency_ms``: until the provider's answer (headers) arrived; ``reason``: why the agent's
    router chose this backend (``wire.route_reasons``; empty when the agent named none).
    """

    tenant = ForeignKeyField(Tenant, backref="llm_calls")
    tenant_id: IntegerField[int]
    api = CharField()
    model = CharField(default="")
    status = IntegerField(default=0)
    input_tokens = IntegerField(default=0)
    output_tokens = IntegerField(default=0)
    audio_seconds = FloatField(default=0.0)
    cost_cents = FloatField(default=0.0)
    latency_ms = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    reason = CharField(default="")

    class Meta:
        # The second: mission control's fleet-wide spend and error rate (issue 21).
        indexes = ((("tenant", "created_at"), False), (("created_at", "status"), False))


class LlmBackendHealth(BaseModel):
    """The last health probe of one LLM gateway provider route (issue 23,
    ``control.services.llm_registry``): ``api`` is ``anthropic``, ``openai`` or
    ``transcription``; ``status`` the probe's HTTP status (0: unreachable); ``detail`` a short
    reason when not ok; ``last_ok_at`` the last probe that succeeded."""

    api = CharField(unique=True)
    ok = BooleanField(default=False)
    status = IntegerField(default=0)
    latency_ms = IntegerField(default=0)
    detail = CharField(default="")
    checked_at = DateTimeField(default=utcnow)
    last_ok_at = DateTimeField(null=True)


class BudgetWarning(BaseModel):
    """The 80 % budget warning sent to a tenant's chats on one UTC ``day``
    (``control.services.budget_warning``): unique per tenant and day, so of the gunicorn
    workers that see the crossing only the one whose insert lands sends it."""

    tenant = ForeignKeyField(Tenant, backref="budget_warnings")
    tenant_id: IntegerField[int]
    day = DateField()
    spent_cents = FloatField()
    sent_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "day"), True),)


class MachineEventKind(StrEnum):
    """What a ``MachineEvent`` records (stored as the string values).

    ``provisioned``: a provisioning job ended with the agent ready; ``failed``: a job failed
    for good (its retries used up); ``down``: a ready agent stopped beating (``at`` is its
    last heartbeat); ``up``: it beats again.
    """

    PROVISIONED = "provisioned"
    FAILED = "failed"
    DOWN = "down"
    UP = "up"


class MachineEvent(BaseModel):
    """The append-only history of machine transitions the SLOs are computed from
    (``control.services.slo``, issue 21); written by ``control.services.machine_health``.
    Kept with the tenant's tombstone: it holds no personal data."""

    tenant = ForeignKeyField(Tenant, backref="machine_events")
    tenant_id: IntegerField[int]
    kind = CharField()
    at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("kind", "at"), False), (("tenant", "at"), False))


class AttentionItem(BaseModel):
    """Something an operator must look at (unknown plan, failed provisioning, dead letter).

    Handled from mission control (issue 21, ``control.services.attention``):
    ``acknowledged_at``/``acknowledged_by``, ``assignee`` (an operator's e-mail),
    ``snoozed_until`` (hidden from the open queue until then, naive UTC), and ``resolved_at``
    with ``resolved_by`` (an operator's e-mail, or ``""`` when its cause cleared) and
    ``resolution`` (the note).
    """

    kind = CharField()
    subject = CharField(default="")
    detail = TextField(default="")
    created_at = DateTimeField(default=utcnow)
    resolved_at = DateTimeField(null=True)
    acknowledged_at = DateTimeField(null=True)
    acknowledged_by = CharField(null=True)
    assignee = CharField(null=True)
    snoozed_until = DateTimeField(null=True)
    resolved_by = CharField(null=True)
    resolution = TextField(null=True)


class Operator(BaseModel):
    """A mission-control operator (issue 21, ``control.services.operators``), separate from
    users' accounts.  ``role``: ``viewer`` | ``operator`` | ``admin``; ``password_hash``:
    Argon2id PHC string; ``totp_secret``: the RFC 6238 base32 secret, ``SecretsBox``-encrypted;
    ``totp_last_step``: the last 30-second step accepted (a code is never accepted twice);
    ``session_version`` is part of every operator session, bumped to end them all."""

    email = CharField(unique=True)
    role = CharField()
    password_hash = CharField()
    totp_secret = TextField()
    totp_last_step = IntegerField(default=0)
    session_version = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)


class AuditEntry(BaseModel):
    """One change made by an operator or through the CLI (issue 21, ``control.services.audit``);
    rows are only ever inserted.  ``actor``: the operator's e-mail (or ``cli:<user>``);
    ``role`` theirs at the time; ``action`` e.g. ``attention.resolve``; ``target`` what it
    changed (``tenant:5``); ``before``/``after`` JSON text; ``source`` the client address or
    ``cli``."""

    actor = CharField()
    role = CharField()
    action = CharField(index=True)
    target = CharField(default="")
    before = TextField(default="")
    after = TextField(default="")
    source = CharField(default="")
    created_at = DateTimeField(default=utcnow, index=True)


class ConnectionStatus(StrEnum):
    """The states of a ``Connection`` (stored as their string values; issue #13).

    ``initiated`` (OAuth consent pending) → ``active`` | ``failed``; ``active`` → ``expired``
    (Composio's webhook or the reconciliation) → ``active`` again on reconnecting; any →
    ``removed`` (disconnected here, or the account is gone on Composio's side).
    """

    INITIATED = "initiated"
    ACTIVE = "active"
    EXPIRED = "expired"
    FAILED = "failed"
    REMOVED = "removed"


class Connection(BaseModel):
    """A tenant's connection to one service of ``control/integrations/services.yaml`` through
    Composio, unique per ``(tenant, service)``.  ``status`` is a ``ConnectionStatus``;
    ``composio_account_id`` the Composio connected account (``ca_…``); ``secret`` the
    ``SecretsBox`` token of an API-key service's credentials (JSON), never the plain text.
    """

    tenant = ForeignKeyField(Tenant, backref="connections")
    tenant_id: IntegerField[int]
    service = CharField()
    status = CharField(default=ConnectionStatus.INITIATED.value)
    composio_account_id = CharField(null=True, index=True)
    secret = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "service"), True),)


class SlackInstallation(BaseModel):
    """A Slack workspace (or Enterprise Grid org, for an org-wide install) that installed the app.

    ``installation_key`` is the team id, or the enterprise id of an org-wide install; it
    prefixes every Slack chat id (``control.channels.slack``).  ``bot_token`` is a Fernet token
    (``control.services.secrets_box``), never the plain ``xoxb-`` token; ``bot_scopes`` is
    comma-separated (issue 11).
    """

    installation_key = CharField(unique=True)
    enterprise_id = CharField(null=True)
    team_id = CharField(null=True)
    team_name = CharField(default="")
    app_id = CharField(default="")
    bot_token = TextField()
    bot_id = CharField(default="")
    bot_user_id = CharField(default="")
    bot_scopes = TextField(default="")
    is_enterprise_install = BooleanField(default=False)
    installed_at = DateTimeField(default=utcnow)


class SlackOAuthState(BaseModel):
    """A single-use OAuth ``state`` of the Slack install flow, valid until ``expires_at``."""

    state = CharField(unique=True)
    expires_at = DateTimeField()


class DiscordInteraction(BaseModel):
    """A Discord slash command being answered: its webhook token, Fernet-encrypted
    (``control.services.discord_interactions``); useless after 15 minutes."""

    interaction_id = CharField(unique=True)
    application_id = CharField()
    token = TextField()
    ephemeral = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow, index=True)


class GatewayState(BaseModel):
    """A platform Gateway session's liveness, written by its process (``hermes discord gateway``)
    and read by the channel watchdog."""

    channel = CharField(unique=True)
    connected = BooleanField(default=False)
    seen_at = DateTimeField(default=utcnow)


class WhatsAppWindow(BaseModel):
    """A WhatsApp user's 24-hour customer-service window: the time of their last message
    (``control.services.whatsapp_window``)."""

    wa_id = CharField(unique=True)
    last_inbound_at = DateTimeField(default=utcnow)

class PoolServerState(StrEnum):
    """The states of a ``PoolServer`` (stored as their string values; issue 22).

    ``available`` (booting or booted, unassigned) → ``claimed`` (reserved for one tenant by a
    conditional update) → ``assigned`` (the provider made it the tenant's machine; its config
    may be fetched once) → ``configured`` (fetched: the row is history).  ``retiring``: built
    from an old snapshot or swept; the provider deletes it.
    """

    AVAILABLE = "available"
    CLAIMED = "claimed"
    ASSIGNED = "assigned"
    CONFIGURED = "configured"
    RETIRING = "retiring"


class PoolServer(BaseModel):
    """One pre-booted server of the warm pool (``control.services.warm_pool``).

    ``provider_id``: the provider's handle (Hetzner server id, local slot name);
    ``token_hash``: SHA-256 of the one-time pool token in its boot config; ``tenant``: set by
    the claim (unique: a tenant never holds two); ``sealed_env``: the tenant's agent settings
    encrypted with ``SecretsBox``, erased once fetched; ``booted_at``: the server's first
    call home.
    """

    plan = CharField()
    location = CharField(default="")
    snapshot = CharField(default="")
    provider_id = CharField(unique=True)
    token_hash = CharField(unique=True)
    state = CharField(default=PoolServerState.AVAILABLE.value, index=True)
    tenant = ForeignKeyField(Tenant, null=True, unique=True, backref="pool_servers")
    tenant_id: IntegerField[int | None]
    sealed_env = TextField(null=True)
    address = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    booted_at = DateTimeField(null=True)
    claimed_at = DateTimeField(null=True)
    configured_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)


class ApiToken(BaseModel):
    """A tenant's Jobs API token (issue 23, ``control.services.jobs``): only the SHA-256 (hex) of
    the token is stored; ``scopes`` is space-separated (``jobs:read jobs:write``);
    ``secret_box`` is the callback signing secret, encrypted (``SecretsBox``), because every
    callback is signed with it; ``revoked_at`` set: refused (the row stays for its jobs)."""

    tenant = ForeignKeyField(Tenant, backref="api_tokens")
    tenant_id: IntegerField[int]
    name = CharField()
    token_hash = CharField(unique=True)
    scopes = CharField()
    secret_box = TextField()
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)


class Job(BaseModel):
    """One Jobs API job (issue 23, ``control.services.jobs``): a prompt the tenant's agent runs.

    ``public_id``: the id the API shows (``job_<hex>``); ``envelope_id``: of its ``job``
    envelope; ``state``: ``waiting`` (for dependencies) → ``queued`` (sent to the agent) →
    ``done`` | ``failed`` | ``cancelled``; ``depends_on``: JSON list of public ids;
    ``priority`` 0-100 (higher first); ``budget_cents`` its cap, ``cost_cents`` what it cost
    (US cents); ``result`` the agent's reply or why it failed; ``idempotency_key`` of the
    creating request (unique per token); ``callback_url`` and ``callback_state`` (``none``,
    ``pending``, ``delivered``, ``failed``).
    """

    tenant = ForeignKeyField(Tenant, backref="jobs")
    tenant_id: IntegerField[int]
    token = ForeignKeyField(ApiToken, backref="jobs", null=True)
    token_id: IntegerField[int | None]
    public_id = CharField(unique=True)
    envelope_id = CharField(unique=True)
    prompt = TextField()
    priority = IntegerField(default=0)
    budget_cents = FloatField()
    depends_on = TextField(default="[]")
    callback_url = TextField(null=True)
    callback_state = CharField(default="none")
    idempotency_key = CharField(null=True)
    state = CharField()
    result = TextField(default="")
    cost_cents = FloatField(default=0.0)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("tenant", "state"), False), (("token", "idempotency_key"), True))


ALL_MODELS = [Tenant, Subscription, Machine, WebhookEvent, LinkToken, ChatIdentity, Message,
              Delivery, Usage, AttentionItem, Account, PasswordReset, SignupRequest,
              OutboxMail, Connection,
              SlackInstallation, SlackOAuthState,
              DiscordInteraction, GatewayState, WhatsAppWindow, LlmToken, LlmCall, LlmBackendHealth,
              BudgetWarning,
              Operator, AuditEntry, MachineEvent, PoolServer, ApiToken, Job]
