"""The billing pages against the local Stripe stand-in, with the real ``stripe`` SDK: Checkout,
paying on the hosted page (its webhooks reach the app over HTTP), the success page's progress
and chat links, ``/billing``, the portal, another user's data, Stripe being down, and account
deletion."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import httpx
import pytest
from support.dashboard import PASSWORD, csrf_token, sign_in
from support.serve import wait_until
from support.webhooks import STRIPE_SECRET
from werkzeug.serving import make_server

from control import create_app
from control.db import database
from control.models import Account, Machine, Subscription, Tenant, Usage, utcnow
from control.runtime import Runtime
from standins.stripe_api import StripeStandin

PRICES = {"light": "price_light_test", "heavy": "price_heavy_test"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def stripe_api():
    with StripeStandin(webhook_secret=STRIPE_SECRET, prices=PRICES) as api:
        yield api


@pytest.fixture
def settings(settings, stripe_api):
    return settings.with_overrides(stripe_secret_key=stripe_api.secret_key,
                                   stripe_api_base=stripe_api.base_url,
                                   stripe_price_light=PRICES["light"],
                                   stripe_price_heavy=PRICES["heavy"],
                                   telegram_bot_username="HermesTestBot")


@pytest.fixture
def live(app, stripe_api):
    """The app also served over HTTP on loopback, where the stand-in POSTs its webhooks."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stripe_api.webhook_url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    yield server
    server.shutdown()
    thread.join(5)


def _reload(model, row):
    with database.connection_context():
        return model.get_by_id(row.id)


def _subscribe(client, stripe_api, plan: str = "light") -> str:
    """Check out ``plan`` and pay on the stand-in's page; return the success page's path."""
    checkout = client.get(f"/billing/checkout?plan={plan}")
    assert checkout.status_code == 303, checkout.text
    page = httpx.get(checkout.headers["Location"])
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)[1]
    paid = httpx.post(httpx.URL(checkout.headers["Location"]).join(action))
    assert paid.status_code == 303
    assert all(status == 200 for _type, status in stripe_api.deliveries), stripe_api.deliveries
    return paid.headers["Location"].removeprefix("http://localhost")


def test_checkout_redirects_to_stripe_with_the_tenant_as_client_reference_id(client, stripe_api):
    tenant = sign_in(client, "ada@example.com")

    answer = client.get("/billing/checkout?plan=heavy")
    again = client.get("/billing/checkout?plan=heavy")  # a double click

    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(f"{stripe_api.base_url}/pay/cs_test_")
    assert again.headers["Location"] == answer.headers["Location"]
    (session,) = stripe_api.sessions.values()
    assert session["client_reference_id"] == str(tenant.id)
    assert session["customer_email"] == "ada@example.com" and session["customer"] is None
    assert session["mode"] == "subscription" and session["metadata"]["plan"] == "heavy"
    assert session["success_url"] == "http://localhost/billing/success?session_id={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == "http://localhost/billing"
    assert "line_items[0][price]=price_heavy_test" in stripe_api.requests[0]["form"]


def test_paying_sends_webhooks_to_the_app_which_requests_a_machine_and_shows_progress(
        client, stripe_api, live):
    tenant = sign_in(client, "ada@example.com")

    success = _subscribe(client, stripe_api)

    assert [t for t, _status in stripe_api.deliveries] == [
        "checkout.session.completed", "customer.subscription.created", "invoice.paid"]
    with database.connection_context():
        machine = Machine.get(Machine.tenant == tenant)
        tenant = Tenant.get_by_id(tenant.id)
    assert machine.state == "requested" and machine.plan == "light"
    assert tenant.plan == "light" and tenant.status == "active"
    assert tenant.stripe_customer_id == next(iter(stripe_api.customers))
    page = client.get(success)
    assert page.status_code == 200
    assert "Stripe confirmed your payment for the Light plan" in page.text
    assert 'data-step="queued"' in page.text and "billing.js" in page.text
    assert client.get("/billing/status.json").json == {
        "state": "requested", "step": "queued", "plan": "light", "account": "active",
        "telegram_link": None, "web_chat": None}

    with database.connection_context():
        Machine.update(state="ready", ready_at=utcnow()).where(Machine.id == machine.id).execute()
    status = client.get("/billing/status.json").json
    assert status["step"] == "ready" and status["web_chat"] == "/dashboard/chat"
    assert re.fullmatch(r"https://t\.me/HermesTestBot\?start=[A-Za-z0-9_-]{1,64}", status["telegram_link"])
    ready = client.get(success)
    assert status["telegram_link"] in ready.text and "<svg" in ready.text
    assert 'href="/dashboard/chat"' in ready.text and "Agent ready" in ready.text


