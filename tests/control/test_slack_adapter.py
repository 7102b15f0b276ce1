"""The Slack adapter against the Web API stand-in: posts and edits with the workspace's token,
threads, DMs, mrkdwn, splitting, and Slack's failures mapped to ChannelError."""

from __future__ import annotations

import pytest

from control.channels.base import ChannelError
from control.channels.slack import MAX_TEXT, SlackAdapter
from control.channels.slack_mrkdwn import to_mrkdwn
from standins.slack_api import SlackApiStandin

TEAM, TOKEN = "T9TK3CUKW", "xoxb-test-token"


@pytest.fixture
def api():
    with SlackApiStandin() as standin:
        standin.add_token(TOKEN, TEAM)
        yield standin


@pytest.fixture
def adapter(api):
    adapter = SlackAdapter({TEAM: TOKEN}.get, api.base_url)
    yield adapter
    adapter.close()


def test_send_then_edit_shows_the_latest_text_in_one_message(adapter, api):
    ts = adapter.send(f"{TEAM}:D024BE91L", "Hel")
    adapter.edit(f"{TEAM}:D024BE91L", ts, "Hello **there**")
    adapter.edit(f"{TEAM}:D024BE91L", ts, "Hello **there**")  # unchanged: not an error
    [message] = api.channel_messages("D024BE91L")
    assert (message.ts, message.text, message.history) == (ts, "Hello *there*", ["Hel", "Hello *there*"])
    assert {c.token for c in api.calls} == {TOKEN}


def test_thread_and_dm_chat_ids(adapter, api):
    adapter.send(f"{TEAM}:C111:1595926230.009600", "in the thread")
    [threaded] = api.channel_messages("C111")
    assert threaded.thread_ts == "1595926230.009600"
    adapter.send(f"{TEAM}:@U2147483697", "in the DM")
    adapter.send(f"{TEAM}:@U2147483697", "again")
    assert len(api.calls_for("conversations.open")) == 1  # the DM channel is remembered
    dm_channel = api.calls_for("chat.postMessage")[-1].params["channel"]
    assert [m.text for m in api.channel_messages(dm_channel)] == ["in the DM", "again"]


def test_rate_limit_carries_retry_after(adapter, api):
    api.rate_limit_next(7)
    with pytest.raises(ChannelError) as caught:
        adapter.send(f"{TEAM}:D1", "hi")
    assert caught.value.rate_limited and caught.value.retry_after == 7.0
    assert api.channel_messages("D1") == []


def test_refusals_are_permanent_and_a_deleted_message_is_gone(adapter, api):
    api.fail_next("chat.postMessage", "channel_not_found")
    with pytest.raises(ChannelError) as refused:
        adapter.send(f"{TEAM}:C404", "hi")
    assert refused.value.permanent and refused.value.answered
    with pytest.raises(ChannelError) as gone:
        adapter.edit(f"{TEAM}:C1", "1.000001", "hi")
    assert gone.value.message_gone and not gone.value.permanent
    api.fail_next("chat.update", "internal_error")
    ts = adapter.send(f"{TEAM}:C1", "hi")
    with pytest.raises(ChannelError) as transient:
        adapter.edit(f"{TEAM}:C1", ts, "hello")
    assert transient.value.transient


def test_unreachable_or_not_installed_workspace(api):
    with pytest.raises(ChannelError) as missing:
        SlackAdapter({}.get, api.base_url).send(f"{TEAM}:C1", "hi")
    assert missing.value.permanent
    with pytest.raises(ChannelError) as unreachable:
        SlackAdapter({TEAM: TOKEN}.get, "http://127.0.0.1:9/api/", timeout=2).send(f"{TEAM}:C1", "hi")
    assert unreachable.value.status == 0 and unreachable.value.transient
    with pytest.raises(ChannelError):
        SlackAdapter({TEAM: TOKEN}.get, api.base_url).send("no-team-here", "hi")


def test_long_replies_split_at_the_readability_limit(adapter):
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(100))
    chunks = adapter.split(text)
    assert len(chunks) == 3 and all(len(c) <= MAX_TEXT == 4000 for c in chunks)
    assert "\n".join(chunks) == text


def test_markdown_becomes_mrkdwn():
    assert to_mrkdwn("**bold**, *it*, ~~no~~, [docs](https://x.io/a?b=1)") == (
        "*bold*, _it_, ~no~, <https://x.io/a?b=1|docs>")
    assert to_mrkdwn("## Plan\n- a < b & c") == "*Plan*\n• a &lt; b &amp; c"
    assert to_mrkdwn("`**kept**`") == "`**kept**`"
    table = to_mrkdwn("| a | b |\n|---|---|\n| 1 | 2 |")
    assert table == "```\n| a | b |\n| 1 | 2 |\n```"
