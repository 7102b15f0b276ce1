"""The control plane's MCP proxy between a tenant's agent and Composio (issue #13).

Composio's user-scoped MCP endpoint takes our Composio project API key (``x-api-key``);
an agent holding it could reach every user's connections.  So the agent is given instead
``<public_url>/mcp/tenants/<id>`` and a per-tenant proxy token; the control plane checks the
token and forwards to the tenant's own Composio session with the key added here.

The token is ``secrets.token_urlsafe(32)`` (256 bits); only its SHA-256 is stored
(``tenant.mcp_token_hash``), a fresh one is issued with every ``mcp_config`` envelope, and the
Composio endpoint is stored encrypted (``tenant.mcp_upstream``, ``SecretsBox``).  Nothing here
logs a token, a header or a body.

Rotation (issue 19, finding 9): the previous token stops working only once the envelope with
the new one is on the bus (``rotate``).  Until then both are valid: ``mcp_token_hash`` holds the
valid hashes separated by spaces, newest first (at most ``MAX_VALID``), so the agent can use
the new token the moment it reads it and, when the bus is down, keeps a working one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable

from control.db import write_transaction
from control.errors import Unauthorized
from control.models import Tenant, TenantStatus
from control.services.composio_client import McpEndpoint
from control.services.secrets_box import SecretsBox

# Compared against when the tenant has no token, so an unknown tenant costs the same time.
_NO_HASH = hashlib.sha256(b"no mcp proxy token").hexdigest()
#: Valid tokens kept at once: the newest and those of rotations not yet finished (a rotation
#: whose process died between storing and retiring would otherwise leave its hash forever).
MAX_VALID = 3


def proxy_url(public_url: str, tenant_id: int) -> str:
    """The agent-facing MCP URL of tenant ``tenant_id`` under ``public_url``."""
    return f"{public_url.rstrip('/')}/mcp/tenants/{tenant_id}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def rotate(tenant: Tenant, upstream: McpEndpoint, box: SecretsBox,
           deliver: Callable[[str], object]) -> str:
    """Issue a new proxy token for ``tenant``, ``deliver`` it, then retire the earlier ones.

    The new token's hash is stored (next to the valid ones) and ``upstream`` replaces the
    stored endpoint before ``deliver`` runs, so the token works as soon as the agent has it.
    When ``deliver`` raises, the new hash is dropped again and the earlier token keeps working.

    Args:
        tenant: the tenant.
        upstream: their Composio MCP endpoint.
        box: encrypts the endpoint (its headers hold the Composio project key).
        deliver: sends the token to the agent (appends the ``mcp_config`` envelope).

    Returns:
        The new token (to push to the agent only).

    Raises:
        Whatever ``deliver`` raises (e.g. ``BusUnavailable``).
    """
    token = secrets.token_urlsafe(32)
    new = _digest(token)
    sealed = box.encrypt(json.dumps({"url": upstream.url, "headers": dict(upstream.headers)}))
    with write_transaction():
        valid = [new, *_hashes(tenant.id)][:MAX_VALID]
        Tenant.update(mcp_token_hash=" ".join(valid), mcp_upstream=sealed).where(
            Tenant.id == tenant.id).execute()
    try:
        deliver(token)
    except BaseException:
        _keep(tenant.id, lambda hashes: [h for h in hashes if h != new])
        raise
    # A rotation that finished meanwhile may have retired ``new`` already: nothing to revive.
    _keep(tenant.id, lambda hashes: [new] if new in hashes else hashes)
    return token


def revoke(tenant: Tenant) -> None:
    """Forget ``tenant``'s tokens and endpoint: the proxy refuses every call (no connection)."""
    with write_transaction():
        Tenant.update(mcp_token_hash=None, mcp_upstream=None).where(Tenant.id == tenant.id).execute()


def _hashes(tenant_id: int) -> list[str]:
    stored = Tenant.select(Tenant.mcp_token_hash).where(Tenant.id == tenant_id).scalar()
    return stored.split() if stored else []


def _keep(tenant_id: int, choose: Callable[[list[str]], list[str]]) -> None:
    """Replace the tenant's valid hashes with ``choose(current hashes)``, atomically."""
    with write_transaction():
        kept = choose(_hashes(tenant_id))
        Tenant.update(mcp_token_hash=" ".join(kept) or None).where(Tenant.id == tenant_id).execute()


def authenticate(tenant_id: int, authorization: str, box: SecretsBox) -> McpEndpoint:
    """Check ``Authorization: Bearer <token>`` for tenant ``tenant_id``'s proxy path.

    The SHA-256 of the given token is compared with each valid one in constant time
    (``hmac.compare_digest``), also when the tenant or its token does not exist.

    Returns:
        The tenant's Composio MCP endpoint (URL and headers to forward with).

    Raises:
        Unauthorized: no bearer token, not the tenant's current one, or the tenant's
            subscription ended (canceled or deleted: its agent must not use connections).
    """
    scheme, _, token = authorization.partition(" ")
    # Beyond a signed 64-bit id no tenant exists (and SQLite cannot even compare it).
    tenant = Tenant.get_or_none(Tenant.id == tenant_id) if 0 < tenant_id < 2**63 else None
    stored = (tenant.mcp_token_hash.split() if tenant is not None and tenant.mcp_token_hash
              else [_NO_HASH])
    given = _digest(token.strip()) if scheme.lower() == "bearer" and token.strip() else ""
    # Every stored hash is compared (no early exit), so the time says nothing about which.
    matches = [hmac.compare_digest(given.encode(), digest.encode()) for digest in stored]
    valid = any(matches)
    ended = tenant is not None and (tenant.status == TenantStatus.CANCELED or tenant.deleted_at is not None)
    if not valid or tenant is None or not tenant.mcp_token_hash or not tenant.mcp_upstream or ended:
        raise Unauthorized("A valid MCP proxy token is required.", code="bad_mcp_token")
    endpoint = json.loads(box.decrypt(tenant.mcp_upstream))
    return McpEndpoint(endpoint["url"], endpoint["headers"])