def test_the_billing_page_shows_plan_renewal_date_usage_and_invoices(client, stripe_api, live):
    tenant = sign_in(client, "ada@example.com")
    _subscribe(client, stripe_api)
    with database.connection_context():
        Usage.create(tenant=tenant, model="claude-haiku-4-5", input_tokens=1200,
                     output_tokens=300, cost_cents=12.0)
    (sub,) = stripe_api.subscriptions.values()
    item = sub["items"]["data"][0]
    renews = datetime.fromtimestamp(item["current_period_end"], UTC)
    days = -(-(item["current_period_end"] - item["current_period_start"]) // 86400)
    (invoice,) = stripe_api.invoices.values()

    page = client.get("/billing")

    assert page.status_code == 200
    text = page.text
    assert "Light" in text and ">active<" in text
    assert "Renews on</dt>" in text and f"{renews:%Y-%m-%d}" in text
    assert "<strong>$0.12</strong>" in text and "1,200 tokens in" in text
    assert f"${50 * days / 100:.2f}" in text  # light: 50 cents a day over the period
    assert invoice["number"] in text and "29.00 USD" in text
    assert invoice["hosted_invoice_url"] in text
    assert "Local test mode" in text  # the stand-in is on 127.0.0.1


def test_the_past_due_banner_and_the_portal(client, stripe_api, live):
    tenant = sign_in(client, "ada@example.com")
    no_customer = client.get("/billing/portal")
    assert no_customer.status_code == 303 and no_customer.headers["Location"] == "/billing"
    _subscribe(client, stripe_api)
    with database.connection_context():
        Tenant.update(status="past_due").where(Tenant.id == tenant.id).execute()

    assert "Payment failed" in client.get("/billing").text
    portal = client.get("/billing/portal")

    assert portal.status_code == 303
    (session,) = stripe_api.portal_sessions.values()
    assert portal.headers["Location"] == session["url"]
    assert session["customer"] == _reload(Tenant, tenant).stripe_customer_id
    assert session["return_url"] == "http://localhost/billing"


def test_a_subscribed_tenant_is_sent_to_billing_instead_of_a_second_checkout(client, stripe_api, live):
    sign_in(client, "ada@example.com")
    _subscribe(client, stripe_api)

    answer = client.get("/billing/checkout?plan=heavy")

    assert answer.status_code == 303 and answer.headers["Location"] == "/billing"
    assert len(stripe_api.sessions) == 1


def test_another_user_never_sees_someone_elses_status_or_checkout(app, client, stripe_api, live):
    sign_in(client, "ada@example.com")
    success = _subscribe(client, stripe_api)
    with database.connection_context():
        Machine.update(state="ready").execute()
    assert client.get("/billing/status.json").json["telegram_link"]

    eve = app.test_client()
    sign_in(eve, "eve@example.com")

    assert eve.get("/billing/status.json").json == {
        "state": None, "step": "payment", "plan": None, "account": "pending",
        "telegram_link": None, "web_chat": None}
    assert eve.get(success).status_code == 404
    page = eve.get("/billing")
    assert page.status_code == 200 and "No invoices yet." in page.text and "Choose a plan" in page.text


def test_a_plan_other_than_light_or_heavy_is_refused(client, stripe_api):
    sign_in(client, "ada@example.com")

    api = client.get("/billing/checkout?plan=gold")
    page = client.get("/billing/checkout?plan=gold", headers=HTML)

    assert api.status_code == 400 and api.json["error"] == "bad_request"
    assert page.status_code == 400 and "choose a plan: light or heavy" in page.text
    assert stripe_api.sessions == {} and stripe_api.requests == []


def test_stripe_down_is_a_clear_502_page_not_a_500(client, stripe_api):
    tenant = sign_in(client, "ada@example.com")
    with database.connection_context():  # a customer, so /billing asks Stripe for invoices
        Tenant.update(stripe_customer_id="cus_ada").where(Tenant.id == tenant.id).execute()
    stripe_api.stop()

    billing = client.get("/billing", headers=HTML)
    checkout = client.get("/billing/checkout?plan=light", headers=HTML)

    for page in (billing, checkout):
        assert page.status_code == 502
        assert page.mimetype == "text/html"
        assert "Could not reach the payment provider" in page.text
        assert "Traceback" not in page.text
    assert client.get("/billing/checkout?plan=light").json["error"] == "payment_provider_error"


def test_billing_without_a_stripe_key_says_it_is_not_set_up(settings):
    bare = settings.with_overrides(stripe_secret_key="")
    app = create_app(bare, Runtime(bare, upgrade_schema=True))
    try:
        client = app.test_client()
        sign_in(client, "ada@example.com")
        page = client.get("/billing", headers=HTML)
    finally:
        app.extensions["hermes"].close()
    assert page.status_code == 503 and "billing is not set up on this server" in page.text


def test_pages_need_a_signed_in_user(client):
    for path in ("/billing", "/billing/checkout?plan=light", "/billing/status.json",
                 "/billing/portal", "/billing/success", "/account/delete"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/login"), path


def test_account_deletion_needs_the_right_email_and_password(client, stripe_api, live):
    tenant = sign_in(client, "ada@example.com")
    _subscribe(client, stripe_api)
    (sub_id,) = stripe_api.subscriptions

    form = client.get("/account/delete")
    assert form.status_code == 200 and 'autocomplete="current-password"' in form.text
    token = csrf_token(client, "/account/delete")
    refused = [
        client.post("/account/delete", data={"csrf_token": token, "email": "ada@example.com",
                                             "password": "not the password"}),
        client.post("/account/delete", data={"csrf_token": token, "email": "eve@example.com",
                                             "password": PASSWORD}),
        client.post("/account/delete", data={"email": "ada@example.com", "password": PASSWORD}),
    ]
    assert [r.status_code for r in refused] == [400, 400, 400]
    assert "nothing was deleted" in refused[0].text
    assert stripe_api.subscriptions[sub_id]["status"] == "active"
    with database.connection_context():
        assert Account.select().where(Account.tenant == tenant).exists()
        assert _reload(Tenant, tenant).deleted_at is None

    done = client.post("/account/delete", data={"csrf_token": token, "email": "ADA@example.com",
                                                "password": PASSWORD})

    assert done.status_code == 200 and "Your account is deleted" in done.text
    assert "1 subscription was canceled" in done.text
    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    with database.connection_context():
        assert not Account.select().where(Account.tenant == tenant).exists()
        assert not Machine.select().where(Machine.tenant == tenant).exists()
        assert _reload(Tenant, tenant).deleted_at is not None
    assert client.get("/billing").status_code == 302  # signed out
    wait_until(lambda: len(stripe_api.deliveries) == 4, 10, "the deleted event to be delivered")
    assert stripe_api.deliveries[-1] == ("customer.subscription.deleted", 200)
    with database.connection_context():
        assert Subscription.get(Subscription.stripe_subscription_id == sub_id).status == "canceled"


def test_repeated_wrong_confirmations_are_rate_limited_and_delete_nothing(client):
    tenant = sign_in(client, "ada@example.com")
    token = csrf_token(client, "/account/delete")

    answers = [client.post("/account/delete", data={"csrf_token": token, "email": "ada@example.com",
                                                    "password": f"guess number {n}"}).status_code
               for n in range(6)]

    assert answers == [400] * 5 + [429]
    with database.connection_context():
        assert _reload(Tenant, tenant).deleted_at is None
        assert Account.select().where(Account.tenant == tenant).exists()
