"""The subscription lifecycle (issue #10): past due, cancellation with grace, archive, restore, deletion.

The real app takes Stripe events signed with Stripe's scheme (built from Stripe's published
objects) and Telegram updates; machines come from the real ``LocalProvisioner`` running real
agent processes on the embedded SQLite bus, whose replies reach the Telegram Bot API stand-in
through the real delivery worker; the agent's LLM is the Anthropic stand-in (echo).  Huey runs
tasks inline.  The end of grace is the service function called with a ``now`` past the grace.
"""

from __future__ import annotations

import copy
import time
from datetime import timedelta

import pytest
from support.serve import wait_until
from support.webhooks import STRIPE_SECRET, TELEGRAM_SECRET, post_stripe, post_telegram

from control import create_app
from control.db import database
from control.models import (
    Account,
    AttentionItem,
    ChatIdentity,
    Delivery,
    LinkToken,
    Machine,
    MachineState,
    Message,
    OutboxMail,
    PasswordReset,
    Subscription,
    Tenant,
    Usage,
    utcnow,
)
from control.providers.archive import archive_key
from control.runtime import Runtime
from control.services import lifecycle, notices, provisioning
from control.services.accounts import create_account
from control.services.delivery import DeliveryWorker
from control.services.notices import Notice
from control.settings import Settings
from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update
from wire.protocol import messages_stream

CHAT = 880001
AGENT_READY_TIMEOUT = 120  # seconds: a fresh agent imports its stores and the embedder


