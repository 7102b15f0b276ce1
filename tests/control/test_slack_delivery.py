"""Slack replies through the real delivery worker: one message posted then updated, counted
delivered only with Slack's ``ts``; a 429's Retry-After honoured; a long reply split at 4,000."""

from __future__ import annotations

import time
from functools import partial

import pytest
from support.delivery import delivered, delivery_bus, publish, run_until

from control.channels.telegram import BotApiClient
from control.db import database
from control.models import Delivery
from control.services.delivery import DELIVERY_GROUP, DeliveryWorker
from control.services.secrets_box import box_from_settings
from control.services.slack_install import DatabaseInstallationStore, slack_adapter
from standins.slack_api import SlackApiStandin
from wire.protocol import events_stream

TEAM, TOKEN, DM = "T9TK3CUKW", "xoxb-delivery-test", "D024BE91L"
CHAT = f"{TEAM}:{DM}"


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def slack(settings, runtime):
    from slack_sdk.oauth.installation_store import Bot

    with SlackApiStandin() as api:
        api.add_token(TOKEN, TEAM)
        with database.connection_context():
            DatabaseInstallationStore(box_from_settings(settings)).save_bot(Bot(
                team_id=TEAM, bot_token=TOKEN, bot_id="B1", bot_user_id="U0KRQLJ9H",
                installed_at=time.time()))
        yield api


@pytest.fixture
def worker(tmp_path, settings, slack, tenant):
    bus = delivery_bus(tmp_path)
    adapter = slack_adapter(box_from_settings(settings), slack.base_url)
    telegram = BotApiClient("123456:TEST", "http://127.0.0.1:9")
    return DeliveryWorker(bus, telegram, lambda: [tenant.id], adapters={"slack": adapter},
                          edit_interval=0.2)


_publish = partial(publish, channel="slack", chat_id=CHAT)


def test_streamed_reply_is_posted_then_updated_and_recorded_with_its_ts(worker, slack, tenant):
    _publish(worker.bus, tenant, "s1", 1, "delta", "Hello")
    run_until(worker, lambda: slack.channel_messages(DM))
    _publish(worker.bus, tenant, "s1", 2, "final", "Hello, **world**")
    run_until(worker, delivered("s1"))
    [message] = slack.channel_messages(DM)
    assert message.history == ["Hello", "Hello, *world*"]
    with database.connection_context():
        row = Delivery.get(Delivery.envelope_id == "s1")
        assert (row.channel, row.platform_message_id) == ("slack", message.ts)
    assert worker.bus.pending_count(events_stream(str(tenant.id)), DELIVERY_GROUP) == 0


def test_rate_limit_waits_retry_after_then_delivers_once(worker, slack, tenant):
    slack.rate_limit_next(1)
    _publish(worker.bus, tenant, "s2", 1, "final", "after the pause")
    run_until(worker, delivered("s2"))
    posts = slack.calls_for("chat.postMessage")
    assert len(posts) == 2 and posts[1].at - posts[0].at >= 0.95  # Retry-After: 1 second
    assert [m.text for m in slack.channel_messages(DM)] == ["after the pause"]


def test_long_reply_is_split_into_messages_of_at_most_4000_characters(worker, slack, tenant):
    text = "\n".join(f"paragraph {i}: " + "y" * 180 for i in range(50))  # about 9,800 characters
    _publish(worker.bus, tenant, "s3", 1, "final", text)
    run_until(worker, delivered("s3"))
    shown = [m.text for m in slack.channel_messages(DM)]
    assert len(shown) == 3 and all(len(t) <= 4000 for t in shown)
    assert "\n".join(shown) == text
