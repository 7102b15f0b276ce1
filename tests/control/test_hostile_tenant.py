"""A hostile tenant (issue #19, findings 1, 2 and 14): tenant B holds its agent's bus credentials
(its own Redis ACL user, as provisioning hands them to its VM) and attacks tenant A through its
events stream.  A must get no message, no state change and no rows from B, and still get its own
replies, even to a message whose envelope id B tried to claim before A sent it; one bad event
or reply stalls nobody; deleting an account removes its bus data.

Real parts: a private ``redis-server`` with an aclfile (the control plane is its admin, each
agent its tenant's ACL user), the control plane's database and the local Telegram stand-in.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
import redis
from support.delivery import run_until
from support.webhooks import TELEGRAM_SECRET, post_telegram

from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import database
from control.models import (
    AttentionItem,
    ChatIdentity,
    Delivery,
    DeliveryState,
    Machine,
    Message,
    Tenant,
    Usage,
    utcnow,
)
from control.services import lifecycle, provisioning
from control.services.delivery import DeliveryWorker
from control.services.routing import envelope_id_for, envelope_key
from control.settings import Settings
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update
from wire.errors import BusAuthError
from wire.protocol import DELIVERY_GROUP, Envelope, Event, events_stream, messages_stream, new_id
from wire.redis_bus import RedisBus

A_CHAT, B_CHAT = "1001", "2002"
A_USAGE = {"model": "claude-haiku-5-5", "input_tokens": 9, "output_tokens": 3, "cost_cents": 0.01,
           "latency_ms": 50}


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def settings(tmp_path, database_url, private_redis_url):
    """The control plane on the Redis bus, as admin (``bus_url``)."""
    return Settings(data_dir=str(tmp_path / "data"), database_url=database_url,
                    bus_url=private_redis_url, telegram_bot_token="123456:TEST",
                    telegram_webhook_secret=TELEGRAM_SECRET)


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as standin:
        yield standin


class Tenancy:
    """A paying tenant with a ready machine, a linked Telegram chat and its agent's bus (its own
    ACL user's URL, as ``provisioning`` gives it to the VM)."""

    def __init__(self, runtime, email: str, chat: str):
        with database.connection_context():
            self.row = Tenant.create(email=email, plan="light", status="active")
            Machine.create(tenant=self.row, plan="light", state="ready", ready_at=utcnow(),
                           detail="up")
            ChatIdentity.create(channel="telegram", chat_id=chat, tenant=self.row)
        self.id, self.chat = self.row.id, chat
        self.agent_bus = RedisBus.from_url(
            provisioning.tenant_bus_url(runtime.settings.bus_url, str(self.id)))
        self.events = events_stream(str(self.id))

    def user_asks(self, text: str) -> str:
        """The user's message as routing records it; return its envelope id."""
        envelope_id = new_id()
        with database.connection_context():
            Message.create(tenant=self.row, envelope_id=envelope_id, direction="in",
                           channel="telegram", chat_id=self.chat, text=text)
        return envelope_id

    def emit(self, **fields) -> None:
        """The agent (or an attacker holding its credentials) writes an event on its stream."""
        event = {"v": 1, "type": "event", "message_id": new_id(), "seq": 1, "kind": "final",
                 "text": "", "tenant": str(self.id), "channel": "telegram", "chat_id": self.chat,
                 **fields}
        self.agent_bus.append(self.events, json.dumps(event))


@pytest.fixture
def tenants(runtime):
    a = Tenancy(runtime, "ada@example.com", A_CHAT)
    b = Tenancy(runtime, "mallory@example.com", B_CHAT)
    yield a, b
    a.agent_bus.close()
    b.agent_bus.close()


def _worker(runtime, telegram, *tenants: Tenancy, consumer: str = "control") -> DeliveryWorker:
    # B's stream is read first, so its events are taken (and flushed) before A's.
    return DeliveryWorker(runtime.bus, {"telegram": TelegramAdapter(BotApiClient(telegram.token, telegram.base_url))},
                          lambda: [t.id for t in tenants], edit_interval=0.05, consumer=consumer)


def _delivered(envelope_id: str):
    def check() -> bool:
        row = Delivery.get_or_none(Delivery.envelope_id == envelope_id)
        return row is not None and row.state == DeliveryState.DELIVERED
    return check


def _dead_reasons(runtime, stream: str) -> list[str]:
    client = redis.Redis.from_url(runtime.settings.bus_url, decode_responses=True)
    try:
        return [json.loads(fields["payload"])["reason"] for _, fields in client.xrange(f"{stream}:dead")]
    finally:
        client.close()


