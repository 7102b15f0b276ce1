"""Slack replies through the real delivery worker: one message posted then updated, counted
delivered only with Slack's ``ts``; a 429's Retry-After honoured; a long reply split at 4,000;
a post whose answer was lost in a crash found in the history instead of posted twice."""

from __future__ import annotations

import time
from functools import partial

import pytest
from support.delivery import delivered, delivery_bus, publish, run_until

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
    return DeliveryWorker(bus, {"slack": adapter}, lambda: [tenant.id],
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


# Crash recovery: a worker died after Slack accepted chat.postMessage, before the ledger
# recorded its ts.  The state it leaves behind is built here as in test_delivery_faults.py:
# the post exists in the channel, the ledger holds only the send intent.

USER = "U2147483697"


def _asked(slack, tenant, envelope_id: str, question: str, channel: str = DM,
           chat: str = CHAT, thread_ts: str | None = None) -> str:
    """The user's message exists in Slack and in the conversation log; returns its ts."""
    from control.models import Message

    ts = slack.user_message(channel, USER, question, thread_ts).ts
    with database.connection_context():
        Message.create(tenant=tenant, envelope_id=envelope_id, direction="in", channel="slack",
                       chat_id=chat, text=question, platform_message_id=ts)
    return ts


def _crashed_post(worker, tenant, envelope_id: str, text: str, chat: str = CHAT,
                  reply_to: str | None = None, pending_after: str | None = None) -> str:
    """Post ``text`` as the worker's adapter would, then leave only the send intent behind;
    returns the ts of the post the ledger does not know."""
    ts = worker.adapters["slack"].send(chat, text)
    with database.connection_context():
        Delivery.create(envelope_id=envelope_id, tenant=tenant, channel="slack", chat_id=chat,
                        reply_to=reply_to, pending_text=text, pending_after=pending_after)
    return ts


def test_post_whose_answer_was_lost_is_found_instead_of_posted_twice(worker, slack, tenant):
    asked = _asked(slack, tenant, "s4", "what is the capital of France?")
    lost = _crashed_post(worker, tenant, "s4", "**Paris** is the capital.", reply_to=asked,
                         pending_after=asked)
    slack.user_message(DM, USER, "hello?")  # the user wrote again before the restart
    _publish(worker.bus, tenant, "s4", 1, "final", "**Paris** is the capital.")
    run_until(worker, delivered("s4"))
    assert [m.text for m in slack.channel_messages(DM)] == ["*Paris* is the capital."]
    assert len(slack.calls_for("chat.postMessage")) == 1
    [read] = slack.calls_for("conversations.history")
    assert (read.params["channel"], read.params["oldest"]) == (DM, asked)
    with database.connection_context():
        row = Delivery.get(Delivery.envelope_id == "s4")
    assert (row.platform_message_id, row.pending_text) == (lost, None)


def test_an_earlier_reply_with_the_same_text_is_not_taken_for_the_lost_post(worker, slack, tenant):
    _asked(slack, tenant, "s5", "ping")
    _publish(worker.bus, tenant, "s5", 1, "final", "pong")
    run_until(worker, delivered("s5"))
    second = _asked(slack, tenant, "s6", "ping")
    with database.connection_context():  # the crash came before the post: nothing was sent
        Delivery.create(envelope_id="s6", tenant=tenant, channel="slack", chat_id=CHAT,
                        reply_to=second, pending_text="pong", pending_after=second)
    _publish(worker.bus, tenant, "s6", 1, "final", "pong")
    run_until(worker, delivered("s6"))
    assert [m.text for m in slack.channel_messages(DM)] == ["pong", "pong"]  # one per question
    with database.connection_context():
        answers = [Delivery.get(Delivery.envelope_id == e).platform_message_id for e in ("s5", "s6")]
    assert answers == [m.ts for m in slack.channel_messages(DM)]


def test_lost_post_in_a_thread_is_found_with_conversations_replies(worker, slack, tenant):
    channel = "C0PUBLIC1"
    mention = slack.user_message(channel, USER, "<@U0KRQLJ9H> summarise the thread")
    chat = f"{TEAM}:{channel}:{mention.ts}"
    asked = _asked(slack, tenant, "s7", "and the action items?", channel, chat, mention.ts)
    lost = _crashed_post(worker, tenant, "s7", "Two action items.", chat, asked, asked)
    publish(worker.bus, tenant, "s7", 1, "final", "Two action items.", channel="slack", chat_id=chat)
    run_until(worker, delivered("s7"))
    assert [(m.text, m.thread_ts) for m in slack.channel_messages(channel)] == [
        ("Two action items.", mention.ts)]
    assert [c.params["ts"] for c in slack.calls_for("conversations.replies")] == [mention.ts]
    with database.connection_context():
        assert Delivery.get(Delivery.envelope_id == "s7").platform_message_id == lost


def test_slash_command_reply_with_no_known_ts_is_searched_from_the_ledger_time(worker, slack, tenant):
    """``/hermes`` answers in the DM: its trigger id is no ts, so the bound is ``created_at``."""
    chat = f"{TEAM}:@{USER}"
    lost = _crashed_post(worker, tenant, "s8", "Here is your summary.", chat,
                         reply_to="13345224609.738474920.8088930838d88f008e0")
    publish(worker.bus, tenant, "s8", 1, "final", "Here is your summary.", channel="slack",
            chat_id=chat)
    run_until(worker, delivered("s8"))
    dm = "D" + USER.lstrip("U")  # conversations.open's channel for the user
    assert [m.ts for m in slack.channel_messages(dm)] == [lost]
    [read] = slack.calls_for("conversations.history")
    assert float(read.params["oldest"]) < float(lost)


def test_history_the_token_may_not_read_posts_again_rather_than_fail(worker, slack, tenant):
    """The documented limit: without ``channels:history`` the lost post cannot be looked for."""
    asked = _asked(slack, tenant, "s9", "still there?")
    _crashed_post(worker, tenant, "s9", "Yes.", reply_to=asked, pending_after=asked)
    slack.fail_next("conversations.history", "missing_scope")
    _publish(worker.bus, tenant, "s9", 1, "final", "Yes.")
    run_until(worker, delivered("s9"))
    assert [m.text for m in slack.channel_messages(DM)] == ["Yes.", "Yes."]
