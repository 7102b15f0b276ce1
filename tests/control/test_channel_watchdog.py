"""The channel watchdog: a deaf channel shows in /metrics and as an attention item, then recovers."""

from __future__ import annotations

from datetime import timedelta

from control.db import database
from control.models import AttentionItem, Delivery, utcnow
from control.services import channel_watchdog


def _healthy(client) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    values = {}
    for line in text.splitlines():
        if line.startswith("hermes_channel_healthy{"):
            labels, value = line.rsplit(" ", 1)
            values[labels.split('"')[1]] = float(value)
    return values


def _reply(tenant, envelope_id: str, channel: str, age_s: float, delivered_age_s: float | None = None):
    now = utcnow()
    Delivery.create(envelope_id=envelope_id, tenant=tenant, channel=channel, chat_id="c1",
                    created_at=now - timedelta(seconds=age_s),
                    state="delivered" if delivered_age_s is not None else "sending",
                    delivered_at=None if delivered_age_s is None else now - timedelta(seconds=delivered_age_s))


def test_stuck_replies_make_a_channel_deaf_until_one_is_delivered(client, tenant):
    with database.connection_context():
        _reply(tenant, "old-ok", "discord", 3000, delivered_age_s=2900)
        _reply(tenant, "stuck", "discord", 600)
        _reply(tenant, "fresh", "telegram", 10)  # pending, but not for long: not deaf
        _reply(tenant, "web-stuck", "web", 600)  # the dashboard chat has no platform
        verdicts = {v.channel: v for v in channel_watchdog.watch()}
        assert set(verdicts) == {"discord", "telegram"}
        assert not verdicts["discord"].healthy and "1 replies pending" in verdicts["discord"].reason
        assert verdicts["telegram"].healthy
        [item] = AttentionItem.select().where(AttentionItem.kind == "channel_deaf")
        assert item.subject == "discord" and item.resolved_at is None
        channel_watchdog.watch()  # still deaf: no second item
        assert AttentionItem.select().where(AttentionItem.kind == "channel_deaf").count() == 1
    assert _healthy(client) == {"discord": 0.0, "telegram": 1.0}

    with database.connection_context():
        _reply(tenant, "through", "discord", 20, delivered_age_s=5)
        channel_watchdog.watch()
        assert AttentionItem.get(AttentionItem.kind == "channel_deaf").resolved_at is not None
    assert _healthy(client)["discord"] == 1.0


def test_a_disconnected_or_silent_gateway_is_deaf(client, runtime, tenant):
    with database.connection_context():
        channel_watchdog.report_gateway("discord", True)
        assert channel_watchdog.check() == [channel_watchdog.ChannelHealth("discord", True)]
        later = utcnow() + timedelta(seconds=channel_watchdog.GATEWAY_STALE + 1)
        [silent] = channel_watchdog.check(now=later)
        assert not silent.healthy and "silent" in silent.reason
        channel_watchdog.report_gateway("discord", False)
    assert runtime.tasks.watch_channels.call_local() == {"discord": False}  # the periodic task
    with database.connection_context():
        assert AttentionItem.get(AttentionItem.kind == "channel_deaf").detail.startswith(
            "discord: gateway disconnected")
    assert _healthy(client) == {"discord": 0.0}
