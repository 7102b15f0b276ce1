"""A tenant's connections to third-party services through Composio (issue #13).

Every change of a ``Connection`` row (connect, OAuth callback, disconnect, a webhook, the
reconciliation) ends with ``publish_config``: an ``Envelope`` of kind ``mcp_config`` on the
tenant's messages stream carrying the control plane's MCP proxy endpoint of their active
connections and a fresh proxy token (``{}`` when none is active; ``control.services.mcp_proxy``:
the Composio URL and project key stay here), which the agent applies without a restart.  It is
published again whenever the tenant's agent reports ``ready`` (a new, restarted or restored
agent: ``ControlTasks.agent_ready``).

Who learns what (DESIGN of issue #13): a new connection from the OAuth callback (checked
against Composio, never taken from the query string alone); an expired one from the
``composio.connected_account.expired`` webhook; anything else that drifted (an account
removed or re-authorised on Composio's side) from ``reconcile``, run every 15 minutes.

Secrets: API-key credentials are stored only as a ``SecretsBox`` token and sent only to
Composio; no answer, log line or envelope carries them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from peewee import IntegrityError

from control import integrations
from control.db import write_transaction
from control.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, Unauthorized
from control.integrations import Service
from control.models import Connection, ConnectionStatus, Tenant, WebhookEvent, utcnow
from control.services import mcp_proxy
from control.services.composio_client import (
    IntegrationError,
    IntegrationsProvider,
    provider_from_settings,
)
from control.services.secrets_box import SecretsBox, box_from_settings
from wire.bus import Bus
from wire.errors import BusUnavailable
from wire.protocol import Envelope, messages_stream, new_id

log = logging.getLogger(__name__)

PROVIDER = "composio"
# The agent's mcpServers entry name of the Composio endpoint (tools are namespaced by it).
MCP_SERVER_NAME = "composio"
# Standard Webhooks' and Composio's default tolerance (realdata README, "Signature scheme").
WEBHOOK_TOLERANCE = 300  # seconds
EXPIRED_EVENT = "composio.connected_account.expired"
# Connection statuses that hold a Composio account worth checking in ``reconcile``.
LIVE = (ConnectionStatus.INITIATED, ConnectionStatus.ACTIVE, ConnectionStatus.EXPIRED)


def composio_user_id(tenant: Tenant) -> str:
    """The Composio ``user_id`` of ``tenant`` (Composio scopes accounts and MCP by it)."""
    return f"hermes-tenant-{tenant.id}"


def service_or_404(key: str) -> Service:
    """Return the catalogue's service ``key``.

    Raises:
        NotFound: no such service.
    """
    service = integrations.load().get(key)
    if service is None:
        raise NotFound(f"No such service: {key[:40]!r}.")
    return service


def overview(tenant: Tenant) -> list[dict]:
    """Every service of the catalogue with the tenant's status, in catalogue order.

    Returns:
        ``[{"service", "name", "auth", "status", "tools": [names], "credentials": [{"name",
        "label"}], "updated_at"}]``; ``status`` is ``not_connected`` without a row, and
        ``updated_at`` an ISO 8601 UTC time or None.  Never a credential.
    """
    rows = {c.service: c for c in Connection.select().where(Connection.tenant == tenant)}
    listing = []
    for service in integrations.load().values():
        row = rows.get(service.key)
        listing.append({
            "service": service.key, "name": service.name, "auth": service.auth,
            "status": row.status if row else "not_connected",
            "tools": [t.name for t in service.tools],
            "credentials": [{"name": c.name, "label": c.label} for c in service.credentials],
            "updated_at": row.updated_at.isoformat() + "Z" if row else None})
    return listing


def validate_credentials(service: Service, payload: object) -> dict[str, str]:
    """Check the API-key fields a user typed for ``service``.

    Returns:
        ``{credential name: value}`` (surrounding whitespace dropped).

    Raises:
        BadRequest: not a JSON object, an unknown or missing field, or a value whose shape is
            wrong (the message names the field, never echoes the value).
    """
    if not isinstance(payload, dict):
        raise BadRequest("Send a JSON object with the credential fields.", code="bad_json")
    names = {c.name for c in service.credentials}
    unknown = sorted(set(payload) - names)
    if unknown:
        raise BadRequest(f"Unknown field(s) for {service.name}: {', '.join(unknown)[:100]}.")
    values = {}
    for cred in service.credentials:
        value = payload.get(cred.name)
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f"{cred.label} is required.", code="missing_credential")
        if not cred.pattern.fullmatch(value.strip()):
            raise BadRequest(f"That does not look like a {service.name} {cred.label.lower()}.",
                             code="bad_credential")
        values[cred.name] = value.strip()
    return values


@dataclass
class Connections:
    """The connection operations, bound to their collaborators.

    Args:
        provider: the ``IntegrationsProvider`` (Composio).
        box: encrypts stored credentials.
        bus: where ``mcp_config`` envelopes go.
        public_url: the control plane's URL as agents reach it (``Settings.agent_control_url``); the
            agent's MCP endpoint is the proxy under it (``control.services.mcp_proxy``).
    """

    provider: IntegrationsProvider
    box: SecretsBox
    bus: Bus
    public_url: str

    # --- user actions ----------------------------------------------------------------------

    def connect(self, tenant: Tenant, key: str, payload: object, callback_url: str) -> dict:
        """Start (OAuth) or make (API key) the tenant's connection to service ``key``.

        Args:
            tenant: the signed-in user's tenant.
            key: a catalogue key.
            payload: the request's JSON (API-key services: the credential fields).
            callback_url: where Composio's consent page returns the browser.

        Returns:
            OAuth: ``{"status": "initiated", "redirect_url"}``; API key: ``{"status"}``.

        Raises:
            NotFound: unknown service.  Conflict: already active.  BadRequest: bad credentials
            (nothing stored).  IntegrationError: Composio failed (nothing stored).
        """
        service = service_or_404(key)
        existing = Connection.get_or_none((Connection.tenant == tenant) & (Connection.service == key))
        if existing is not None and existing.status == ConnectionStatus.ACTIVE:
            raise Conflict(f"{service.name} is already connected; disconnect it first.",
                           code="already_connected")
        credentials = validate_credentials(service, payload) if service.auth == "api_key" else None
        user = composio_user_id(tenant)
        if existing is not None and existing.composio_account_id:
            # A stale (initiated, expired or failed) account is replaced, not left behind.
            self.provider.delete_account(existing.composio_account_id)
        if credentials is None:
            request = self.provider.connect_oauth(user, service, callback_url)
            secret = None
        else:
            request = self.provider.connect_api_key(user, service, credentials)
            secret = self.box.encrypt(json.dumps(credentials))
        with write_transaction():
            row = Connection.get_or_none((Connection.tenant == tenant) & (Connection.service == key))
            if row is None:
                row = Connection(tenant=tenant, service=key)
            row.status, row.composio_account_id = request.status, request.account_id
            row.secret, row.updated_at = secret, utcnow()
            row.save()
        log.info("connection %s of tenant %s is %s", key, tenant.id, request.status)
        if request.status == ConnectionStatus.ACTIVE:
            self._tell(tenant)
        if request.redirect_url:
            return {"status": request.status, "redirect_url": request.redirect_url}
        return {"status": request.status}

    def complete_oauth(self, tenant: Tenant, account_id: str) -> Connection:
        """Apply the OAuth callback for ``account_id``: Composio's own status of the account
        decides (the callback's query string is not trusted), then the agent is told.

        Raises:
            NotFound: ``account_id`` is not one of the tenant's connections.
            IntegrationError: Composio failed.
        """
        row = Connection.get_or_none((Connection.tenant == tenant)
                                     & (Connection.composio_account_id == account_id))
        if row is None:
            raise NotFound("No such connection.")
        account = self.provider.get_account(account_id)
        status: str
        if account is None or account.user_id != composio_user_id(tenant):
            status = ConnectionStatus.FAILED
        else:
            status = account.status
        if self._set_status(row, status):
            self._tell(tenant)
        return Connection.get_by_id(row.id)

    def disconnect(self, tenant: Tenant, key: str) -> None:
        """Remove the tenant's connection to ``key`` on Composio and here; tell the agent.

        Raises:
            NotFound: unknown service, or no live connection to it.
            IntegrationError: Composio failed (the row keeps its status).
        """
        service = service_or_404(key)
        row = Connection.get_or_none((Connection.tenant == tenant) & (Connection.service == key))
        if row is None or row.status == ConnectionStatus.REMOVED:
            raise NotFound(f"{service.name} is not connected.")
        if row.composio_account_id:
            self.provider.delete_account(row.composio_account_id)
        with write_transaction():
            Connection.update(status=ConnectionStatus.REMOVED, secret=None, composio_account_id=None,
                              updated_at=utcnow()).where(Connection.id == row.id).execute()
        log.info("connection %s of tenant %s removed", key, tenant.id)
        self._tell(tenant)

    # --- Composio's side -------------------------------------------------------------------

    def apply_webhook(self, webhook_id: str, event: dict) -> str:
        """Apply a verified webhook event once per ``webhook_id``.

        Returns:
            ``duplicate`` (seen before), ``ignored`` (not a connection event, or an unknown
            account), or the connection's new status.

        Raises:
            BadRequest: a connection event without ``data.id``.
        """
        event_type = event["type"] if isinstance(event.get("type"), str) else ""
        account_id = None
        if event_type == EXPIRED_EVENT:
            data = event.get("data")
            account_id = data.get("id") if isinstance(data, dict) else None
            if not isinstance(account_id, str) or not account_id:
                raise BadRequest("connected_account event without data.id")
        with write_transaction():
            try:
                with Connection._meta.database.atomic():
                    WebhookEvent.create(provider=PROVIDER, event_id=webhook_id,
                                        event_type=event_type[:255])
            except IntegrityError:
                return "duplicate"
            row = (Connection.get_or_none(Connection.composio_account_id == account_id)
                   if account_id else None)
            changed = row is not None and self._set_status(row, ConnectionStatus.EXPIRED)
        if row is None:
            return "ignored"
        if changed:
            log.info("connection %s of tenant %s expired (webhook)", row.service, row.tenant_id)
            self._tell(row.tenant)
        return ConnectionStatus.EXPIRED.value

    def reconcile(self) -> dict[int, list[str]]:
        """Align every live connection with Composio's connected accounts (one list call per
        tenant): an account gone is ``removed``, a changed status is taken over; each tenant
        with a change gets a new ``mcp_config``.  A tenant whose accounts Composio cannot list
        now is skipped until the next run.

        Returns:
            ``{tenant id: ["<service>:<old>-><new>", ...]}`` of the changes.
        """
        rows = list(Connection.select().where(Connection.status.in_([s.value for s in LIVE])))
        by_tenant: dict[int, list[Connection]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant_id, []).append(row)
        changes: dict[int, list[str]] = {}
        for tenant_id, tenant_rows in by_tenant.items():
            tenant = Tenant.get_by_id(tenant_id)
            try:
                listed = self.provider.list_accounts(composio_user_id(tenant))
            except IntegrationError:
                continue  # logged by the provider; the next run tries this tenant again
            accounts = {a.id: a for a in listed}
            for row in tenant_rows:
                account = accounts.get(row.composio_account_id or "")
                new = account.status if account else ConnectionStatus.REMOVED
                old = row.status
                if self._set_status(row, new):
                    changes.setdefault(tenant_id, []).append(f"{row.service}:{old}->{new}")
            if tenant_id in changes:
                self._tell(tenant)
        if changes:
            log.info("reconciliation changed %d tenant(s): %s", len(changes), changes)
        return changes

    # --- the agent -------------------------------------------------------------------------

    def publish_config(self, tenant: Tenant) -> Envelope:
        """Publish the tenant's current ``mcp_config`` envelope to their agent.

        With an active connection the envelope's ``mcpServers`` is ``{"composio": {"url",
        "headers"}}``: the control plane's MCP proxy URL and a new proxy token (never the
        Composio URL or key); the previous token stops working only once the envelope is on
        the bus (``mcp_proxy.rotate``), so a bus outage leaves the agent a working one.  With
        none it is ``{}`` and the proxy token is revoked first.

        Raises:
            IntegrationError: Composio could not make the MCP session.
            BusUnavailable: the bus is down (the reconciliation, or the agent's next ``ready``,
                publishes again later).
        """
        keys = [c.service for c in Connection.select(Connection.service).where(
            (Connection.tenant == tenant) & (Connection.status == ConnectionStatus.ACTIVE))]
        catalogue = integrations.load()
        services = [catalogue[k] for k in keys if k in catalogue]
        if not services:
            mcp_proxy.revoke(tenant)
            return self._append(tenant, {})
        endpoint = self.provider.mcp_endpoint(composio_user_id(tenant), services)
        sent: list[Envelope] = []
        mcp_proxy.rotate(tenant, endpoint, self.box, lambda token: sent.append(self._append(
            tenant, {MCP_SERVER_NAME: {"url": mcp_proxy.proxy_url(self.public_url, tenant.id),
                                       "headers": {"Authorization": f"Bearer {token}"}}})))
        return sent[0]

    def _append(self, tenant: Tenant, servers: dict) -> Envelope:
        """Append an ``mcp_config`` envelope carrying ``servers`` to the tenant's messages stream."""
        envelope = Envelope(id=new_id(), tenant=str(tenant.id), channel="web",
                            chat_id=f"web-{tenant.id}", sender_id="control", text="",
                            kind="mcp_config", mcp_servers=servers)
        self.bus.append(messages_stream(envelope.tenant), envelope.to_json(),
                        idempotency_key=envelope.id)
        log.info("mcp_config published for tenant %s: %d server(s)", tenant.id, len(servers))
        return envelope

    def _tell(self, tenant: Tenant) -> bool:
        """``publish_config``; a failure is logged, not raised: the change is stored, and the
        agent gets the tenant's tools with the next change, reconciliation or ``ready`` of its
        agent (``ControlTasks.agent_ready``) that succeeds."""
        try:
            self.publish_config(tenant)
        except (BusUnavailable, IntegrationError) as exc:
            log.warning("mcp_config for tenant %s not published: %s", tenant.id, type(exc).__name__)
            return False
        return True

    @staticmethod
    def _set_status(row: Connection, status: str) -> bool:
        """Store ``status`` on ``row`` when it differs; True when it changed."""
        if row.status == status:
            return False
        fields = {"status": status, "updated_at": utcnow()}
        if status == ConnectionStatus.REMOVED:
            fields.update(secret=None, composio_account_id=None)
        Connection.update(**fields).where(Connection.id == row.id).execute()
        return True


