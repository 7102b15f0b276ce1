"""Delivery worker faults: killed after Telegram accepted a reply, before the ledger write.

The worker runs as a real subprocess (SQLite control database and SqliteBus files shared with
the test); the Telegram stand-in numbers messages per chat like a private chat and holds its
answer to ``sendMessage`` after creating the message, so the test can SIGKILL the worker in
exactly the window between "the user sees the message" and "the ledger knows its id".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.serve import wait_until

from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import database
from control.models import AttentionItem, Delivery, Message
from control.services.delivery import DeliveryWorker
from control.services.delivery_recovery import report_overwrite
from control.services.routing import record_control_reply
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.protocol import Event, events_stream
from wire.sqlite_bus import SqliteBus

CHAT = "7771"
ROOT = Path(__file__).resolve().parents[2]

# The worker process: the same DeliveryWorker `hermes serve` runs, on the test's files.
WORKER = """
import sys, threading
from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import init_database
from control.services.delivery import DeliveryWorker
from control.services.delivery_recovery import report_overwrite
from wire.sqlite_bus import SqliteBus

db_url, bus_path, api_base, token, tenant, consumer = sys.argv[1:7]
db = init_database(db_url)
bus = SqliteBus(bus_path, visibility_timeout=0.5, poll_interval=0.01)
telegram = TelegramAdapter(BotApiClient(token, api_base), on_overwrite=report_overwrite)
worker = DeliveryWorker(bus, {"telegram": telegram}, lambda: [int(tenant)], edit_interval=0.05,
                        consumer=consumer)
with db.connection_context():
    worker.run(threading.Event())
"""


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def telegram():
    with TelegramBotApiStandin(chat_sequences=True) as standin:
        yield standin


@pytest.fixture
def bus_path(tmp_path):
    return tmp_path / "bus.db"


@pytest.fixture
def bus(bus_path):
    bus = SqliteBus(bus_path, visibility_timeout=0.5, poll_interval=0.01)
    yield bus
    bus.close()


@pytest.fixture
def workers(settings, bus_path, telegram, tenant):
    """Start delivery worker subprocesses; every one still running is killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(consumer: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, settings.database_url, str(bus_path), telegram.base_url,
             telegram.token, str(tenant.id), consumer],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _user_asks(telegram, bus, tenant, envelope_id: str, question: str) -> int:
    """The user's message exists in the chat and in the conversation log, as routing stores it.

    Returns its message id.
    """
    message_id = telegram.user_message(CHAT, question)
    with database.connection_context():
        Message.create(tenant=tenant, envelope_id=envelope_id, direction="in", channel="telegram",
                       chat_id=CHAT, text=question, platform_message_id=str(message_id))
    return message_id


def _publish(bus, tenant, envelope_id: str, seq: int, kind: str, text: str) -> None:
    event = Event(message_id=envelope_id, seq=seq, kind=kind, text=text, tenant=str(tenant.id),
                  channel="telegram", chat_id=CHAT)
    bus.append(events_stream(str(tenant.id)), event.to_json())


def _ledger(envelope_id: str) -> Delivery | None:
    with database.connection_context():
        return Delivery.get_or_none(Delivery.envelope_id == envelope_id)


def _kill_after_accepted(telegram, process) -> None:
    """SIGKILL ``process`` once Telegram applied its sendMessage but before it saw the answer."""
    accepted, release = telegram.hold_next("sendMessage")
    assert accepted.wait(30), "the worker never called sendMessage"
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    release.set()


def _bot_texts(telegram) -> list[str]:
    return [m.text for m in telegram.chat_messages(CHAT)]


