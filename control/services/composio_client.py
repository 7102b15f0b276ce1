"""Connected accounts and the user-scoped MCP endpoint behind one interface (issue #13).

``IntegrationsProvider`` is what the connection service needs from Composio; ``ComposioProvider``
implements it with the ``composio`` SDK (v0.30), pointed at ``COMPOSIO_API_BASE`` (the SDK's
``base_url``; the local stand-in ``standins/composio_api.py`` in tests and ``hermes demo``).
Calls go through the SDK's generated client (``Composio(...).client``), which sends these
Composio v3.1 REST endpoints (https://docs.composio.dev/reference), header ``x-api-key``:

* ``GET  /api/v3.1/auth_configs?toolkit_slug=`` and ``POST /api/v3.1/auth_configs``: the
  project's auth config of a toolkit (created Composio-managed for OAuth, custom for API keys).
* ``POST /api/v3.1/connected_accounts/link``: an OAuth connection request; answers the hosted
  consent page's ``redirect_url``, which returns to our ``callback_url``.
* ``POST /api/v3.1/connected_accounts``: an API-key connection (``state.auth_scheme: API_KEY``).
* ``GET /api/v3.1/connected_accounts/{id}``, ``GET /api/v3.1/connected_accounts?user_ids=``,
  ``DELETE /api/v3.1/connected_accounts/{id}``.
* ``POST /api/v3.1/tool_router/session``: a session for a user with only their connected
  toolkits' tools enabled; its ``mcp.url`` is the user-scoped MCP endpoint (streamable HTTP).

The MCP headers are what the SDK itself exports with a session (``session.mcp.headers``:
``credential_headers``, the project key as ``x-api-key``).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from control.errors import HermesError
from control.integrations import Service

log = logging.getLogger(__name__)

# Composio's connected-account statuses (``ConnectedAccountRetrieveResponse.status``) -> ours.
STATUS_OF = {"INITIALIZING": "initiated", "INITIATED": "initiated", "ACTIVE": "active",
             "EXPIRED": "expired", "FAILED": "failed", "INACTIVE": "expired"}


class IntegrationError(HermesError):
    """The integrations provider (Composio) failed or refused the request; nothing changed here."""

    status = 502
    code = "integration_provider_error"


@dataclass(frozen=True)
class ConnectionRequest:
    """A started connection: Composio's connected-account ``account_id``, our ``status``
    (``STATUS_OF``) and, for OAuth, the consent page's ``redirect_url``."""

    account_id: str
    status: str
    redirect_url: str | None = None


@dataclass(frozen=True)
class ConnectedAccount:
    """A connected account as the provider knows it: ``id``, ``user_id``, ``toolkit`` slug and
    our ``status`` (``STATUS_OF``)."""

    id: str
    user_id: str
    toolkit: str
    status: str


@dataclass(frozen=True)
class McpEndpoint:
    """A user-scoped streamable-HTTP MCP server: ``url`` and the ``headers`` to send with it."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


class IntegrationsProvider(abc.ABC):
    """Per-user connected accounts of third-party services and their MCP endpoint.

    Every method raises ``IntegrationError`` when the provider fails or refuses.
    """

    @abc.abstractmethod
    def connect_oauth(self, user_id: str, service: Service, callback_url: str) -> ConnectionRequest:
        """Start an OAuth connection of ``user_id`` to ``service``; the user approves on
        ``redirect_url`` and comes back to ``callback_url``."""

    @abc.abstractmethod
    def connect_api_key(self, user_id: str, service: Service,
                        credentials: dict[str, str]) -> ConnectionRequest:
        """Connect ``user_id`` to ``service`` with ``credentials`` (``Service.credentials``
        names); the answer is usually already ``active``."""

    @abc.abstractmethod
    def get_account(self, account_id: str) -> ConnectedAccount | None:
        """Return the connected account ``account_id``, or None when the provider has none."""

    @abc.abstractmethod
    def list_accounts(self, user_id: str) -> list[ConnectedAccount]:
        """Return every connected account of ``user_id``."""

    @abc.abstractmethod
    def delete_account(self, account_id: str) -> None:
        """Delete the connected account (one already gone is not an error)."""

    @abc.abstractmethod
    def mcp_endpoint(self, user_id: str, services: list[Service]) -> McpEndpoint:
        """Return the MCP endpoint offering ``user_id`` the tools of ``services`` (their three
        representative tools each), acting with that user's connected accounts only."""


