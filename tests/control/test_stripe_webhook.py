"""Stripe webhook: verified, idempotent, order-independent, plan-aware, never a 500."""

from __future__ import annotations

import time

import pytest
from support.webhooks import post_stripe, row_counts

from control.db import database
from control.models import AttentionItem, Machine, Subscription, Tenant, WebhookEvent
from standins import stripe_events as se
from standins.stripe_events import sign


def _signup(shape="latest", plan="light", customer="cus_A", sub="sub_A", email="ada@example.com"):
    return (se.subscription_created(customer=customer, subscription=sub, plan=plan, shape=shape,
                                    event_id=f"evt_sub_{sub}"),
            se.checkout_completed(email=email, customer=customer, subscription=sub, shape=shape,
                                  event_id=f"evt_cs_{sub}"))


def _machines():
    with database.connection_context():
        return [(m.tenant.email, m.plan, m.state) for m in Machine.select()]


@pytest.mark.parametrize("shape", ["2023", "latest"])
@pytest.mark.parametrize("order", ["subscription_first", "checkout_first"])
def test_paid_signup_in_either_order_requests_one_machine(client, runtime, shape, order):
    sub_event, checkout_event = _signup(shape=shape)
    events = [sub_event, checkout_event] if order == "subscription_first" else [checkout_event, sub_event]
    first = post_stripe(client, events[0])
    assert first.status_code == 200
    assert _machines() == []
    assert post_stripe(client, events[1]).status_code == 200
    assert _machines() == [("ada@example.com", "light", "requested")]
    assert runtime.provision_huey.pending_count() == 1
    with database.connection_context():
        tenant = Tenant.get(Tenant.email == "ada@example.com")
        assert (tenant.stripe_customer_id, tenant.plan, tenant.status) == ("cus_A", "light", "active")


def test_replayed_stripe_event_creates_one_machine(client, runtime):
    sub_event, checkout_event = _signup()
    for event in (sub_event, checkout_event, sub_event, checkout_event):
        assert post_stripe(client, event).status_code == 200
    assert post_stripe(client, checkout_event).json["outcome"] == "duplicate"
    assert len(_machines()) == 1
    assert runtime.provision_huey.pending_count() == 1


def test_forged_signature_is_rejected_and_nothing_stored(client):
    sub_event, _ = _signup()
    response = post_stripe(client, sub_event, secret="whsec_attacker")
    assert response.status_code == 400
    assert response.json["error"] == "bad_signature"
    assert sum(row_counts().values()) == 0


@pytest.mark.parametrize("header", ["", "t=123", "garbage", "t=1,v1=deadbeef"])
def test_missing_or_garbled_signature_is_rejected(client, header):
    sub_event, _ = _signup()
    response = post_stripe(client, sub_event, header=header)
    assert response.status_code == 400
    assert "Traceback" not in response.get_data(as_text=True)
    assert sum(row_counts().values()) == 0


def test_replayed_signature_outside_tolerance_is_rejected(client):
    import json

    sub_event, _ = _signup()
    body = json.dumps(sub_event).encode()
    stale = sign(body, "whsec_test_secret", timestamp=int(time.time()) - 3600)
    response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": stale})
    assert response.status_code == 400
    assert sum(row_counts().values()) == 0


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"id": "evt_1"}', b'{"id": "evt_1", "type": "x"}'])
def test_malformed_body_with_valid_signature_is_400(client, body):
    response = client.post("/webhooks/stripe", data=body,
                           headers={"Stripe-Signature": sign(body, "whsec_test_secret")})
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert Machine.select().count() == 0


def test_unknown_plan_provisions_nothing_and_asks_an_operator(client, runtime):
    sub_event, checkout_event = _signup(plan=None)
    sub_event["data"]["object"]["items"]["data"][0]["price"]["id"] = "price_mystery"
    assert post_stripe(client, sub_event).status_code == 200
    assert post_stripe(client, checkout_event).status_code == 200
    assert _machines() == []
    assert runtime.provision_huey.pending_count() == 0
    with database.connection_context():
        items = [(a.kind, a.subject) for a in AttentionItem.select()]
    assert items == [("unknown_plan", "sub_A")]


def test_plan_from_price_metadata_and_from_configured_price_map(client):
    by_metadata, checkout = _signup(plan=None, customer="cus_M", sub="sub_M", email="m@example.com")
    by_metadata["data"]["object"]["items"]["data"][0]["price"]["metadata"] = {"plan": "heavy"}
    post_stripe(client, by_metadata)
    post_stripe(client, checkout)
    by_map, checkout = _signup(plan=None, customer="cus_P", sub="sub_P", email="p@example.com")
    by_map["data"]["object"]["items"]["data"][0]["price"]["id"] = "price_heavy_eur"
    post_stripe(client, by_map)
    post_stripe(client, checkout)
    assert sorted(_machines()) == [("m@example.com", "heavy", "requested"),
                                   ("p@example.com", "heavy", "requested")]


def test_unpaid_subscription_waits_for_payment(client):
    sub_event = se.subscription_created(customer="cus_U", subscription="sub_U", plan="light",
                                        status="incomplete", event_id="evt_u1")
    checkout = se.checkout_completed(email="u@example.com", customer="cus_U", subscription="sub_U",
                                     event_id="evt_u2")
    checkout["data"]["object"]["payment_status"] = "unpaid"
    post_stripe(client, sub_event)
    post_stripe(client, checkout)
    assert _machines() == []
    paid = se.subscription_created(customer="cus_U", subscription="sub_U", plan="light",
                                   event_id="evt_u3", event_type="customer.subscription.updated")
    post_stripe(client, paid)
    assert _machines() == [("u@example.com", "light", "requested")]


def test_canceled_subscription_pauses_the_machine_for_the_grace_period(client, runtime):
    for event in _signup():
        post_stripe(client, event)
    with database.connection_context():
        Machine.update(state="ready").execute()
    deleted = se.subscription_created(customer="cus_A", subscription="sub_A", plan="light",
                                      status="canceled", event_id="evt_del",
                                      event_type="customer.subscription.deleted")
    assert post_stripe(client, deleted).status_code == 200
    assert _machines() == [("ada@example.com", "light", "ready")]  # kept: nothing destroyed yet
    queued = [(task.name, task.args) for task in runtime.huey.pending()]
    with database.connection_context():
        tenant = Tenant.get()
        assert ("pause_machine", (tenant.id,)) in queued
        assert "deprovision_machine" not in [name for name, _ in queued]
        assert tenant.status == "canceled"
        assert (tenant.grace_until - tenant.paused_at).days == runtime.settings.grace_days == 7
        assert Subscription.get().status == "canceled"


def test_unhandled_event_types_are_acknowledged_once(client):
    event = se.published_object("event", "2023")
    assert post_stripe(client, event).json["outcome"] == "ignored"
    assert post_stripe(client, event).json["outcome"] == "duplicate"
    with database.connection_context():
        assert WebhookEvent.select().count() == 1


def test_plan_change_on_a_ready_machine_queues_a_resize(client, runtime):
    for event in _signup():
        post_stripe(client, event)
    with database.connection_context():
        Machine.update(state="ready").execute()
    upgraded = se.subscription_created(customer="cus_A", subscription="sub_A", plan="heavy",
                                       event_id="evt_upgrade", event_type="customer.subscription.updated")
    assert post_stripe(client, upgraded).status_code == 200
    resizes = [task.args for task in runtime.huey.pending() if task.name == "resize_machine"]
    with database.connection_context():
        assert resizes == [(Tenant.get().id, "heavy")]
        assert Tenant.get().plan == "heavy"
