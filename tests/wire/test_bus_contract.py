"""The bus contract (wire/bus.py), run against SqliteBus and RedisBus alike."""

from __future__ import annotations

import json
import threading
import time

import pytest

from wire.redis_bus import RedisBus
from wire.sqlite_bus import SqliteBus

VISIBILITY = 0.3  # seconds
S1, S2 = "hermes:messages:t1", "hermes:messages:t2"


@pytest.fixture(params=["sqlite", "redis"])
def bus(request, tmp_path):
    """A fresh, empty bus of each kind with a short visibility timeout."""
    if request.param == "sqlite":
        instance = SqliteBus(tmp_path / "bus.db", visibility_timeout=VISIBILITY, poll_interval=0.01)
    else:
        server = request.getfixturevalue("redis_server")
        request.getfixturevalue("admin")  # empties the server
        instance = RedisBus.from_url(server.admin_url, visibility_timeout=VISIBILITY)
    yield instance
    instance.close()


def payloads(deliveries):
    return [d.payload for d in deliveries]


def read_until(bus, streams, group, consumer, timeout=5.0):
    """Read until something arrives or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = bus.read(streams, group, consumer, count=10, block=0.05)
        if got:
            return got
    return []


def test_appended_entries_are_read_in_order_then_acked_never_again(bus):
    ids = [bus.append(S1, f"m{i}") for i in range(3)]
    got = bus.read([S1], "agent", "c1")
    assert payloads(got) == ["m0", "m1", "m2"]
    assert [d.entry_id for d in got] == ids
    assert {(d.stream, d.attempts) for d in got} == {(S1, 1)}
    for d in got:
        bus.ack(S1, "agent", d.entry_id)
    assert bus.pending_count(S1, "agent") == 0
    assert bus.read([S1], "agent", "c1", block=VISIBILITY * 2) == []


def test_group_created_late_still_gets_earlier_entries(bus):
    bus.append(S1, "before")
    assert payloads(bus.read([S1], "late-group", "c1")) == ["before"]


def test_two_groups_consume_the_same_stream_independently(bus):
    bus.append(S1, "m0")
    first = bus.read([S1], "delivery", "c1")
    bus.ack(S1, "delivery", first[0].entry_id)
    assert payloads(bus.read([S1], "audit", "c1")) == ["m0"]
    assert bus.read([S1], "delivery", "c1") == []
    assert bus.pending_count(S1, "audit") == 1
    assert bus.pending_count(S1, "delivery") == 0


def test_unacked_entry_is_redelivered_after_visibility_timeout_with_attempts(bus):
    bus.append(S1, "m0")
    taken_at = time.monotonic()
    assert [d.attempts for d in bus.read([S1], "agent", "crashed")] == [1]
    assert bus.read([S1], "agent", "other") == []  # still invisible
    again = read_until(bus, [S1], "agent", "other")
    assert time.monotonic() - taken_at >= VISIBILITY * 0.9
    assert [(d.payload, d.attempts) for d in again] == [("m0", 2)]
    third = read_until(bus, [S1], "agent", "other")
    assert [d.attempts for d in third] == [3]
    bus.ack(S1, "agent", third[0].entry_id)
    assert bus.read([S1], "agent", "other", block=VISIBILITY * 2) == []


def test_idempotent_append_publishes_a_retried_envelope_once(bus):
    first = bus.append(S1, "envelope", idempotency_key="env-1")
    assert bus.append(S1, "envelope", idempotency_key="env-1") == first
    assert bus.length(S1) == 1
    other_stream = bus.append(S2, "envelope", idempotency_key="env-1")
    assert bus.length(S2) == 1 and other_stream
    assert payloads(bus.read([S1], "agent", "c1")) == ["envelope"]


def test_append_many_keeps_order_and_idempotency(bus):
    earlier = bus.append(S1, "a", idempotency_key="k-a")
    ids = bus.append_many(S1, ["a", "b", "c"], idempotency_keys=["k-a", "k-b", None])
    assert ids[0] == earlier
    assert bus.length(S1) == 3
    assert payloads(bus.read([S1], "agent", "c1")) == ["a", "b", "c"]
    assert bus.append_many(S1, ["d", "e"])[0] != bus.append_many(S1, ["f"])[0]


def test_dead_letter_moves_the_entry_aside_and_acks_it(bus):
    bus.append(S1, "poison")
    delivery = bus.read([S1], "agent", "c1")[0]
    bus.dead_letter(delivery, "agent", "handler failed 5 times")
    assert bus.pending_count(S1, "agent") == 0
    record = json.loads(bus.read([f"{S1}:dead"], "ops", "c1")[0].payload)
    assert record["payload"] == "poison"
    assert record["reason"] == "handler failed 5 times"
    assert record["entry_id"] == delivery.entry_id and record["attempts"] == 1
    assert bus.read([S1], "agent", "c1", block=VISIBILITY * 2) == []


def test_dead_letters_are_listed_ranged_and_removed_one_by_one(bus):
    for stream in (S2, S1):
        bus.append(stream, json.dumps({"n": stream}))
        bus.dead_letter(bus.read([stream], "agent", "c1")[0], "agent", "bad")
    bus.append(S1, "{}")  # a live entry: its stream is no dead-letter stream
    assert bus.dead_letter_streams() == [f"{S1}:dead", f"{S2}:dead"]
    (entry_id, raw), = bus.entries(f"{S1}:dead")
    assert json.loads(json.loads(raw)["payload"]) == {"n": S1}
    assert bus.entries(S1, count=1)[0][1] == json.dumps({"n": S1})  # no group involved
    assert bus.remove(f"{S1}:dead", entry_id) is True
    assert bus.remove(f"{S1}:dead", entry_id) is False
    assert bus.remove(f"{S1}:dead", "not-an-id") is False
    assert bus.dead_letter_streams() == [f"{S2}:dead"]


def test_count_since_counts_only_entries_appended_from_that_time(bus):
    bus.append(S1, "old")
    cut = time.time()
    wait_past = cut + 0.01
    while time.time() < wait_past:  # the next entry gets a later millisecond than the cut
        time.sleep(0.002)
    bus.append(S1, "new")
    bus.append(S2, "other stream")
    assert bus.count_since(S1, cut + 0.005) == 1
    assert bus.count_since(S1, cut - 60) == 2
    assert bus.count_since(S1, time.time() + 60) == 0
    assert bus.count_since("hermes:messages:none", 0) == 0


def test_delete_stream_forgets_entries_dead_letters_keys_and_groups_of_that_stream_only(bus):
    bus.append(S1, "secret", idempotency_key="k1")
    bus.append(S2, "other", idempotency_key="k1")
    bus.dead_letter(bus.read([S1], "agent", "c1")[0], "agent", "bad")
    bus.append(S1, "pending secret")
    bus.read([S1], "agent", "c1")
    bus.delete_stream(S1)
    bus.delete_stream(S1)  # idempotent
    assert (bus.length(S1), bus.length(f"{S1}:dead"), bus.pending_count(S1, "agent")) == (0, 0, 0)
    assert bus.read([S1], "agent", "c1", block=VISIBILITY * 2) == []
    bus.append(S1, "secret", idempotency_key="k1")  # the key was forgotten with the stream
    assert payloads(bus.read([S1], "agent", "c1")) == ["secret"]
    assert payloads(bus.read([S2], "agent", "c1")) == ["other"]


def test_pending_count_tracks_read_but_unacked_entries(bus):
    assert bus.pending_count(S1, "agent") == 0
    bus.append_many(S1, ["a", "b", "c"])
    assert bus.pending_count(S1, "agent") == 0
    got = bus.read([S1], "agent", "c1", count=2)
    assert bus.pending_count(S1, "agent") == 2
    bus.ack_many(S1, "agent", [d.entry_id for d in got])
    assert bus.pending_count(S1, "agent") == 0
    assert bus.length(S1) == 3


def test_blocking_read_wakes_when_an_entry_arrives(bus):
    bus.read([S1], "agent", "c1")  # group exists, stream empty
    timer = threading.Timer(0.2, bus.append, args=(S1, "late"))
    started = time.monotonic()
    timer.start()
    try:
        got = bus.read([S1], "agent", "c1", block=10.0)
    finally:
        timer.join()
    assert payloads(got) == ["late"]
    assert time.monotonic() - started < 5.0  # woke on the append, not at the end of the block


def test_blocking_read_with_nothing_to_read_waits_then_returns_empty(bus):
    started = time.monotonic()
    assert bus.read([S1], "agent", "c1", block=0.3) == []
    assert time.monotonic() - started >= 0.25


def test_one_read_takes_entries_of_several_streams(bus):
    bus.append(S1, "for-t1")
    bus.append(S2, "for-t2")
    got = bus.read([S1, S2], "delivery", "c1")
    assert sorted((d.stream, d.payload) for d in got) == [(S1, "for-t1"), (S2, "for-t2")]
    for d in got:
        bus.ack(d.stream, "delivery", d.entry_id)
    assert bus.pending_count(S1, "delivery") == bus.pending_count(S2, "delivery") == 0


def test_count_bounds_each_read_and_order_is_kept_across_reads(bus):
    bus.append_many(S1, [f"m{i:02d}" for i in range(25)])
    seen = []
    while batch := bus.read([S1], "agent", "c1", count=7):
        assert len(batch) <= 7
        seen += payloads(batch)
        bus.ack_many(S1, "agent", [d.entry_id for d in batch])
    assert seen == [f"m{i:02d}" for i in range(25)]


def test_concurrent_consumers_of_one_group_never_share_an_entry(bus):
    bus.visibility_timeout = 30.0  # a slow thread must not see its entry redelivered here
    bus.append_many(S1, [f"m{i}" for i in range(60)])
    taken: list[str] = []
    lock = threading.Lock()

    def consume(name):
        while batch := bus.read([S1], "agent", name, count=5):
            with lock:
                taken.extend(payloads(batch))
            bus.ack_many(S1, "agent", [d.entry_id for d in batch])

    workers = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(taken) == sorted(f"m{i}" for i in range(60))
