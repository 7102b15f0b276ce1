"""RedisBus under faults, against real redis-server processes on loopback."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from wire.errors import BusBackpressure, BusUnavailable
from wire.redis_bus import RedisBus

STREAM = "hermes:messages:t1"


def append_until_accepted(bus, payload, key, timeout=20.0):
    """Retry like a webhook sender does after a 503, until the bus accepts the entry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bus.append(STREAM, payload, idempotency_key=key)
        except BusUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Consumer(threading.Thread):
    """A consumer loop as the agent runs it: read, take, ack; on BusUnavailable wait, retry."""

    def __init__(self, bus):
        super().__init__(daemon=True)
        self.bus, self.seen, self.outages = bus, set(), 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                batch = self.bus.read([STREAM], "agent", "vm", count=50, block=0.2)
                self.seen.update(d.payload for d in batch)
                self.bus.ack_many(STREAM, "agent", [d.entry_id for d in batch])
            except BusUnavailable:
                self.outages += 1
                time.sleep(0.05)

    def wait_for(self, expected: set, timeout=20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not expected <= self.seen:
            time.sleep(0.05)
        return expected <= self.seen


def test_crash_and_restart_with_aof_loses_no_appended_entry(redis_server_factory):
    server = redis_server_factory(appendonly=True)
    producer = RedisBus.from_url(server.admin_url, socket_timeout=1.0)
    consumer = Consumer(RedisBus.from_url(server.admin_url, visibility_timeout=0.5,
                                          socket_timeout=1.0))
    consumer.start()
    expected = {f"m{i}" for i in range(300)}
    try:
        for i in range(150):
            append_until_accepted(producer, f"m{i}", key=f"env-{i}")
        server.stop(signal.SIGKILL)  # a crash: only what AOF fsynced survives
        with pytest.raises(BusUnavailable):
            producer.append(STREAM, "m150", idempotency_key="env-150")
        restart = threading.Timer(0.5, server.start)
        restart.start()
        for i in range(150, 300):
            append_until_accepted(producer, f"m{i}", key=f"env-{i}")
        restart.join()
        assert consumer.wait_for(expected), sorted(expected - consumer.seen)[:10]
    finally:
        consumer.stopping.set()
        consumer.join(timeout=5)
    assert consumer.outages > 0  # the consumer did see the outage and reconnected
    assert producer.length(STREAM) == 300  # retried appends were not duplicated


def test_group_lost_with_a_non_persistent_restart_is_recreated(redis_server_factory):
    server = redis_server_factory()
    bus = RedisBus.from_url(server.admin_url)
    assert bus.read([STREAM], "agent", "vm") == []
    server.restart()
    bus.append(STREAM, "after restart")
    assert [d.payload for d in bus.read([STREAM], "agent", "vm")] == ["after restart"]


def test_slow_consumer_gets_backpressure_instead_of_losing_entries(redis_server_factory):
    server = redis_server_factory(config={"stream-node-max-entries": 10})
    bus = RedisBus.from_url(server.admin_url, retention=100, max_backlog=50)
    bus.read([STREAM], "agent", "vm")  # the agent's group exists, but it is slow
    accepted = []
    with pytest.raises(BusBackpressure, match="not yet acknowledged"):  # noqa: PT012 - until full
        for i in range(200):
            bus.append(STREAM, f"m{i}")
            accepted.append(f"m{i}")
    assert len(accepted) == 50
    taken = bus.read([STREAM], "agent", "vm", count=20)
    with pytest.raises(BusBackpressure):
        bus.append(STREAM, "still too early")  # read but unacknowledged still counts
    bus.ack_many(STREAM, "agent", [d.entry_id for d in taken])
    for i in range(50, 70):
        bus.append(STREAM, f"m{i}")
        accepted.append(f"m{i}")
    delivered = [d.payload for d in taken]
    while batch := bus.read([STREAM], "agent", "vm", count=25):
        delivered += [d.payload for d in batch]
        bus.ack_many(STREAM, "agent", [d.entry_id for d in batch])
    assert delivered == accepted


def test_stream_without_any_consumer_group_is_bounded_too(redis_server_factory):
    server = redis_server_factory()
    bus = RedisBus.from_url(server.admin_url, retention=100, max_backlog=30)
    assert len(bus.append_many(STREAM, [f"m{i}" for i in range(30)])) == 30
    with pytest.raises(BusBackpressure):
        bus.append_many(STREAM, ["one too many"])
    assert bus.length(STREAM) == 30


def test_keeping_up_consumer_keeps_the_stream_near_retention(redis_server_factory):
    server = redis_server_factory(config={"stream-node-max-entries": 10})
    bus = RedisBus.from_url(server.admin_url, retention=100)
    longest = 0
    for batch_number in range(50):
        bus.append_many(STREAM, [f"m{batch_number}-{i}" for i in range(20)])
        got = bus.read([STREAM], "agent", "vm", count=20)
        assert len(got) == 20
        bus.ack_many(STREAM, "agent", [d.entry_id for d in got])
        longest = max(longest, bus.length(STREAM))
    assert 100 <= longest <= 100 + 10  # MAXLEN ~ trims whole nodes of 10 entries


def test_append_to_a_stopped_redis_raises_and_never_reports_success(redis_server_factory):
    server = redis_server_factory()
    bus = RedisBus.from_url(server.admin_url, socket_timeout=0.5)
    server.stop()
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match="unavailable"):
        bus.append(STREAM, "lost?", idempotency_key="env-1")
    assert time.monotonic() - started < 5.0
    with pytest.raises(BusUnavailable):
        RedisBus.from_url(server.admin_url)


def test_append_to_a_frozen_redis_times_out_then_a_retry_is_safe(redis_server_factory):
    server = redis_server_factory()
    bus = RedisBus.from_url(server.admin_url, socket_timeout=0.5)
    server.pause()
    started = time.monotonic()
    try:
        with pytest.raises(BusUnavailable, match=r"(?i)timeout"):
            bus.append(STREAM, "envelope", idempotency_key="env-1")
        assert time.monotonic() - started < 5.0  # bounded by the socket timeout, not forever
    finally:
        server.resume()
    first = append_until_accepted(bus, "envelope", key="env-1")
    assert append_until_accepted(bus, "envelope", key="env-1") == first
    assert bus.length(STREAM) == 1  # the timed-out attempt and the retry made one entry


def test_malformed_entry_is_dead_lettered_and_the_consumer_carries_on(redis_server, admin):
    bus = RedisBus.from_url(redis_server.admin_url)
    admin.xadd(STREAM, {"text": "no payload field"})
    bus.append(STREAM, "good")
    assert [d.payload for d in bus.read([STREAM], "agent", "vm")] == ["good"]
    assert bus.pending_count(STREAM, "agent") == 1
    dead = bus.read([f"{STREAM}:dead"], "ops", "op")
    record = json.loads(dead[0].payload)
    assert record["reason"] == "malformed entry: no payload field"
    assert json.loads(record["payload"]) == {"text": "no payload field"}