def test_worker_killed_after_telegram_accepted_the_reply_leaves_one_message(
        telegram, bus, tenant, workers):
    _user_asks(telegram, bus, tenant, "e1", "what is the capital of France?")
    _publish(bus, tenant, "e1", 1, "final", "Paris is the capital of France.")
    first = workers("control-1")
    _kill_after_accepted(telegram, first)
    assert _bot_texts(telegram) == ["Paris is the capital of France."]
    ledger = _ledger("e1")
    assert ledger.platform_message_id is None and ledger.pending_text  # the crash window
    workers("control-2")
    wait_until(lambda: (row := _ledger("e1")) and row.state == "delivered", 30, "the reply delivered")
    assert _bot_texts(telegram) == ["Paris is the capital of France."]
    [message] = telegram.chat_messages(CHAT)
    ledger = _ledger("e1")
    assert ledger.platform_message_id == str(message.message_id) and ledger.recovered
    assert len(telegram.calls_for("sendMessage")) == 1


def test_worker_killed_while_streaming_finishes_the_same_message_with_the_final_text(
        telegram, bus, tenant, workers):
    # Earlier replies in the chat: the search must skip their ids, not touch them.
    _user_asks(telegram, bus, tenant, "e0", "hi")
    _publish(bus, tenant, "e0", 1, "final", "Hello!")
    first = workers("control-1")
    wait_until(lambda: (row := _ledger("e0")) and row.state == "delivered", 30, "the first reply")
    _user_asks(telegram, bus, tenant, "e2", "tell me a story")
    _publish(bus, tenant, "e2", 1, "delta", "Once upon")
    _kill_after_accepted(telegram, first)
    _publish(bus, tenant, "e2", 2, "delta", "Once upon a time")
    _publish(bus, tenant, "e2", 3, "final", "Once upon a time, the end.")
    workers("control-2")
    wait_until(lambda: (row := _ledger("e2")) and row.state == "delivered", 30, "the story delivered")
    assert _bot_texts(telegram) == ["Hello!", "Once upon a time, the end."]
    assert len(telegram.calls_for("sendMessage")) == 2


def test_send_whose_answer_timed_out_is_found_instead_of_sent_twice(telegram, bus, tenant):
    _user_asks(telegram, bus, tenant, "e3", "ping?")
    _publish(bus, tenant, "e3", 1, "final", "pong")
    client = BotApiClient(telegram.token, telegram.base_url, timeout=0.5)
    telegram_adapter = TelegramAdapter(client, on_overwrite=report_overwrite)
    worker = DeliveryWorker(bus, {"telegram": telegram_adapter}, lambda: [tenant.id], edit_interval=0.05)
    accepted, release = telegram.hold_next("sendMessage")
    deadline = time.monotonic() + 30
    with database.connection_context():
        while time.monotonic() < deadline and not accepted.is_set():
            worker.step(block=0.05)
        release.set()  # the client already gave up: Telegram's answer is lost
        while time.monotonic() < deadline and _ledger("e3").state != "delivered":
            worker.step(block=0.05)
    assert _bot_texts(telegram) == ["pong"]
    assert len(telegram.calls_for("sendMessage")) == 1


def test_refused_send_clears_the_intent_and_a_later_send_needs_no_search(telegram, bus, tenant):
    _user_asks(telegram, bus, tenant, "e4", "are you there?")
    telegram.rate_limit_next(retry_after=0.2, times=1)
    _publish(bus, tenant, "e4", 1, "final", "Yes.")
    worker = DeliveryWorker(bus, {"telegram": _telegram(telegram)},
                            lambda: [tenant.id], edit_interval=0.05)
    deadline = time.monotonic() + 15
    with database.connection_context():
        while time.monotonic() < deadline and (_ledger("e4") is None or _ledger("e4").state != "delivered"):
            worker.step(block=0.05)
    assert _bot_texts(telegram) == ["Yes."]
    assert telegram.calls_for("editMessageText") == []  # a 429 means nothing was sent: no probe


def _crashed_send(telegram, tenant, envelope_id: str, text: str, after: int) -> None:
    """The state a worker killed right after Telegram accepted ``text`` leaves behind."""
    telegram_client = BotApiClient(telegram.token, telegram.base_url)
    telegram_client.send_message(CHAT, text)
    telegram_client.close()
    with database.connection_context():
        Delivery.create(envelope_id=envelope_id, tenant=tenant, channel="telegram", chat_id=CHAT,
                        reply_to=str(after), pending_text=text, pending_after=str(after))


