"""The local Stripe stand-in speaks Stripe's wire format to the real ``stripe`` SDK: Bearer keys,
bracket-encoded forms, error objects, idempotent replays, and a hosted Checkout page whose Pay
button sends webhooks that ``stripe.Webhook.construct_event`` accepts."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time

import httpx
import pytest
import stripe

from standins.stripe_api import StripeStandin, parse_form

WEBHOOK_SECRET = "whsec_standin_test"
PRICES = {"light": "price_light_test", "heavy": "price_heavy_test"}


class Receiver:
    """A loopback endpoint that records every POST (raw body and headers) and answers 200."""

    def __init__(self):
        self.posts: list[tuple[bytes, dict]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.posts.append((body, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/stripe"

    def events(self) -> list[dict]:
        """Every received event, verified with the SDK against the webhook secret."""
        return [stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"],
                                               WEBHOOK_SECRET).to_dict()
                for body, headers in self.posts]


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def api(receiver):
    with StripeStandin(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET,
                       prices=PRICES) as api:
        yield api


@pytest.fixture
def client(api):
    return stripe.StripeClient(api.secret_key, base_addresses={"api": api.base_url})


def _checkout(client, **extra):
    params = {"mode": "subscription", "line_items": [{"price": PRICES["light"], "quantity": 1}],
              "client_reference_id": "42", "customer_email": "ada@example.com",
              "success_url": "http://app.test/billing/success?session_id={CHECKOUT_SESSION_ID}",
              "cancel_url": "http://app.test/billing", "metadata": {"plan": "light"},
              "subscription_data": {"metadata": {"plan": "light"}}, **extra}
    return client.v1.checkout.sessions.create(params=params)


def _pay(session_url: str) -> httpx.Response:
    """Open the hosted page and submit its Pay form, as a browser does."""
    page = httpx.get(session_url)
    assert page.status_code == 200
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)[1]
    return httpx.post(httpx.URL(session_url).join(action))


def test_a_wrong_or_missing_key_is_an_authentication_error_in_stripes_shape(api):
    wrong = stripe.StripeClient("sk_test_not_the_key_at_all", base_addresses={"api": api.base_url})
    with pytest.raises(stripe.AuthenticationError) as caught:
        wrong.v1.customers.create(params={"email": "ada@example.com"})
    assert caught.value.http_status == 401
    assert caught.value.json_body["error"]["type"] == "invalid_request_error"
    assert "Invalid API Key provided" in caught.value.json_body["error"]["message"]
    assert "not_the_key" not in caught.value.json_body["error"]["message"]  # masked, as Stripe does
    missing = httpx.get(api.base_url + "/v1/customers/cus_1")
    assert missing.status_code == 401 and "did not provide an API key" in missing.json()["error"]["message"]
    assert api.customers == {}


def test_nested_parameters_arrive_form_encoded_in_bracket_notation(api, client):
    session = _checkout(client)
    form = api.requests[-1]["form"]
    assert api.requests[-1]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert "line_items[0][price]=price_light_test" in form
    assert "line_items[0][quantity]=1" in form
    assert "subscription_data[metadata][plan]=light" in form
    assert session.client_reference_id == "42" and session.metadata["plan"] == "light"
    assert session.mode == "subscription" and session.status == "open"
    assert session.amount_total == 2900 and session.url == f"{api.base_url}/pay/{session.id}"
    assert parse_form("a[b][0][c]=1&a[b][1][c]=2&a[d]=x&e[]=y&e[]=z") == {
        "a": {"b": [{"c": "1"}, {"c": "2"}], "d": "x"}, "e": ["y", "z"]}


def test_errors_are_stripe_error_objects(client):
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_nobody")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.checkout.sessions.create(params={
            "mode": "subscription", "line_items": [{"quantity": 1}], "success_url": "http://x/"})
    assert bad.value.code == "parameter_missing" and bad.value.param == "line_items[0][price]"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        _checkout(client, line_items=[{"price": "price_nope", "quantity": 1}])
    assert unknown.value.code == "resource_missing"


def test_an_idempotency_key_replays_the_first_session_and_refuses_other_parameters(api, client):
    params = {"mode": "subscription", "line_items": [{"price": PRICES["heavy"], "quantity": 1}],
              "customer_email": "ada@example.com", "success_url": "http://app.test/ok"}
    first = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "k-1"})
    again = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "k-1"})
    assert again.id == first.id and len(api.sessions) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(params={**params, "customer_email": "bob@example.com"},
                                           options={"idempotency_key": "k-1"})
    assert len(api.sessions) == 1


def test_paying_on_the_hosted_page_sends_signed_webhooks_and_redirects(api, client, receiver):
    session = _checkout(client)
    page = httpx.get(session.url)
    assert "LOCAL TEST MODE - no card is charged" in page.text and "$29.00" in page.text

    paid = _pay(session.url)

    assert paid.status_code == 303
    assert paid.headers["Location"] == f"http://app.test/billing/success?session_id={session.id}"
    events = receiver.events()  # construct_event raises on a bad signature
    assert [e["type"] for e in events] == ["checkout.session.completed",
                                           "customer.subscription.created", "invoice.paid"]
    done, sub, invoice = (e["data"]["object"] for e in events)
    assert done["client_reference_id"] == "42" and done["payment_status"] == "paid"
    assert done["metadata"] == {"plan": "light"} and done["subscription"] == sub["id"]
    assert done["customer"] == sub["customer"] == invoice["customer"]
    item = sub["items"]["data"][0]
    assert sub["status"] == "active" and item["price"]["id"] == PRICES["light"]
    assert item["current_period_end"] > time.time() + 27 * 86400
    assert sub["metadata"] == {"plan": "light"}
    assert invoice["status"] == "paid" and invoice["amount_paid"] == 2900
    assert invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert api.deliveries == [(e["type"], 200) for e in events]
    body, headers = receiver.posts[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], "whsec_other")
    # The SDK reads back what the page created.
    customer = client.v1.customers.retrieve(done["customer"])
    assert customer.email == "ada@example.com"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"
    listed = client.v1.invoices.list(params={"customer": customer.id, "limit": 12})
    assert [i.id for i in listed.data] == [invoice["id"]] and listed.data[0].number.endswith("-0001")
    assert client.v1.prices.retrieve(PRICES["light"]).unit_amount == 2900
    # A second submit (a double click) pays nothing more; the page says it is paid.
    assert httpx.post(session.url).status_code == 303
    assert "This checkout is complete" in httpx.get(session.url).text
    api.flush()
    assert len(receiver.posts) == 3 and len(api.subscriptions) == 1


def test_lifecycle_events_past_due_recovery_period_end_and_cancellation(api, client, receiver):
    session = _checkout(client)
    _pay(session.url)
    sub_id = api.sessions[session.id]["subscription"]
    customer = api.sessions[session.id]["customer"]

    api.fail_payment(sub_id)
    api.recover_payment(sub_id)
    client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    assert client.v1.subscriptions.retrieve(sub_id).cancel_at_period_end is True
    client.v1.subscriptions.cancel(sub_id)
    api.flush()

    events = receiver.events()[3:]
    assert [e["type"] for e in events] == [
        "invoice.payment_failed", "customer.subscription.updated", "invoice.paid",
        "customer.subscription.updated", "customer.subscription.updated",
        "customer.subscription.deleted"]
    assert events[1]["data"]["object"]["status"] == "past_due"
    assert events[1]["data"]["previous_attributes"] == {"status": "active"}
    assert events[2]["data"]["object"]["id"] == events[0]["data"]["object"]["id"]
    assert events[3]["data"]["object"]["status"] == "active"
    assert events[4]["data"]["object"]["cancel_at_period_end"] is True
    assert events[5]["data"]["object"]["status"] == "canceled"
    assert client.v1.subscriptions.list(params={"customer": customer}).data == []
    everything = client.v1.subscriptions.list(params={"customer": customer, "status": "all"})
    assert [s.id for s in everything.data] == [sub_id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(sub_id)


def test_the_portal_page_cancels_and_links_back(api, client, receiver):
    session = _checkout(client)
    _pay(session.url)
    customer = api.sessions[session.id]["customer"]
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": customer, "return_url": "http://app.test/billing"})
    assert portal.object == "billing_portal.session" and portal.customer == customer

    page = httpx.get(portal.url)
    assert "LOCAL TEST MODE" in page.text and 'href="http://app.test/billing"' in page.text
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)[1]
    sub_id = re.search(r'name="subscription" value="([^"]+)"', page.text)[1]
    after = httpx.post(httpx.URL(portal.url).join(action), data={"subscription": sub_id})

    assert after.status_code == 200 and "Your subscription is canceled." in after.text
    assert "Cancel subscription" not in after.text
    assert receiver.events()[-1]["type"] == "customer.subscription.deleted"
    assert json.loads(receiver.posts[-1][0])["data"]["object"]["id"] == sub_id
