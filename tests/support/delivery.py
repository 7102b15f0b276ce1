"""Delivery-worker tests (tests/control/test_delivery_worker.py, test_slack_delivery.py,
test_whatsapp_delivery.py): a fast SqliteBus, agent events published on it, and the worker
stepped until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from control.db import database
from control.models import ChatIdentity, Delivery, DeliveryState
from wire.protocol import Event, events_stream
from wire.sqlite_bus import SqliteBus


def delivery_bus(directory: Path) -> SqliteBus:
    """A SqliteBus in ``directory`` that redelivers after 0.5 s and polls every 10 ms, so a
    stepped worker sees events at once and a crashed read comes back quickly."""
    return SqliteBus(directory / "bus.db", visibility_timeout=0.5, poll_interval=0.01)


def publish(bus, tenant, message_id: str, seq: int, kind: str, text: str,
            usage: dict | None = None, *, channel: str, chat_id: str) -> None:
    """Append the agent's event ``seq`` of reply ``message_id`` to the tenant's events stream,
    linking ``chat_id`` to the tenant first (a reply goes only to a chat linked to its tenant:
    ``control.services.event_guard``)."""
    link_chat(tenant, channel, chat_id)
    event = Event(message_id=message_id, seq=seq, kind=kind, text=text, tenant=str(tenant.id),
                  channel=channel, chat_id=chat_id, usage=usage)
    bus.append(events_stream(str(tenant.id)), event.to_json())


def link_chat(tenant, channel: str, chat_id: str) -> None:
    """Link ``channel`` chat ``chat_id`` to ``tenant`` unless it is linked (web chats need no link)."""
    if channel == "web":
        return
    with database.connection_context():
        ChatIdentity.get_or_create(channel=channel, chat_id=chat_id, defaults={"tenant": tenant})


def run_until(worker, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Step ``worker`` (a ``DeliveryWorker``) until ``predicate()`` holds.

    Raises:
        AssertionError: not reached within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with database.connection_context():
        while time.monotonic() < deadline:
            worker.step(block=0.05)
            if predicate():
                return
    raise AssertionError("condition not reached before the deadline")


def delivered(message_id: str) -> Callable[[], bool]:
    """A predicate: the reply ``message_id`` has a ``delivered`` Delivery row."""
    def check() -> bool:
        row = Delivery.get_or_none(Delivery.envelope_id == message_id)
        return row is not None and row.state == DeliveryState.DELIVERED
    return check