class ComposioProvider(IntegrationsProvider):
    """``IntegrationsProvider`` over the ``composio`` SDK.

    Args:
        api_key: the Composio project API key (``COMPOSIO_API_KEY``).
        base_url: the API's base URL (``COMPOSIO_API_BASE``).
        timeout: seconds per HTTP call.

    Raises:
        IntegrationError: no API key.
    """

    def __init__(self, api_key: str, base_url: str, timeout: float = 15.0):
        if not api_key:
            raise IntegrationError("COMPOSIO_API_KEY is not set; connections are not available",
                                   code="integrations_not_set_up")
        from composio import Composio

        # allow_tracking=False: no telemetry calls to Composio's analytics host.
        # The SDK types timeout as int but hands it to httpx, which takes seconds as a float.
        self._sdk = Composio(api_key=api_key, base_url=base_url,  # type: ignore[call-overload]
                             timeout=timeout, max_retries=2, allow_tracking=False)
        self._client = self._sdk.client
        self._auth_configs: dict[str, str] = {}
        self._lock = threading.Lock()

    def _call(self, what: str, fn, *args, **kwargs):
        from composio_client import APIError, NotFoundError

        try:
            return fn(*args, **kwargs)
        except NotFoundError:
            raise
        except APIError as exc:
            # The SDK's message names the endpoint and status only; no credentials.
            log.warning("composio %s failed: %s", what, type(exc).__name__)
            raise IntegrationError(f"Composio could not {what} just now; please try again.") from None

    def _auth_config(self, service: Service) -> str:
        """The project's enabled auth config id for ``service``'s toolkit, created when absent."""
        with self._lock:
            if service.toolkit in self._auth_configs:
                return self._auth_configs[service.toolkit]
        found = self._call("list auth configs", self._client.auth_configs.list,
                           toolkit_slug=service.toolkit)
        ids = [item.id for item in (found.items or [])
               if getattr(item, "status", "ENABLED") == "ENABLED"]
        if ids:
            config_id = ids[0]
        else:
            if service.auth == "oauth2":
                spec = {"type": "use_composio_managed_auth",
                        "credentials": {"scopes": list(service.scopes)}}
            else:
                spec = {"type": "use_custom_auth", "auth_scheme": "API_KEY"}
            created = self._call("create an auth config", self._client.auth_configs.create,
                                 toolkit={"slug": service.toolkit}, auth_config=spec)
            config_id = created.auth_config.id
        with self._lock:
            self._auth_configs[service.toolkit] = config_id
        return config_id

    def connect_oauth(self, user_id: str, service: Service, callback_url: str) -> ConnectionRequest:
        """``POST /api/v3.1/connected_accounts/link`` (``ConnectedAccounts.link``'s request)."""
        answer = self._call("start the connection", self._client.link.create,
                            auth_config_id=self._auth_config(service), user_id=user_id,
                            callback_url=callback_url)
        return ConnectionRequest(answer.connected_account_id, "initiated", answer.redirect_url)

    def connect_api_key(self, user_id: str, service: Service,
                        credentials: dict[str, str]) -> ConnectionRequest:
        """``POST /api/v3.1/connected_accounts`` with an ``API_KEY`` state
        (``AuthScheme.api_key``'s shape)."""
        state = {"auth_scheme": "API_KEY", "val": {"status": "ACTIVE", **credentials}}
        answer = self._call("connect the account", self._client.connected_accounts.create,
                            auth_config={"id": self._auth_config(service)},
                            connection={"user_id": user_id, "state": state})
        raw = getattr(answer, "status", None) or "ACTIVE"
        return ConnectionRequest(answer.id, STATUS_OF.get(str(raw).upper(), "failed"))

    @staticmethod
    def _account(item) -> ConnectedAccount:
        toolkit = getattr(getattr(item, "toolkit", None), "slug", "") or ""
        return ConnectedAccount(id=item.id, user_id=getattr(item, "user_id", "") or "",
                                toolkit=toolkit,
                                status=STATUS_OF.get(str(item.status).upper(), "failed"))

    def get_account(self, account_id: str) -> ConnectedAccount | None:
        """``GET /api/v3.1/connected_accounts/{id}``; 404 is None."""
        from composio_client import NotFoundError

        try:
            item = self._call("read the connection", self._client.connected_accounts.retrieve,
                              account_id)
        except NotFoundError:
            return None
        return self._account(item)

    def list_accounts(self, user_id: str) -> list[ConnectedAccount]:
        """``GET /api/v3.1/connected_accounts?user_ids=`` over every page (``next_cursor``)."""
        accounts: list[ConnectedAccount] = []
        cursor = None
        while True:
            kwargs: dict[str, Any] = {"user_ids": [user_id], "limit": 100}
            if cursor:
                kwargs["cursor"] = cursor
            page = self._call("list connections", self._client.connected_accounts.list, **kwargs)
            accounts.extend(self._account(item) for item in (page.items or []))
            cursor = getattr(page, "next_cursor", None)
            if not cursor:
                return accounts

    def delete_account(self, account_id: str) -> None:
        """``DELETE /api/v3.1/connected_accounts/{id}``; 404 (already gone) is success."""
        from composio_client import NotFoundError

        with contextlib.suppress(NotFoundError):
            self._call("remove the connection", self._client.connected_accounts.delete, account_id)

    def mcp_endpoint(self, user_id: str, services: list[Service]) -> McpEndpoint:
        """``POST /api/v3.1/tool_router/session`` enabling only ``services``' toolkits and their
        three tools each; connection management off (the dashboard connects, not the agent)."""
        from composio.core.models.base import credential_headers, scope_headers

        session = self._call(
            "prepare your tools", self._client.tool_router.session.create, user_id=user_id,
            toolkits={"enable": [s.toolkit for s in services]},
            tools={s.toolkit: {"enable": [t.name for t in s.tools]} for s in services},
            manage_connections={"enabled": False})
        headers = {**credential_headers(self._client), **scope_headers(self._client)}
        return McpEndpoint(session.mcp.url, {k: v for k, v in headers.items() if v})


@lru_cache(maxsize=4)
def _provider(api_key: str, base_url: str) -> ComposioProvider:
    return ComposioProvider(api_key, base_url)


def provider_from_settings(settings) -> IntegrationsProvider:
    """The ``ComposioProvider`` of ``settings.composio_api_key`` / ``composio_api_base``, one
    per configuration and process (it caches the project's auth config ids).

    Raises:
        IntegrationError: ``COMPOSIO_API_KEY`` is not set.
    """
    return _provider(settings.composio_api_key, settings.composio_api_base)
