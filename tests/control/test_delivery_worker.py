"""Delivery worker against a real SqliteBus and the local Bot API stand-in."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
from support.delivery import delivered, delivery_bus, publish, run_until

from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import database
from control.models import Delivery, Message, Usage
from control.services.delivery import DELIVERY_GROUP, DeliveryWorker, split_text
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.protocol import events_stream

CHAT = "5551"


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as standin:
        yield standin


@pytest.fixture
def bus(tmp_path):
    return delivery_bus(tmp_path)


def _worker(bus, telegram, tenant, interval=0.3, consumer="control"):
    client = BotApiClient(telegram.token, telegram.base_url)
    return DeliveryWorker(bus, {"telegram": TelegramAdapter(client)}, lambda: [tenant.id],
                          edit_interval=interval, consumer=consumer)


_publish = partial(publish, channel="telegram", chat_id=CHAT)


def test_streamed_reply_is_one_message_edited_at_most_once_per_interval(bus, telegram, tenant):
    worker = _worker(bus, telegram, tenant, interval=0.3)
    _publish(bus, tenant, "m1", 0, "status", "typing")
    for seq, text in enumerate(["Hel", "Hello", "Hello, wor", "Hello, world"], start=1):
        _publish(bus, tenant, "m1", seq, "delta", text)
    usage = {"model": "claude-haiku-4-5", "input_tokens": 12, "output_tokens": 4, "cost_cents": 0.0032,
             "latency_ms": 80}
    _publish(bus, tenant, "m1", 5, "final", "Hello, world!", usage)
    run_until(worker, delivered("m1"))
    [message] = telegram.chat_messages(CHAT)
    assert message.text == "Hello, world!"
    assert len(telegram.calls_for("sendMessage")) == 1
    assert telegram.calls_for("sendChatAction")[0].params["action"] == "typing"
    sends = [c.at for c in telegram.calls if c.method in ("sendMessage", "editMessageText")]
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(sends))
    assert bus.pending_count(events_stream(str(tenant.id)), DELIVERY_GROUP) == 0
    with database.connection_context():
        assert Message.get(Message.direction == "out").text == "Hello, world!"
        assert Usage.get().output_tokens == 4


def test_rate_limited_chat_waits_retry_after(bus, telegram, tenant):
    telegram.rate_limit_next(retry_after=1, times=1)
    worker = _worker(bus, telegram, tenant, interval=0.05)
    _publish(bus, tenant, "m2", 1, "final", "after the limit")
    run_until(worker, delivered("m2"))
    limited, sent = telegram.calls_for("sendMessage")
    assert sent.at - limited.at >= 0.95
    assert [m.text for m in telegram.chat_messages(CHAT)] == ["after the limit"]


def test_replayed_final_after_delivery_is_not_sent_again(bus, telegram, tenant):
    worker = _worker(bus, telegram, tenant)
    _publish(bus, tenant, "m3", 1, "final", "only once")
    run_until(worker, delivered("m3"))
    _publish(bus, tenant, "m3", 1, "final", "only once")
    restarted = _worker(bus, telegram, tenant)
    run_until(restarted, lambda: bus.pending_count(events_stream(str(tenant.id)), DELIVERY_GROUP) == 0
               and bus.length(events_stream(str(tenant.id))) == 2)
    assert len(telegram.chat_messages(CHAT)) == 1


def test_undelivered_final_is_sent_after_a_worker_crash_and_marked_recovered(bus, telegram, tenant):
    _publish(bus, tenant, "m4", 1, "final", "recovered reply")
    crashed = bus.read([events_stream(str(tenant.id))], DELIVERY_GROUP, "control", count=10)
    assert len(crashed) == 1  # read, never acknowledged: the worker died here
    survivor = _worker(bus, telegram, tenant, consumer="control-2")
    run_until(survivor, delivered("m4"))
    assert [m.text for m in telegram.chat_messages(CHAT)] == ["recovered reply"]
    with database.connection_context():
        assert Delivery.get(Delivery.envelope_id == "m4").recovered is True


def test_long_final_reply_is_split_at_telegrams_limit(bus, telegram, tenant):
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(100))
    worker = _worker(bus, telegram, tenant, interval=0.01)
    _publish(bus, tenant, "m5", 1, "final", text)
    run_until(worker, delivered("m5"))
    messages = telegram.chat_messages(CHAT)
    assert len(messages) == 3
    assert all(len(m.text) <= 4096 for m in messages)
    assert "\n".join(m.text for m in messages) == text


def test_malformed_event_is_dead_lettered_without_stopping_delivery(bus, telegram, tenant):
    stream = events_stream(str(tenant.id))
    bus.append(stream, '{"v": 1, "type": "event", "kind": "explode"}')
    _publish(bus, tenant, "m6", 1, "final", "still here")
    run_until(_worker(bus, telegram, tenant), delivered("m6"))
    assert bus.length(stream + ":dead") == 1


def test_split_text_prefers_line_breaks():
    assert split_text("a" * 10, limit=4) == ["aaaa", "aaaa", "aa"]
    assert split_text("abc\ndefgh", limit=6) == ["abc", "defgh"]