def test_tenant_b_cannot_reach_tenant_a_through_its_events_stream(runtime, client, telegram, tenants):
    a, b = tenants
    question = a.user_asks("What is on my calendar?")
    b_own = b.user_asks("hello")
    attacks = [
        # A final claiming tenant A, to A's chat: phishing from our own bot.
        {"tenant": str(a.id), "chat_id": A_CHAT, "text": "Your card expired: pay at evil.example"},
        # B's own tenant id, but A's chat.
        {"chat_id": A_CHAT, "text": "Your card expired: pay at evil.example"},
        # A typing indicator in A's chat.
        {"kind": "status", "chat_id": A_CHAT, "text": "typing"},
        # A's machine reported failed.
        {"kind": "lifecycle", "lifecycle": "failed", "tenant": str(a.id), "channel": "",
         "chat_id": "", "text": "pwned", "at": 4102444800.0},
        # A's reply marked delivered, with B's text and usage written under A's envelope id.
        {"message_id": question, "chat_id": B_CHAT, "text": "mine now", "usage": A_USAGE},
        {"message_id": question, "tenant": str(a.id), "chat_id": A_CHAT, "text": "mine now"},
        # A's web chat.
        {"channel": "web", "chat_id": f"web-{a.id}", "text": "Your card expired"},
        # B's own message answered in A's chat.
        {"message_id": b_own, "chat_id": A_CHAT, "text": "Your card expired"},
    ]
    for attack in attacks:
        b.emit(**attack)
    with pytest.raises(BusAuthError):  # and B's credentials cannot write A's stream at all
        b.agent_bus.append(a.events, Event(message_id=question, seq=1, kind="final", text="x",
                                           tenant=str(a.id), channel="telegram",
                                           chat_id=A_CHAT).to_json())

    worker = _worker(runtime, telegram, b, a)
    run_until(worker, lambda: runtime.bus.length(f"{b.events}:dead") == len(attacks))
    a.emit(message_id=question, kind="delta", text="Two")
    a.emit(message_id=question, seq=2, text="Two meetings today.", usage=A_USAGE)
    run_until(worker, _delivered(question))

    assert [m.text for m in telegram.chat_messages(A_CHAT)] == ["Two meetings today."]
    assert telegram.chat_messages(B_CHAT) == []
    assert [c.params["chat_id"] for c in telegram.calls_for("sendChatAction")] == []
    with database.connection_context():
        machine = Machine.get(Machine.tenant == a.id)
        assert (machine.state, machine.detail) == ("ready", "up")
        assert [(m.direction, m.text) for m in Message.select().where(Message.tenant == a.id)
                .order_by(Message.id)] == [("in", "What is on my calendar?"),
                                           ("out", "Two meetings today.")]
        assert [(d.envelope_id, d.last_text) for d in Delivery.select()] == [
            (question, "Two meetings today.")]
        assert [(u.tenant_id, u.output_tokens) for u in Usage.select()] == [(a.id, 3)]
        assert AttentionItem.get(AttentionItem.kind == "event_rejected").subject == str(b.id)
    codes = [reason.split(":")[0] for reason in _dead_reasons(runtime, b.events)]
    assert codes == ["foreign_tenant", "chat_not_linked", "chat_not_linked", "foreign_tenant",
                     "foreign_reply", "foreign_tenant", "chat_not_linked", "other_chat"]
    assert runtime.bus.pending_count(b.events, DELIVERY_GROUP) == 0
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'hermes_bus_dead_letters{{stream="{b.events}"}} {float(len(attacks))}' in metrics


# Envelope ids before issue #19's fix: uuid5(this namespace, "channel:chat_id:message_id"),
# which anyone could compute for another tenant's next Telegram message id.
OLD_ENVELOPE_NAMESPACE = uuid.UUID("6f1c1d4e-3d43-4f0e-9a7e-2b8f5d0c9a11")


def test_tenant_b_cannot_claim_the_envelope_id_of_tenant_a_next_message(
        runtime, client, telegram, tenants):
    a, b = tenants
    next_message = 42  # Telegram's message ids count up per chat: A's next one is easy to guess
    old_id = uuid.uuid5(OLD_ENVELOPE_NAMESPACE, f"telegram:{A_CHAT}:{next_message}").hex
    # B answers "its own" message under that id, in its own chat: a ledger row of B's.
    b.emit(message_id=old_id, text="claimed")
    worker = _worker(runtime, telegram, b, a)
    run_until(worker, _delivered(old_id))

    update = text_update(5001, int(A_CHAT), "What is on my calendar?", message_id=next_message)
    assert post_telegram(client, update).json["outcome"] == "published"
    with database.connection_context():
        question = Message.get((Message.tenant == a.id) & (Message.direction == "in")).envelope_id
    a.emit(message_id=question, text="Two meetings today.")
    run_until(worker, lambda: _delivered(question)() or runtime.bus.length(f"{a.events}:dead") > 0)

    assert runtime.bus.length(f"{a.events}:dead") == 0
    assert [m.text for m in telegram.chat_messages(A_CHAT)] == ["Two meetings today."]
    assert [m.text for m in telegram.chat_messages(B_CHAT)] == ["claimed"]
    with database.connection_context():
        assert {(d.envelope_id, d.tenant_id) for d in Delivery.select()} == {
            (old_id, b.id), (question, a.id)}


