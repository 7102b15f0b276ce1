"""Delivery throughput (issue 22): replies of different chats sent at once, one chat's in order;
delivery shared between processes by tenant shard, each under its own consumer name."""

from __future__ import annotations

import os
import threading
import time
from functools import partial

import pytest
from support.delivery import delivered, publish, run_until

from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import database
from control.errors import ConfigError
from control.models import Machine, Tenant, utcnow
from control.services.delivery import DeliveryWorker, consumer_name, in_shard
from control.settings import Settings
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.redis_bus import RedisBus

CHATS = ["7001", "7002", "7003", "7004"]


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as standin:
        yield standin


@pytest.fixture
def bus(private_redis_url):
    """The production bus on a private Redis, redelivering after 0.5 s."""
    bus = RedisBus.from_url(private_redis_url, visibility_timeout=0.5)
    yield bus
    bus.close()


def _adapters(telegram) -> dict:
    return {"telegram": TelegramAdapter(BotApiClient(telegram.token, telegram.base_url))}


class Gate:
    """Holds the first ``width`` sendMessage calls in the stand-in until that many are in
    flight at once (or ``timeout`` s passed), and records the most seen in flight."""

    def __init__(self, width: int, timeout: float = 10.0):
        self.width, self.timeout = width, timeout
        self.in_flight = self.most = self.held = 0
        self.opened = False
        self.changed = threading.Condition()

    def __call__(self, call, status: int) -> None:
        if call.method != "sendMessage":
            return
        with self.changed:
            if self.held >= self.width:
                return
            self.held += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.opened = self.opened or self.in_flight >= self.width
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.opened, self.timeout)
            self.in_flight -= 1


def test_replies_to_different_chats_go_out_at_once_and_one_chats_stay_in_order(bus, telegram, tenant):
    gate = Gate(len(CHATS))
    telegram.on_call = gate
    worker = DeliveryWorker(bus, _adapters(telegram), lambda: [tenant.id], edit_interval=0.0,
                            concurrency=len(CHATS))
    send = partial(publish, bus, tenant, kind="final", channel="telegram")
    send("first", 0, text="first answer", chat_id=CHATS[0])
    send("second", 0, text="second answer", chat_id=CHATS[0])
    for chat in CHATS[1:]:
        send(f"to-{chat}", 0, text=f"answer for {chat}", chat_id=chat)
    started = time.monotonic()
    try:
        run_until(worker, lambda: all(delivered(m)() for m in ["first", "second"]
                                      + [f"to-{c}" for c in CHATS[1:]]))
    finally:
        worker.close()
    # Every chat's first reply was in flight at the same time: none waited for another chat.
    assert gate.most == len(CHATS)
    assert time.monotonic() - started < gate.timeout
    assert [m.text for m in telegram.chat_messages(CHATS[0])] == ["first answer", "second answer"]
    texts = [c.params["text"] for c in telegram.calls_for("sendMessage")]
    assert sorted(texts) == sorted(["first answer", "second answer"]
                                   + [f"answer for {c}" for c in CHATS[1:]])


def _tenant_with_machine(email: str) -> Tenant:
    with database.connection_context():
        row = Tenant.create(email=email, plan="light", status="active")
        Machine.create(tenant=row, plan="light", state="ready", ready_at=utcnow())
        return row


def test_a_dead_workers_reply_is_delivered_by_another_process_of_its_shard(bus, telegram, tenant):
    other = _tenant_with_machine("grace@example.com")
    ids = [tenant.id, other.id]
    shard_of_tenant = (tenant.id % 2, 2)

    def share(shard):
        return lambda: [t for t in ids if in_shard(t, shard)]

    publish(bus, tenant, "m1", 0, "final", "hello from the shard", channel="telegram", chat_id=CHATS[0])
    # A worker of the tenant's shard reads the reply and dies before sending it (this one has
    # no Telegram adapter, so the entry stays pending under its consumer name).
    dying = DeliveryWorker(bus, {}, share(shard_of_tenant), consumer="host-a-101")
    with database.connection_context():
        assert dying.step(block=1.0) == 1
    # The other shard's worker never reads the tenant's stream.
    elsewhere = DeliveryWorker(bus, _adapters(telegram), share(((tenant.id + 1) % 2, 2)),
                               consumer="host-b-202")
    # The next worker of the shard, under a name of its own, claims it once it is idle 0.5 s.
    taking_over = DeliveryWorker(bus, _adapters(telegram), share(shard_of_tenant), consumer="host-b-203")
    with database.connection_context():
        assert elsewhere.step(block=0.6) == 0
    run_until(taking_over, delivered("m1"))
    assert [c.params["text"] for c in telegram.calls_for("sendMessage")] == ["hello from the shard"]


def test_each_process_has_its_own_consumer_name_and_a_valid_shard():
    assert consumer_name() != "control"
    assert consumer_name().endswith(f"-{os.getpid()}")
    assert Settings.from_env({"HERMES_DELIVERY_SHARD": "2/3"}).delivery_shard == (2, 3)
    assert Settings.from_env({}).delivery_shard == (0, 1)
    assert Settings.from_env({}).delivery_concurrency == 8
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError):
            Settings.from_env({"HERMES_DELIVERY_SHARD": bad})
    for bad in ("0", "-2", "many"):
        with pytest.raises(ConfigError):
            Settings.from_env({"HERMES_DELIVERY_CONCURRENCY": bad})
