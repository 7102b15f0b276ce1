"""Connections (issue #13): the API, the OAuth round trip through the Composio stand-in's
consent page, encrypted API keys, tenant isolation, the signed webhook, reconciliation, and
the ``mcp_config`` envelope each change sends to the tenant's agent."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.dashboard import sign_in

from control import create_app
from control.db import database
from control.models import Connection, WebhookEvent
from control.runtime import Runtime
from control.services.connections import composio_user_id
from control.settings import Settings
from standins.composio_api import ComposioStandin, sign
from wire.protocol import Envelope, messages_stream

PAYLOADS = Path(__file__).resolve().parents[2] / "standins" / "payloads"
WEBHOOK_SECRET = "composio-webhook-secret-for-tests"
STRIPE_KEY = "sk_test_51HermesConnectionsSecretKey0123"
PG_URL = "postgresql://hermes:s3cret-pw@db.example.com:5432/app"


@pytest.fixture(scope="module")
def composio():
    with ComposioStandin(api_key="ak_test_project") as standin:
        yield standin


@pytest.fixture
def app(tmp_path, composio):
    settings = Settings(data_dir=str(tmp_path / "data"), composio_api_key=composio.api_key,
                        composio_api_base=composio.url, composio_webhook_secret=WEBHOOK_SECRET)
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    app.config["SERVER_NAME"] = "hermes.test"
    yield app
    app.extensions["hermes"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def _csrf(client) -> str:
    page = client.get("/dashboard/connections")
    assert page.status_code == 200, page.text
    return page.text.split('data-csrf="', 1)[1].split('"', 1)[0]


def _user(app, email):
    client = app.test_client()
    tenant = sign_in(client, email)
    return client, tenant, {"X-CSRFToken": _csrf(client)}


def _configs(app, tenant) -> list[dict]:
    """The ``mcp_servers`` of every ``mcp_config`` envelope published for ``tenant`` so far."""
    bus = app.extensions["hermes"].bus
    found = []
    for delivery in bus.read([messages_stream(str(tenant.id))], "test-probe", "probe", count=100):
        envelope = Envelope.from_json(delivery.payload)
        if envelope.kind == "mcp_config":
            found.append(envelope.mcp_servers)
    return found


def _status(client, service: str) -> str:
    listing = client.get("/api/hermes/connections").get_json()["connections"]
    return next(c["status"] for c in listing if c["service"] == service)


def _connect_oauth(client, headers, composio, service="github"):
    answer = client.post(f"/api/hermes/connections/{service}", headers=headers)
    assert answer.status_code == 201, answer.text
    redirect = answer.get_json()["redirect_url"]
    consent = composio.approve(redirect)
    assert consent.status_code == 303
    back = urlsplit(consent.headers["location"])
    assert back.path == "/connections/callback"
    return client.get(f"{back.path}?{back.query}")


def test_oauth_connect_consent_callback_makes_it_active_and_gives_the_agent_its_tools(app, composio):
    client, tenant, headers = _user(app, "ada@example.com")
    listing = client.get("/api/hermes/connections").get_json()["connections"]
    assert len(listing) == 14 and {c["status"] for c in listing} == {"not_connected"}
    page = client.get("/dashboard/connections").text
    assert page.count('class="card"') == 14 and "Connect GitHub" in page
    assert 'href="/dashboard/connections" aria-current="page"' in page

    answer = client.post("/api/hermes/connections/github", headers=headers)
    assert answer.status_code == 201
    assert answer.get_json()["status"] == "initiated"
    assert _status(client, "github") == "initiated"
    assert answer.get_json()["redirect_url"].startswith(composio.url + "/link/")

    consent = composio.approve(answer.get_json()["redirect_url"])
    back = urlsplit(consent.headers["location"])
    page = client.get(f"{back.path}?{back.query}", follow_redirects=True)
    assert "GitHub is connected" in page.text
    assert _status(client, "github") == "active"

    [servers] = _configs(app, tenant)
    # The agent gets our MCP proxy and its token, never Composio's key (tests/control/test_mcp_proxy.py).
    assert servers["composio"]["url"].endswith(f"/mcp/tenants/{tenant.id}")
    assert composio.api_key not in json.dumps(servers)
    session = [s for s in composio.sessions.values() if s["user_id"] == composio_user_id(tenant)][-1]
    assert list(composio.tools_for(session)) == [
        "GITHUB_SEARCH_REPOSITORIES", "GITHUB_LIST_PULL_REQUESTS", "GITHUB_CREATE_AN_ISSUE"]

    again = client.post("/api/hermes/connections/github", headers=headers)
    assert again.status_code == 409


def test_api_key_service_is_stored_encrypted_and_never_shown(app, composio, caplog):
    caplog.set_level(logging.DEBUG)
    client, tenant, headers = _user(app, "grace@example.com")
    bad = client.post("/api/hermes/connections/stripe", json={"api_key": "pk_test_publishable"},
                      headers=headers)
    assert bad.status_code == 400 and "pk_test" not in bad.text
    with database.connection_context():
        assert Connection.select().count() == 0

    answer = client.post("/api/hermes/connections/stripe", json={"api_key": STRIPE_KEY}, headers=headers)
    assert answer.status_code == 201 and answer.get_json() == {"status": "active"}
    pg = client.post("/api/hermes/connections/postgresql", json={"connection_string": PG_URL},
                     headers=headers)
    assert pg.status_code == 201, pg.text

    with database.connection_context():
        rows = {c.service: c for c in Connection.select()}
    assert STRIPE_KEY not in rows["stripe"].secret and PG_URL not in rows["postgresql"].secret
    from control.services.secrets_box import box_from_settings

    box = box_from_settings(app.extensions["hermes"].settings)
    assert json.loads(box.decrypt(rows["stripe"].secret)) == {"api_key": STRIPE_KEY}
    assert composio.received_credentials[rows["postgresql"].composio_account_id] == {
        "connection_string": PG_URL}

    listing = client.get("/api/hermes/connections").text
    page = client.get("/dashboard/connections").text
    envelopes = json.dumps(_configs(app, tenant))
    for text in (listing, page, envelopes, caplog.text):
        assert STRIPE_KEY not in text and "s3cret-pw" not in text


def test_disconnect_removes_it_on_composio_and_empties_the_agents_tools(app, composio):
    client, tenant, headers = _user(app, "linus@example.com")
    _connect_oauth(client, headers, composio, "notion")
    account = composio.account_of(composio_user_id(tenant), "notion")

    assert client.delete("/api/hermes/connections/notion", headers=headers).status_code == 200
    assert _status(client, "notion") == "removed"
    assert account["id"] not in composio.accounts
    assert _configs(app, tenant)[-1] == {}
    assert client.delete("/api/hermes/connections/notion", headers=headers).status_code == 404
    assert client.delete("/api/hermes/connections/notion").status_code == 400  # no CSRF token


def test_another_tenants_connection_is_not_found(app, composio):
    alice, alice_tenant, alice_headers = _user(app, "alice@example.com")
    _connect_oauth(alice, alice_headers, composio, "slack")
    account_id = composio.account_of(composio_user_id(alice_tenant), "slack")["id"]

    mallory, _tenant, mallory_headers = _user(app, "mallory@example.com")
    stolen = mallory.get(f"/connections/callback?status=success&connected_account_id={account_id}")
    assert stolen.status_code == 404
    assert _status(mallory, "slack") == "not_connected"
    assert mallory.delete("/api/hermes/connections/slack", headers=mallory_headers).status_code == 404
    assert _status(alice, "slack") == "active"
    assert app.test_client().get("/api/hermes/connections").status_code == 401


def _post_webhook(client, event: dict, *, webhook_id=None, timestamp=None, secret=WEBHOOK_SECRET,
                  signature=None):
    body = json.dumps(event).encode()
    webhook_id = webhook_id or event.get("id") or "msg_test"
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": signature or sign(secret, webhook_id, timestamp, body),
               "Content-Type": "application/json"}
    return client.post("/webhooks/composio", data=body, headers=headers)


def test_webhook_signature_good_bad_stale_duplicate_and_malformed(app):
    client = app.test_client()
    with open(PAYLOADS / "composio" / "webhook_trigger_message_v3.json") as handle:
        event = json.load(handle)

    def stored():
        with database.connection_context():
            return WebhookEvent.select().where(WebhookEvent.provider == "composio").count()

    assert _post_webhook(client, event, secret="wrong").status_code == 401
    assert _post_webhook(client, event, signature="v1,AAAA").status_code == 401
    assert _post_webhook(client, event, timestamp=int(time.time()) - 301).status_code == 401
    assert _post_webhook(client, event, timestamp=int(time.time()) + 301).status_code == 401
    assert stored() == 0
    good = _post_webhook(client, event)
    assert good.status_code == 200 and good.get_json()["outcome"] == "ignored"
    assert _post_webhook(client, event).get_json()["outcome"] == "duplicate"
    assert stored() == 1
    assert _post_webhook(client, [], webhook_id="msg_list").status_code == 400
    malformed = client.post("/webhooks/composio", data=b"{not json", headers={
        "webhook-id": "msg_bad", "webhook-timestamp": str(int(time.time())),
        "webhook-signature": sign(WEBHOOK_SECRET, "msg_bad", int(time.time()), b"{not json")})
    assert malformed.status_code == 400
    assert stored() == 1


def test_expired_webhook_marks_it_expired_and_pushes_a_new_config(app, composio):
    client, tenant, headers = _user(app, "joan@example.com")
    _connect_oauth(client, headers, composio, "google_workspace")
    account_id = composio.account_of(composio_user_id(tenant), "gmail")["id"]
    assert _configs(app, tenant)[-1]["composio"]["url"]

    with open(PAYLOADS / "composio" / "webhook_connected_account_expired.json") as handle:
        event = json.load(handle)
    event["data"]["id"] = account_id
    composio.set_status(account_id, "EXPIRED", "OAuth refresh token expired")
    answer = _post_webhook(client, event)
    assert answer.get_json() == {"received": True, "outcome": "expired"}
    assert _status(client, "google_workspace") == "expired"
    assert _configs(app, tenant)[-1] == {}
    assert _post_webhook(client, event).get_json()["outcome"] == "duplicate"


def test_reconciliation_fixes_drift(app, composio):
    client, tenant, headers = _user(app, "barbara@example.com")
    _connect_oauth(client, headers, composio, "linear")
    _connect_oauth(client, headers, composio, "airtable")
    user = composio_user_id(tenant)
    composio.remove(composio.account_of(user, "linear")["id"])
    composio.set_status(composio.account_of(user, "airtable")["id"], "EXPIRED")

    reconcile = app.extensions["hermes"].tasks.reconcile_connections
    assert reconcile.call_local() == {tenant.id: ["linear:active->removed", "airtable:active->expired"]}
    assert reconcile.call_local() == {}
    assert _status(client, "linear") == "removed" and _status(client, "airtable") == "expired"
    assert _configs(app, tenant)[-1] == {}


def test_composio_down_is_a_502_and_stores_nothing(tmp_path):
    from support.serve import free_port

    settings = Settings(data_dir=str(tmp_path / "down"), composio_api_key="ak_test_project",
                        composio_api_base=f"http://127.0.0.1:{free_port()}")
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    try:
        client, _tenant, headers = _user(app, "ken@example.com")
        answer = client.post("/api/hermes/connections/stripe", json={"api_key": STRIPE_KEY},
                             headers=headers)
        assert answer.status_code == 502
        assert answer.get_json()["error"] == "integration_provider_error"
        assert STRIPE_KEY not in answer.text
        with database.connection_context():
            assert Connection.select().count() == 0
    finally:
        app.extensions["hermes"].close()
