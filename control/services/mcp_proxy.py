"""The control plane's MCP proxy between a tenant's agent and Composio (issue #13).

Composio's user-scoped MCP endpoint takes our Composio project API key (``x-api-key``);
an agent holding it could reach every user's connections.  So the agent is given instead
``<public_url>/mcp/tenants/<id>`` and a per-tenant proxy token; the control plane checks the
token and forwards to the tenant's own Composio session with the key added here.

The token is ``secrets.token_urlsafe(32)`` (256 bits); only its SHA-256 is stored
(``tenant.mcp_token_hash``), a fresh one is issued with every ``mcp_config`` envelope (the
previous one stops working), and the Composio endpoint is stored encrypted
(``tenant.mcp_upstream``, ``SecretsBox``).  Nothing here logs a token, a header or a body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from control.db import write_transaction
from control.errors import Unauthorized
from control.models import Tenant
from control.services.composio_client import McpEndpoint
from control.services.secrets_box import SecretsBox

# Compared against when the tenant has no token, so an unknown tenant costs the same time.
_NO_HASH = hashlib.sha256(b"no mcp proxy token").hexdigest()


def proxy_url(public_url: str, tenant_id: int) -> str:
    """The agent-facing MCP URL of tenant ``tenant_id`` under ``public_url``."""
    return f"{public_url.rstrip('/')}/mcp/tenants/{tenant_id}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(tenant: Tenant, upstream: McpEndpoint | None, box: SecretsBox) -> str | None:
    """Rotate ``tenant``'s proxy token and store the endpoint it reaches.

    Args:
        tenant: the tenant.
        upstream: their Composio MCP endpoint, or None (no active connection: the stored
            token and endpoint are cleared, so the proxy refuses every call).
        box: encrypts the endpoint (its headers hold the Composio project key).

    Returns:
        The new token (to push to the agent only), or None when ``upstream`` is None.
    """
    token = secrets.token_urlsafe(32) if upstream is not None else None
    sealed = (box.encrypt(json.dumps({"url": upstream.url, "headers": dict(upstream.headers)}))
              if upstream is not None else None)
    with write_transaction():
        Tenant.update(mcp_token_hash=_digest(token) if token else None,
                      mcp_upstream=sealed).where(Tenant.id == tenant.id).execute()
    return token


def authenticate(tenant_id: int, authorization: str, box: SecretsBox) -> McpEndpoint:
    """Check ``Authorization: Bearer <token>`` for tenant ``tenant_id``'s proxy path.

    The SHA-256 of the given token is compared with the stored one in constant time
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
    stored = tenant.mcp_token_hash if tenant is not None and tenant.mcp_token_hash else _NO_HASH
    given = _digest(token.strip()) if scheme.lower() == "bearer" and token.strip() else ""
    valid = hmac.compare_digest(given.encode(), stored.encode())
    ended = tenant is not None and (tenant.status == "canceled" or tenant.deleted_at is not None)
    if not valid or tenant is None or not tenant.mcp_token_hash or not tenant.mcp_upstream or ended:
        raise Unauthorized("A valid MCP proxy token is required.", code="bad_mcp_token")
    endpoint = json.loads(box.decrypt(tenant.mcp_upstream))
    return McpEndpoint(endpoint["url"], endpoint["headers"])