def _deliver(bus, telegram, tenant, envelope_id: str) -> None:
    worker = DeliveryWorker(bus, {"telegram": _telegram(telegram)},
                            lambda: [tenant.id], edit_interval=0.05)
    deadline = time.monotonic() + 15
    with database.connection_context():
        while time.monotonic() < deadline and _ledger(envelope_id).state != "delivered":
            worker.step(block=0.05)


def test_search_skips_bot_messages_the_conversation_log_knows(telegram, bus, tenant):
    asked = _user_asks(telegram, bus, tenant, "e5", "/help then a question")
    notice = BotApiClient(telegram.token, telegram.base_url).send_message(CHAT, "Here is some help.")
    with database.connection_context():
        record_control_reply("telegram", CHAT, "Here is some help.", notice)
    _crashed_send(telegram, tenant, "e5", "The answer.", after=asked)
    _publish(bus, tenant, "e5", 1, "final", "The answer.")
    _deliver(bus, telegram, tenant, "e5")
    assert _bot_texts(telegram) == ["Here is some help.", "The answer."]


def test_unrecorded_bot_message_in_the_search_window_is_reported_to_the_operator(telegram, bus, tenant):
    """The documented limit: a bot message recorded nowhere is overwritten by the probe."""
    asked = _user_asks(telegram, bus, tenant, "e6", "a question")
    BotApiClient(telegram.token, telegram.base_url).send_message(CHAT, "Unrecorded notice.")
    _crashed_send(telegram, tenant, "e6", "The answer.", after=asked)
    _publish(bus, tenant, "e6", 1, "final", "The answer.")
    _deliver(bus, telegram, tenant, "e6")
    with database.connection_context():
        [item] = AttentionItem.select().where(AttentionItem.kind == "delivery_probe_edited")
    assert item.subject == "e6"
    assert "Unrecorded notice." not in _bot_texts(telegram)


def test_crash_while_logging_the_reply_leaves_it_undelivered_then_logs_and_bills_it_once(
        telegram, bus, tenant, monkeypatch):
    from control.models import Usage
    from control.services import delivery

    _user_asks(telegram, bus, tenant, "e9", "how much?")
    event = Event(message_id="e9", seq=1, kind="final", text="Two euros.", tenant=str(tenant.id),
                  channel="telegram", chat_id=CHAT,
                  usage={"model": "claude-haiku-5-5", "input_tokens": 10, "output_tokens": 5,
                         "cost_cents": 0.01, "latency_ms": 100})
    bus.append(events_stream(str(tenant.id)), event.to_json())

    def dies(*_args):
        raise SystemExit("worker killed while storing usage")

    monkeypatch.setattr(delivery, "record_usage", dies)
    worker = DeliveryWorker(bus, {"telegram": _telegram(telegram)},
                            lambda: [tenant.id], edit_interval=0.05)
    with database.connection_context(), pytest.raises(SystemExit):  # noqa: PT012 - until it dies
        for _ in range(200):
            worker.step(block=0.05)
    ledger = _ledger("e9")
    assert ledger.state != "delivered"  # so the redelivered final is not skipped
    monkeypatch.undo()
    _deliver(bus, telegram, tenant, "e9")
    assert _bot_texts(telegram) == ["Two euros."]
    with database.connection_context():
        assert [m.text for m in Message.select().where(Message.direction == "out")] == ["Two euros."]
        assert Usage.select().where(Usage.envelope_id == "e9").count() == 1


def _telegram(standin) -> TelegramAdapter:
    """The Telegram adapter as ``hermes serve`` builds it (``ControlTasks.adapters``)."""
    return TelegramAdapter(BotApiClient(standin.token, standin.base_url), on_overwrite=report_overwrite)