def test_envelope_ids_are_deterministic_per_key_and_unpredictable_without_it():
    key = envelope_key("the control plane's secret")
    first = envelope_id_for(key, "telegram", A_CHAT, "42")
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert envelope_id_for(key, "telegram", A_CHAT, "42") == first  # a retried webhook's id
    assert envelope_id_for(envelope_key("another secret"), "telegram", A_CHAT, "42") != first
    assert envelope_id_for(key, "telegram", A_CHAT, "43") != first
    assert first != uuid.uuid5(OLD_ENVELOPE_NAMESPACE, f"telegram:{A_CHAT}:42").hex


def test_a_malformed_event_of_one_tenant_stalls_nobody_and_is_never_claimed_again(
        runtime, telegram, tenants):
    a, b = tenants
    b.emit(text=1)  # the typed parse refuses it
    question = a.user_asks("ping?")
    a.emit(message_id=question, text="pong")
    run_until(_worker(runtime, telegram, b, a), _delivered(question))
    assert [m.text for m in telegram.chat_messages(A_CHAT)] == ["pong"]
    [reason] = _dead_reasons(runtime, b.events)
    assert "'text' must be a string" in reason
    restarted = _worker(runtime, telegram, b, a, consumer="control-2")
    with database.connection_context():
        assert restarted.step(block=0.05) == 0
    assert runtime.bus.pending_count(b.events, DELIVERY_GROUP) == 0


def test_a_reply_that_raises_while_being_sent_fails_alone(runtime, telegram, tenants):
    a, b = tenants
    telegram.answer_unusably(B_CHAT)  # sendMessage "succeeds" with no message in it
    b_question, a_question = b.user_asks("hi"), a.user_asks("ping?")
    b.emit(message_id=b_question, text="hello B")
    a.emit(message_id=a_question, text="pong")
    worker = _worker(runtime, telegram, b, a)
    run_until(worker, _delivered(a_question))
    assert [m.text for m in telegram.chat_messages(A_CHAT)] == ["pong"]
    with database.connection_context():
        failed = Delivery.get(Delivery.envelope_id == b_question)
        assert failed.state == DeliveryState.FAILED and "TypeError" in failed.failure
        assert AttentionItem.get(AttentionItem.kind == "delivery_failed").subject == b_question
    assert [r.split(":")[0] for r in _dead_reasons(runtime, b.events)] == ["delivery failed"]
    assert runtime.bus.pending_count(b.events, DELIVERY_GROUP) == 0
    restarted = _worker(runtime, telegram, b, a, consumer="control-2")
    with database.connection_context():
        assert restarted.step(block=0.05) == 0
    assert len(telegram.calls_for("sendMessage")) == 2  # B's once, A's once: nothing retried


def test_account_deletion_removes_the_tenants_bus_streams_and_acl_user(runtime, tenants):
    a, b = tenants
    for tenant in (a, b):
        envelope = Envelope(id=new_id(), tenant=str(tenant.id), channel="telegram",
                            chat_id=tenant.chat, sender_id="1", text="my secret",
                            attachments=[{"kind": "image", "file_id": "f",
                                          "url": "https://hermes.example/media/signed"}])
        runtime.bus.append(messages_stream(str(tenant.id)), envelope.to_json(),
                           idempotency_key=envelope.id)
        tenant.emit(text="a reply with my secret")
        [bad] = runtime.bus.read([tenant.events], DELIVERY_GROUP, "control")
        runtime.bus.dead_letter(bad, DELIVERY_GROUP, "kept aside")  # its text in :dead too
    admin = redis.Redis.from_url(runtime.settings.bus_url, decode_responses=True)

    def keys_of(tenant: Tenancy) -> set[str]:
        return {k for pattern in (f"hermes:*:{tenant.id}", f"hermes:*:{tenant.id}:*")
                for k in admin.scan_iter(match=pattern)}

    assert len(keys_of(a)) == 4  # messages, its idempotency key, events, events:dead
    before_b = keys_of(b)
    with database.connection_context():
        lifecycle.delete_tenant_data(Tenant.get_by_id(a.id), runtime)
    assert keys_of(a) == set()
    assert keys_of(b) == before_b
    users = admin.acl_users()
    assert f"hermes-tenant-{a.id}" not in users and f"hermes-tenant-{b.id}" in users
    admin.close()