def invoice_event(event_type: str, *, customer: str, subscription: str, event_id: str,
                  created: int | None = None, next_attempt: int | None = None) -> dict:
    """``invoice.*`` around Stripe's published (2026) invoice, billed for ``subscription``."""
    invoice = copy.deepcopy(se.published_object("invoice"))
    invoice.update(customer=customer, status="open", attempted=True,
                   next_payment_attempt=next_attempt)
    invoice["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"metadata": {}, "subscription": subscription}}
    event = se.event(event_type, invoice, event_id)
    if created is not None:
        event["created"] = created
    return event


def sub_event(event_type="customer.subscription.created", *, status="active", sub="sub_A",
              customer="cus_A", event_id, created=None, plan="light") -> dict:
    event = se.subscription_created(customer=customer, subscription=sub, plan=plan,
                                    status=status, event_id=event_id, event_type=event_type)
    if created is not None:
        event["created"] = created
    return event


def signup(client, email="ada@example.com", customer="cus_A", sub="sub_A", reference=None):
    assert post_stripe(client, sub_event(sub=sub, customer=customer,
                                         event_id=f"evt_s_{sub}")).status_code == 200
    checkout = se.checkout_completed(email=email, customer=customer, subscription=sub,
                                     event_id=f"evt_c_{sub}")
    if reference is not None:
        checkout["data"]["object"]["client_reference_id"] = reference
    assert post_stripe(client, checkout).status_code == 200


def tenant_row(email="ada@example.com") -> Tenant:
    with database.connection_context():
        return Tenant.get(Tenant.email == email)


def open_attention(tenant_id: int) -> set[str]:
    with database.connection_context():
        return {a.kind for a in AttentionItem.select().where(
            (AttentionItem.subject == str(tenant_id)) & AttentionItem.resolved_at.is_null())}


# -- billing events, no agent needed ------------------------------------------------------------


def test_payment_failed_makes_the_tenant_past_due_with_one_email_and_an_attention_item(client, runtime):
    signup(client)
    tenant = tenant_row()
    retry_at = int(time.time()) + 3 * 86400
    failed = invoice_event("invoice.payment_failed", customer="cus_A", subscription="sub_A",
                           event_id="evt_fail_1", next_attempt=retry_at)
    assert post_stripe(client, failed).json["outcome"] == "processed"
    assert post_stripe(client, failed).json["outcome"] == "duplicate"
    again = invoice_event("invoice.payment_failed", customer="cus_A", subscription="sub_A",
                          event_id="evt_fail_2")  # Stripe's next retry failed too
    assert post_stripe(client, again).json["outcome"] == "processed"

    with database.connection_context():
        tenant = Tenant.get_by_id(tenant.id)
        assert tenant.status == "past_due" and tenant.past_due_since is not None
        mails = list(OutboxMail.select())
        machine = Machine.get(Machine.tenant == tenant)
    assert [(m.to_addr, m.subject) for m in mails] == [("ada@example.com",
                                                         notices.render(Notice.PAYMENT_FAILED, retry="", url="")[0])]
    assert "http://127.0.0.1:8000/billing" in mails[0].body and "retried" in mails[0].body
    assert "payment_failed" in open_attention(tenant.id)
    assert machine.state == MachineState.REQUESTED  # the machine is left alone
    assert "pause_machine" not in [t.name for t in runtime.huey.pending()]

    paid = invoice_event("invoice.paid", customer="cus_A", subscription="sub_A", event_id="evt_paid")
    assert post_stripe(client, paid).status_code == 200
    with database.connection_context():
        tenant = Tenant.get_by_id(tenant.id)
        assert (tenant.status, tenant.past_due_since) == ("active", None)
        assert Subscription.get().status == "active"
    assert "payment_failed" not in open_attention(tenant.id)


def test_subscription_updated_past_due_and_unpaid_agree_with_the_invoice_events(client):
    signup(client)
    post_stripe(client, sub_event("customer.subscription.updated", status="unpaid", event_id="evt_u"))
    assert tenant_row().status == "past_due"
    post_stripe(client, sub_event("customer.subscription.updated", status="active", event_id="evt_a"))
    assert tenant_row().status == "active" and tenant_row().past_due_since is None
    with database.connection_context():
        assert OutboxMail.select().count() == 1


def test_out_of_order_events_never_resurrect_or_undo_newer_state(client, runtime):
    now = int(time.time())
    signup(client)
    # A newer payment failure, then an older "paid" delivered late: still past due.
    post_stripe(client, invoice_event("invoice.payment_failed", customer="cus_A", subscription="sub_A",
                                      event_id="evt_f", created=now + 20))
    post_stripe(client, invoice_event("invoice.paid", customer="cus_A", subscription="sub_A",
                                      event_id="evt_old_paid", created=now + 10))
    assert tenant_row().status == "past_due"
    # The subscription is deleted; an older "updated: active" arriving after it changes nothing.
    post_stripe(client, sub_event("customer.subscription.deleted", status="canceled",
                                  event_id="evt_del", created=now + 30))
    pending_before = runtime.huey.pending_count() + runtime.provision_huey.pending_count()
    late = sub_event("customer.subscription.updated", status="active", event_id="evt_late",
                     created=now + 25)
    assert post_stripe(client, late).json["outcome"] == "processed"
    # Even a newer event cannot move a canceled subscription: Stripe never does.
    newer = sub_event("customer.subscription.updated", status="active", event_id="evt_newer",
                      created=now + 40)
    post_stripe(client, newer)
    with database.connection_context():
        assert Subscription.get().status == "canceled"
        tenant = Tenant.get()
        assert tenant.status == "canceled" and tenant.grace_until is not None
    # No machine requested or resumed.
    assert runtime.huey.pending_count() + runtime.provision_huey.pending_count() == pending_before
    # Replaying the deletion does nothing either.
    redelivered = sub_event("customer.subscription.deleted", status="canceled", event_id="evt_del2",
                            created=now + 30)
    post_stripe(client, redelivered)
    assert tenant_row().grace_until == tenant.grace_until


def test_checkout_finds_the_tenant_by_client_reference_id_and_merges_the_placeholder(client, runtime):
    with database.connection_context():
        account = create_account("Grace@Example.com", "correct horse battery staple")
        tenant_id = account.tenant_id
    # The subscription event arrives first and only knows the customer: a placeholder tenant.
    post_stripe(client, sub_event(customer="cus_G", sub="sub_G", event_id="evt_sg"))
    checkout = se.checkout_completed(email="other-card-email@example.com", customer="cus_G",
                                     subscription="sub_G", event_id="evt_cg")
    checkout["data"]["object"]["client_reference_id"] = str(tenant_id)
    assert post_stripe(client, checkout).status_code == 200
    with database.connection_context():
        assert [(t.id, t.email, t.stripe_customer_id, t.status) for t in Tenant.select()] == [
            (tenant_id, "grace@example.com", "cus_G", "active")]
        assert Subscription.get().tenant_id == tenant_id
        assert [m.tenant_id for m in Machine.select()] == [tenant_id]


@pytest.mark.parametrize("reference", ["not-a-number", "999999"])
def test_checkout_without_a_usable_reference_falls_back_to_customer_and_email(client, reference):
    signup(client, reference=reference)
    with database.connection_context():
        assert [(t.email, t.stripe_customer_id) for t in Tenant.select()] == [("ada@example.com", "cus_A")]
        assert Machine.select().count() == 1


def test_invoice_with_wrong_field_types_is_rejected_and_nothing_stored(client):
    signup(client)
    bad = invoice_event("invoice.payment_failed", customer="cus_A", subscription="sub_A",
                        event_id="evt_bad")
    bad["data"]["object"]["parent"]["subscription_details"]["subscription"] = ["sub_A"]
    response = post_stripe(client, bad)
    assert response.status_code == 400 and "subscription" in response.json["message"]
    assert tenant_row().status == "active"


# -- the real agent ------------------------------------------------------------------------------


@pytest.fixture
def anthropic():
    with AnthropicStandin() as api:
        yield api


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as api:
        yield api


@pytest.fixture
def world(tmp_path, anthropic, telegram):
    """``(runtime, client, worker)`` with real agents; SQLite (the agents' embedded bus)."""
    settings = Settings(
        data_dir=str(tmp_path / "data"), stripe_webhook_secret=STRIPE_SECRET,
        telegram_webhook_secret=TELEGRAM_SECRET, telegram_bot_token=telegram.token,
        telegram_api_base=telegram.base_url, huey_immediate=True, visibility_timeout=2.0,
        agent_env={"HERMES_LLM": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-test",
                   "ANTHROPIC_BASE_URL": anthropic.base_url})
    runtime = Runtime(settings, upgrade_schema=True)
    app = create_app(settings, runtime)

    def tenants():
        with database.connection_context():
            return provisioning.ready_tenant_ids()

    worker = DeliveryWorker(runtime.bus, runtime.tasks.adapters, tenants, tenant_refresh=0.0)
    yield runtime, app.test_client(), worker
    runtime.close()


def machine_state(tenant_id: int) -> str:
    with database.connection_context():
        return Machine.get(Machine.tenant == tenant_id).state


def wait_ready(worker, tenant_id: int) -> None:
    def ready():
        with database.connection_context():
            worker.step(block=0.05)
        return machine_state(tenant_id) == MachineState.READY

    wait_until(ready, AGENT_READY_TIMEOUT, f"tenant {tenant_id}'s agent to report ready")


def say(client, worker, telegram, update_id: int, text: str, expect: str) -> str:
    """Send ``text`` from the linked chat; return the first new chat message containing ``expect``."""
    seen = len(telegram.chat_messages(CHAT))
    assert post_telegram(client, text_update(update_id, CHAT, text)).status_code == 200

    def answer():
        with database.connection_context():
            worker.step(block=0.05)
        return next((m.text for m in telegram.chat_messages(CHAT)[seen:] if expect in m.text), None)

    return wait_until(answer, 60, f"an answer containing {expect!r} to {text!r}")


def linked_signup(runtime, client, worker) -> int:
    signup(client)
    tenant = tenant_row()
    wait_ready(worker, tenant.id)
    with database.connection_context():
        ChatIdentity.create(channel="telegram", chat_id=str(CHAT), user_id="1", tenant=tenant)
    return tenant.id


def test_past_due_agent_keeps_answering(world, telegram):
    runtime, client, worker = world
    tenant_id = linked_signup(runtime, client, worker)
    post_stripe(client, invoice_event("invoice.payment_failed", customer="cus_A", subscription="sub_A",
                                      event_id="evt_fail"))
    assert tenant_row().status == "past_due"
    assert say(client, worker, telegram, 1, "still there?", "echo:") == "echo: still there?"
    assert machine_state(tenant_id) == MachineState.READY


def test_a_memory_survives_cancellation_grace_archive_and_resubscription(world, telegram):
    runtime, client, worker = world
    tenant_id = linked_signup(runtime, client, worker)
    provisioner = runtime.provisioner
    data_dir = provisioner.data_dir(str(tenant_id))
    say(client, worker, telegram, 1, "/remember I take my tea with oat milk", "Remembered")

    # Cancellation: paused, not destroyed; the chat is told why, until when, and where to pay.
    post_stripe(client, sub_event("customer.subscription.deleted", status="canceled", event_id="evt_del"))
    tenant = tenant_row()
    assert str(tenant_id) not in provisioner.pids() and (data_dir / "memory.db").exists()
    assert machine_state(tenant_id) == MachineState.PAUSED
    notice = telegram.chat_messages(CHAT)[-1].text
    assert "paused" in notice and "http://127.0.0.1:8000/billing" in notice
    assert f"{tenant.grace_until:%Y-%m-%d}" in notice

    # While paused, messages are answered by the control plane and never published.
    inbox = runtime.bus.length(messages_stream(str(tenant_id)))
    response = post_telegram(client, text_update(2, CHAT, "hello?"))
    assert response.json["outcome"] == "answered"
    assert runtime.bus.length(messages_stream(str(tenant_id))) == inbox
    assert telegram.chat_messages(CHAT)[-1].text == notice

    # Grace ends: archive to the store, then destroy.
    with database.connection_context():
        report = lifecycle.end_grace(
            tenant.grace_until + timedelta(minutes=1), provisioner, env=runtime.settings.env,
            retention_days=runtime.settings.archive_retention_days,
            request=lambda t, plan: provisioning.request_machine(t, plan, runtime.tasks.provision_machine),
            send=runtime.tasks.send_notice, billing_url=runtime.tasks.billing_url())
    assert report.archived == [tenant_id] and report.failures == {}
    assert "archived until" in telegram.chat_messages(CHAT)[-1].text  # the user is told
    tenant = tenant_row()
    assert tenant.archive_key.startswith(f"archives/local/{tenant_id}/") and tenant.archived_at
    assert provisioner.store.list_keys(tenant.archive_key) == [
        tenant.archive_key, tenant.archive_key + ".manifest.json"]
    assert not data_dir.exists() and machine_state(tenant_id) == MachineState.DEPROVISIONED
    answer = say(client, worker, telegram, 3, "anyone?", "archived")
    assert "Resubscribe at http://127.0.0.1:8000/billing" in answer

    # Resubscribing within retention restores the archive before the agent starts.
    post_stripe(client, sub_event(sub="sub_B", event_id="evt_resub"))
    assert tenant_row().status == "active" and tenant_row().archive_key is None
    wait_ready(worker, tenant_id)
    wait_until(lambda: telegram.chat_messages(CHAT)[-1].text == notices.render(Notice.RESTORED)[1], 10,
               "the restored notice")
    assert "oat milk" in say(client, worker, telegram, 4, "/memory tea", "oat milk")


def test_resubscribing_during_grace_resumes_the_paused_agent(world, telegram):
    runtime, client, worker = world
    tenant_id = linked_signup(runtime, client, worker)
    say(client, worker, telegram, 1, "/remember my cat is called Miso", "Remembered")
    post_stripe(client, sub_event("customer.subscription.deleted", status="canceled", event_id="evt_del"))
    assert machine_state(tenant_id) == MachineState.PAUSED

    post_stripe(client, sub_event(sub="sub_B", event_id="evt_resub"))
    tenant = tenant_row()
    assert (tenant.status, tenant.paused_at, tenant.grace_until) == ("active", None, None)
    assert machine_state(tenant_id) == MachineState.BOOTING
    wait_ready(worker, tenant_id)
    wait_until(lambda: telegram.chat_messages(CHAT)[-1].text == notices.render(Notice.RESUMED)[1], 10,
               "the welcome-back notice")
    assert "Miso" in say(client, worker, telegram, 2, "/memory cat", "Miso")


def test_after_retention_the_archive_is_gone_and_a_resubscriber_gets_a_fresh_agent(world, telegram):
    runtime, client, worker = world
    tenant_id = linked_signup(runtime, client, worker)
    say(client, worker, telegram, 1, "/remember the wifi password is hunter2", "Remembered")
    post_stripe(client, sub_event("customer.subscription.deleted", status="canceled", event_id="evt_del"))
    tenant = tenant_row()
    settings, provisioner = runtime.settings, runtime.provisioner
    def request(t, plan):
        return provisioning.request_machine(t, plan, runtime.tasks.provision_machine)
    told = {"send": runtime.tasks.send_notice, "billing_url": runtime.tasks.billing_url()}
    with database.connection_context():
        lifecycle.end_grace(tenant.grace_until + timedelta(hours=1), provisioner, env=settings.env,
                            retention_days=settings.archive_retention_days, request=request, **told)
        key = Tenant.get_by_id(tenant_id).archive_key
        # The archive's key is stamped with the real time: prune with a "now" past its retention.
        later = utcnow() + timedelta(days=settings.archive_retention_days, hours=1)
        report = lifecycle.end_grace(later, provisioner, env=settings.env,
                                     retention_days=settings.archive_retention_days, request=request,
                                     **told)
    assert report.pruned == [key]
    assert provisioner.store.list_keys(f"archives/local/{tenant_id}/") == []
    assert tenant_row().archive_key is None
    assert "Resubscribe" in say(client, worker, telegram, 2, "hi", "Resubscribe")

    post_stripe(client, sub_event(sub="sub_B", event_id="evt_resub"))
    wait_ready(worker, tenant_id)
    assert say(client, worker, telegram, 3, "/memory wifi", "memor") in (
        "No matching memories.", "I don't remember anything yet.")


def test_delete_tenant_data_removes_everything_and_is_idempotent(client, runtime):
    signup(client)
    signup(client, email="bob@example.com", customer="cus_B", sub="sub_B")
    ada, bob = tenant_row(), tenant_row("bob@example.com")
    provisioner, store = runtime.provisioner, runtime.provisioner.store
    with database.connection_context():
        account = Account.create(tenant=ada, email="ada@example.com", password_hash="x")
        PasswordReset.create(account=account, token_hash="h", expires_at=utcnow())
        for tenant, chat in ((ada, "1"), (bob, "2")):
            ChatIdentity.create(channel="telegram", chat_id=chat, tenant=tenant)
            LinkToken.create(token=f"tok{chat}", tenant=tenant, expires_at=utcnow())
            Message.create(tenant=tenant, envelope_id=f"e{chat}", direction="in", channel="telegram",
                           chat_id=chat, text="my secret")
            Delivery.create(envelope_id=f"e{chat}", tenant=tenant, channel="telegram", chat_id=chat)
            Usage.create(tenant=tenant, model="m", input_tokens=1)
    for tenant in (ada, bob):  # a machine's data dir, an archive and a nightly backup each
        (provisioner.data_dir(str(tenant.id)) / "memory.db").parent.mkdir(parents=True)
        (provisioner.data_dir(str(tenant.id)) / "memory.db").write_bytes(b"memories")
        store.put_bytes(archive_key("local", str(tenant.id)), b"archive")
        store.put_bytes(f"backups/tenants/{tenant.id}/20260101T000000Z.tar.gz", b"backup")

    for _ in range(2):  # idempotent
        with database.connection_context():
            gone = lifecycle.delete_tenant_data(Tenant.get_by_id(ada.id), runtime)
        assert gone.email is None and gone.deleted_at is not None and gone.stripe_customer_id == "cus_A"

    with database.connection_context():
        assert PasswordReset.select().count() == 0
        for model in (Account, ChatIdentity, LinkToken, Message, Delivery, Usage, Machine):
            owners = [getattr(row, "tenant_id", None) for row in model.select()]
            assert ada.id not in owners, model.__name__
        assert Message.select().where(Message.tenant == bob).count() == 1
    assert not provisioner.data_dir(str(ada.id)).exists()
    assert provisioner.data_dir(str(bob.id)).exists()
    assert [k for k in store.list_keys() if f"/{ada.id}/" in k] == []
    assert len([k for k in store.list_keys() if f"/{bob.id}/" in k]) == 2

    # A late Stripe event for the deleted customer is harmless: no tenant, machine or mail.
    late = sub_event("customer.subscription.updated", status="active", event_id="evt_late_after_delete")
    assert post_stripe(client, late).status_code == 200
    late_fail = invoice_event("invoice.payment_failed", customer="cus_A", subscription="sub_A",
                              event_id="evt_late_fail")
    assert post_stripe(client, late_fail).status_code == 200
    with database.connection_context():
        assert Machine.select().where(Machine.tenant == ada.id).count() == 0
        assert Tenant.select().where(Tenant.stripe_customer_id == "cus_A").count() == 1
        assert OutboxMail.select().count() == 0
