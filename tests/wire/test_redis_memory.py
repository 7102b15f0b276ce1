"""A full Redis refuses bus writes and loses nothing (issue #9, defect 5).

The server runs with roles/redis's eviction policy (its defaults, as each inventory leaves or
overrides them) and a small ``maxmemory``.  Publishers fill it until the bus raises
``BusBackpressure``; every entry the bus reported as appended must then still reach the
consumer group.  An evicting policy (``allkeys-lru`` ...) never refuses, drops entries, and
fails these tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from control.services import bus_acl
from wire.errors import BusBackpressure
from wire.protocol import events_stream, messages_stream
from wire.redis_bus import RedisBus, connect

REPO = Path(__file__).resolve().parents[2]
MAXMEMORY = "4mb"
PAYLOAD_BYTES = 1000
MAX_APPENDS = 10_000  # 4 MB hold about 3,000 such entries; never loop forever
DEADLINE = 60.0  # seconds for filling Redis


def role_policies() -> dict[str, str]:
    """``{environment: maxmemory-policy}`` as roles/redis would render it for each inventory."""
    defaults = yaml.safe_load((REPO / "roles/redis/defaults/main.yml").read_text())
    policies = {}
    for group_vars in sorted(REPO.glob("inventories/*/group_vars/role_redis.yml")):
        overrides = yaml.safe_load(group_vars.read_text()) or {}
        env = group_vars.parents[1].name
        policies[env] = overrides.get("redis_maxmemory_policy",
                                      defaults["redis_maxmemory_policy"])
    policies["role defaults"] = defaults["redis_maxmemory_policy"]
    return policies


def fill_until_refused(bus: RedisBus, stream: str) -> tuple[dict[str, str], BusBackpressure]:
    """Append distinct payloads until the bus refuses one; return ``({id: payload}, error)``."""
    accepted: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE
    for n in range(MAX_APPENDS):
        payload = f'{{"n": {n}, "pad": "{"x" * PAYLOAD_BYTES}"}}'
        try:
            accepted[bus.append(stream, payload, idempotency_key=f"update-{n}")] = payload
        except BusBackpressure as exc:
            return accepted, exc
        assert time.monotonic() < deadline, f"Redis still accepting after {n} appends"
    pytest.fail(f"Redis accepted all {MAX_APPENDS} appends ({MAX_APPENDS * PAYLOAD_BYTES} bytes "
                f"in {MAXMEMORY}): its policy evicts instead of refusing")


def drain(bus: RedisBus, stream: str, group: str) -> dict[str, str]:
    """Read everything the group has not yet seen: ``{id: payload}``."""
    seen: dict[str, str] = {}
    while batch := bus.read([stream], group, "worker-1", count=500):
        for delivery in batch:
            assert delivery.entry_id not in seen, "an entry was delivered twice"
            seen[delivery.entry_id] = delivery.payload
    return seen


@pytest.fixture(params=sorted(role_policies().items()), ids=lambda item: item[0])
def full_server(request, redis_server_factory):
    _, policy = request.param
    return redis_server_factory(config={"maxmemory": MAXMEMORY, "maxmemory-policy": policy})


def test_full_redis_refuses_appends_and_keeps_every_accepted_message(full_server):
    bus = RedisBus.from_url(full_server.admin_url)
    stream = messages_stream("t1")
    try:
        assert bus.read([stream], "agent", "vm-1") == []  # the agent's group exists, caught up
        accepted, refusal = fill_until_refused(bus, stream)
        assert "maxmemory" in str(refusal) and "retry later" in str(refusal)
        assert len(accepted) > 100
        # Refused again while nothing is acknowledged, and nothing refused was written.
        with pytest.raises(BusBackpressure):
            bus.append(stream, '{"late": true}', idempotency_key="late")
        assert bus.length(stream) == len(accepted)
        # A platform retry of an update already accepted gets its entry id, not a refusal.
        first_id, first_payload = next(iter(accepted.items()))
        assert bus.append(stream, first_payload, idempotency_key="update-0") == first_id

        delivered = drain(bus, stream, "agent")
        assert delivered == accepted  # every accepted entry, with its payload; no other
    finally:
        bus.close()


def test_full_redis_accepts_again_once_consumers_acknowledge(full_server):
    bus = RedisBus.from_url(full_server.admin_url)
    stream = messages_stream("t1")
    try:
        bus.read([stream], "agent", "vm-1")
        accepted, _ = fill_until_refused(bus, stream)
        delivered = drain(bus, stream, "agent")
        bus.ack_many(stream, "agent", list(delivered))
        # The retried update (what Telegram sends after our 503) now goes through, once.
        retried = bus.append(stream, '{"retried": true}', idempotency_key="update-retried")
        assert bus.append(stream, '{"retried": true}', idempotency_key="update-retried") == retried
        assert [d.payload for d in bus.read([stream], "agent", "vm-1")] == ['{"retried": true}']
        assert bus.pending_count(stream, "agent") == 1
        # Only acknowledged entries were trimmed to make room.
        assert len(accepted) == len(delivered)
    finally:
        bus.close()


def test_tenant_publisher_gets_backpressure_when_redis_is_full(full_server):
    admin = connect(full_server.admin_url)
    url = bus_acl.grant(admin, "t2")
    admin.close()
    agent = RedisBus.from_url(url)
    control = RedisBus.from_url(full_server.admin_url)
    stream = events_stream("t2")
    try:
        assert control.read([stream], "delivery", "worker-1") == []
        accepted, refusal = fill_until_refused(agent, stream)
        assert "maxmemory" in str(refusal)
        assert drain(control, stream, "delivery") == accepted
    finally:
        agent.close()
        control.close()
