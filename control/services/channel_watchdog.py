"""Per-channel watchdog: is each chat platform still hearing and answering our users?

The failure this catches is the one peers report most: a channel that went deaf while every
process looks healthy.  A channel is *deaf* when

* its Gateway session (Discord DMs, ``hermes discord gateway``) says it is disconnected, or has
  said nothing for ``gateway_stale`` seconds (the client reports on every heartbeat
  acknowledgement, about every 41 s on Discord); or
* replies are pending (a ``Delivery`` still ``sending``, created between ``PENDING_WINDOW`` and
  ``deaf_after`` seconds ago) and no reply on that channel was delivered for ``deaf_after``
  seconds: the platform has not confirmed a message id for that long.

Limits: a single reply that streams for longer than ``deaf_after`` with no other delivery on its
channel counts as pending; a reply refused for good stays ``sending`` and counts for
``PENDING_WINDOW`` at most.  The ``web`` channel has no platform and is not watched.

``check`` reads (the ``/metrics`` scrape exports ``hermes_channel_healthy{channel}``);
``watch`` (a Huey periodic task) also raises an attention item ``channel_deaf`` per deaf channel
and resolves it when the channel recovers.  Runbook: ``runbooks/channel-deaf.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import fn

from control.channels import web as web_channel
from control.models import AttentionItem, Delivery, DeliveryState, GatewayState, utcnow
from control.services.attention import raise_attention

log = logging.getLogger(__name__)

DEAF_AFTER = 300  # seconds without a delivery while replies are pending.
GATEWAY_STALE = 180  # seconds without a Gateway report (about 4 Discord heartbeats).
PENDING_WINDOW = 3600  # seconds: an older undelivered reply no longer counts as pending.
WEB_CHANNEL = web_channel.CHANNEL  # no platform to watch


@dataclass(frozen=True)
class ChannelHealth:
    """One channel's verdict: ``healthy`` and, when not, ``reason`` (for the attention item)."""

    channel: str
    healthy: bool
    reason: str = ""


def check(now: datetime | None = None, deaf_after: float = DEAF_AFTER,
          gateway_stale: float = GATEWAY_STALE) -> list[ChannelHealth]:
    """Return the health of every channel that has replies or a Gateway, sorted by name.

    Args:
        now: naive UTC time (default: now).
        deaf_after: seconds (module docstring).
        gateway_stale: seconds (module docstring).
    """
    now = now or utcnow()
    verdicts: dict[str, ChannelHealth] = {}
    for channel in Delivery.select(Delivery.channel).where(Delivery.channel != WEB_CHANNEL).distinct():
        verdicts[channel.channel] = _delivery_health(channel.channel, now, deaf_after)
    for gateway in GatewayState.select():
        silent = (now - gateway.seen_at).total_seconds()
        if not gateway.connected:
            verdicts[gateway.channel] = ChannelHealth(gateway.channel, False, "gateway disconnected")
        elif silent > gateway_stale:
            verdicts[gateway.channel] = ChannelHealth(
                gateway.channel, False, f"gateway silent for {silent:.0f} s")
        else:
            verdicts.setdefault(gateway.channel, ChannelHealth(gateway.channel, True))
    return [verdicts[name] for name in sorted(verdicts)]


def _delivery_health(channel: str, now: datetime, deaf_after: float) -> ChannelHealth:
    threshold = now - timedelta(seconds=deaf_after)
    pending = Delivery.select().where(
        (Delivery.channel == channel) & (Delivery.state == DeliveryState.SENDING.value)
        & (Delivery.created_at <= threshold)
        & (Delivery.created_at >= now - timedelta(seconds=PENDING_WINDOW))).count()
    if not pending:
        return ChannelHealth(channel, True)
    last = Delivery.select(fn.MAX(Delivery.delivered_at)).where(Delivery.channel == channel).scalar()
    if last is not None and _naive(last) > threshold:
        return ChannelHealth(channel, True)
    since = f"since {_naive(last):%Y-%m-%d %H:%M:%S} UTC" if last else "ever"
    return ChannelHealth(channel, False, f"{pending} replies pending, none delivered {since}")


def _naive(value) -> datetime:
    """SQLite returns stored datetimes as text; Postgres as datetimes."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def watch(now: datetime | None = None, deaf_after: float = DEAF_AFTER,
          gateway_stale: float = GATEWAY_STALE) -> list[ChannelHealth]:
    """``check``, then raise ``channel_deaf`` for each deaf channel and resolve the items of
    channels that recovered.  Returns the verdicts."""
    verdicts = check(now, deaf_after, gateway_stale)
    for verdict in verdicts:
        if not verdict.healthy:
            raise_attention("channel_deaf", verdict.channel,
                            f"{verdict.channel}: {verdict.reason}; see runbooks/channel-deaf.md")
        else:
            resolved = (AttentionItem.update(resolved_at=utcnow())
                        .where((AttentionItem.kind == "channel_deaf")
                               & (AttentionItem.subject == verdict.channel)
                               & AttentionItem.resolved_at.is_null()).execute())
            if resolved:
                log.info("channel %s hears again; attention resolved", verdict.channel)
    return verdicts


def report_gateway(channel: str, connected: bool) -> None:
    """Record that ``channel``'s Gateway session is (dis)connected, now (the Gateway process)."""
    GatewayState.insert(channel=channel, connected=connected, seen_at=utcnow()).on_conflict(
        conflict_target=[GatewayState.channel],
        update={GatewayState.connected: connected, GatewayState.seen_at: utcnow()}).execute()


class ChannelHealthCollector:
    """Prometheus collector: ``hermes_channel_healthy{channel}`` (1 healthy, 0 deaf) at scrape time.

    Args:
        runtime: the ``control.runtime.Runtime`` (its database).
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        """Yield the gauge family."""
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("hermes_channel_healthy",
                                   "1 when the chat channel hears and delivers, 0 when deaf",
                                   labels=["channel"])
        with self.runtime.db.connection_context():
            for verdict in check():
                family.add_metric([verdict.channel], 1.0 if verdict.healthy else 0.0)
        yield family