NOT_SET_UP = "Connections are not set up on this server (COMPOSIO_API_KEY is unset)"


def from_runtime(runtime) -> Connections:
    """The ``Connections`` of a ``control.runtime.Runtime`` (Composio, secrets box, bus).

    Raises:
        ServiceUnavailable: ``COMPOSIO_API_KEY`` is not set.
    """
    settings = runtime.settings
    if not settings.composio_api_key:
        raise ServiceUnavailable(NOT_SET_UP, code="integrations_not_set_up")
    return Connections(provider_from_settings(settings), box_from_settings(settings), runtime.bus,
                       settings.agent_control_url)


def verify_webhook(raw: bytes, headers, secret: str, tolerance: int = WEBHOOK_TOLERANCE,
                   now: float | None = None) -> str:
    """Verify a Composio webhook as Standard Webhooks (realdata README, "Signature scheme").

    ``webhook-signature`` holds space-separated ``v1,<base64>`` signatures; one must equal the
    base64 HMAC-SHA256, keyed with the secret's text, of ``"{webhook-id}.{webhook-timestamp}.
    {raw body}"``; the timestamp (Unix seconds) must be within ``tolerance`` of now, either way.

    Returns:
        The ``webhook-id`` (the idempotency key).

    Raises:
        Unauthorized: a header is missing, the timestamp is stale or not a number, or no
            signature matches.
    """
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not webhook_id or not stamp or not signatures or len(webhook_id) > 255:
        raise Unauthorized("missing webhook signature headers", code="bad_signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise Unauthorized("webhook-timestamp is not a number", code="bad_signature") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise Unauthorized("webhook-timestamp is outside the tolerance", code="bad_signature")
    signed = f"{webhook_id}.{timestamp}.".encode() + raw
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(given, expected):
            return webhook_id
    raise Unauthorized("webhook signature does not verify", code="bad_signature")
