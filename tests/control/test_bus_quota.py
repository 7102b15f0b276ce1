"""A tenant cannot fill the shared Redis (issue #19, finding 3): its memory on the bus is held to
its plan's quota from the control side (``control/services/bus_quota.py``).

Real parts: a private ``redis-server`` (an aclfile, ``proto-max-bulk-len`` as roles/redis sets
it), each tenant's agent on its own ACL user as provisioning hands it out, the control plane's
database and its admin bus.
"""

from __future__ import annotations

import json

import pytest
import redis

from control.db import database
from control.models import AttentionItem, Machine, Tenant, utcnow
from control.services import bus_quota, provisioning
from control.settings import Settings
from wire.errors import BusAuthError
from wire.protocol import DELIVERY_GROUP, events_stream
from wire.redis_bus import RedisBus

QUOTA_MIB = 4
FIELD = "x" * 900_000  # just under proto-max-bulk-len (1 MiB): every argument is legal


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def settings(tmp_path, database_url, private_redis_url):
    """The control plane on the Redis bus as its admin, light tenants held to 4 MiB."""
    return Settings(data_dir=str(tmp_path / "data"), database_url=database_url,
                    bus_url=private_redis_url, bus_quota_mb={"light": QUOTA_MIB, "heavy": 64})


class Agent:
    """A light tenant with a ready machine and its agent's bus (its own ACL user) and raw client."""

    def __init__(self, settings: Settings, email: str):
        with database.connection_context():
            row = Tenant.create(email=email, plan="light", status="active")
            Machine.create(tenant=row, plan="light", state="ready", ready_at=utcnow(), detail="up")
        self.id = str(row.id)
        url = provisioning.tenant_bus_url(settings.bus_url, self.id)
        self.bus = RedisBus.from_url(url)
        self.raw = redis.Redis.from_url(url, decode_responses=True)
        self.events = events_stream(self.id)

    def emit(self, text: str = "hi") -> str:
        event = {"v": 1, "type": "event", "message_id": "m", "seq": 1, "kind": "final",
                 "text": text, "tenant": self.id, "channel": "telegram", "chat_id": "1"}
        return self.bus.append(self.events, json.dumps(event))

    def close(self) -> None:
        self.bus.close()
        self.raw.close()


@pytest.fixture
def agents(settings, runtime):
    a, b = Agent(settings, "ada@example.com"), Agent(settings, "mallory@example.com")
    yield a, b
    a.close()
    b.close()


def consume(runtime, *agents: Agent) -> int:
    """The delivery worker's part: read and acknowledge everything on the agents' streams."""
    streams = [agent.events for agent in agents]
    taken = 0
    while deliveries := runtime.bus.read(streams, DELIVERY_GROUP, "control", count=100):
        for delivery in deliveries:
            runtime.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)
        taken += len(deliveries)
    return taken


def enforce(runtime) -> bus_quota.QuotaReport:
    with database.connection_context():
        report = bus_quota.run_from_settings(runtime.settings)
    assert report is not None
    return report


def open_items(tenant: str) -> list[AttentionItem]:
    with database.connection_context():
        return list(AttentionItem.select().where(
            (AttentionItem.kind == "bus_quota_exceeded") & (AttentionItem.subject == tenant)))


def test_acknowledged_entries_are_trimmed_before_anyone_is_suspended(runtime, agents):
    a, b = agents
    for _ in range(12):  # 12 entries of 400 KB: ~4.6 MiB, over the 4 MiB quota
        b.emit("y" * 400_000)
    consume(runtime, a, b)

    report = enforce(runtime)

    assert report.trimmed[b.id] >= 1
    assert report.usage[b.id] < QUOTA_MIB * bus_quota.MIB
    assert report.suspended == [] and open_items(b.id) == []
    b.emit()  # still writes


def test_a_tenant_over_its_quota_stops_writing_until_its_events_are_consumed(runtime, agents,
                                                                            client):
    a, b = agents
    # One XADD of 8 fields of 900 KB: every argument under proto-max-bulk-len, ~7 MB in all.
    b.raw.xadd(b.events, {"payload": "{}", **{f"f{i}": FIELD for i in range(8)}})
    a.emit("before")

    assert runtime.tasks._enforce_bus_quota() == {"suspended": [b.id], "resumed": []}

    # Nothing B wrote was acknowledged: nothing to trim, B is refused, A is not.
    with pytest.raises(BusAuthError):
        b.emit()
    with pytest.raises(redis.exceptions.NoPermissionError):
        b.raw.xadd(b.events, {"payload": FIELD})
    with pytest.raises(redis.exceptions.NoPermissionError):
        b.raw.set(f"{b.events}:idem:k", FIELD)
    a.emit("after")
    assert enforce(runtime).suspended == []  # still over: stays suspended, no second item
    [item] = open_items(b.id)
    assert item.resolved_at is None and "NOPERM" in item.detail
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "hermes_bus_quota_suspensions_total 1.0" in metrics
    assert "hermes_bus_quota_suspended 1.0" in metrics

    # The control plane still reads both streams; once B's entries are consumed they are trimmed
    # and B writes again.
    assert consume(runtime, a, b) == 3
    report = enforce(runtime)
    assert report.resumed == [b.id] and report.trimmed[b.id] == 1
    b.emit("back")
    [item] = open_items(b.id)
    assert item.resolved_at is not None
    assert "hermes_bus_quota_suspended 0.0" in client.get("/metrics").get_data(as_text=True)


def test_a_suspended_tenant_resumes_only_under_80_percent(runtime, agents):
    _, b = agents
    b.raw.xadd(b.events, {"payload": "{}", **{f"f{i}": FIELD for i in range(5)}})  # ~4.3 MiB
    assert enforce(runtime).suspended == [b.id]
    # Dead letters are never trimmed here: ~3.4 MiB of them (over 80 % of 4 MiB) keep B out even
    # after its events were consumed.
    admin = redis.Redis.from_url(runtime.settings.bus_url)
    admin.xadd(f"{b.events}:dead", {f"f{i}": FIELD for i in range(4)})
    admin.close()
    consume(runtime, b)
    report = enforce(runtime)
    assert report.resumed == [] and report.usage[b.id] > 0.8 * QUOTA_MIB * bus_quota.MIB
    with pytest.raises(BusAuthError):
        b.emit()


def test_the_sqlite_bus_has_no_quota_to_enforce(tmp_path, database_url):
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=database_url)
    assert bus_quota.run_from_settings(settings) is None
