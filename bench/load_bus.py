"""Load scenario 3 (seed 000 §5.3, issue 22): 1,000 messages/s through Redis.

Run through ``bench/load.py --scenario 3``.  On a private ``redis-server`` (no persistence,
``bench_support.PrivateRedis``) and ``RedisBus`` (the production bus):

* ingress: ``PRODUCERS`` threads append envelopes one at a time, each with its idempotency key
  (what each accepted webhook does), open loop at ``rate`` per second spread round robin over
  ``tenants`` messages streams, for ``seconds``;
* agents: ``AGENTS`` threads, each owning a share of the tenants, read their envelopes in group
  ``agent``, append one ``final`` event per envelope to the tenant's events stream (keyed
  ``<id>:0``, as the agent does) and acknowledge;
* delivery: one thread reads every events stream in group ``delivery`` and acknowledges, as the
  delivery worker's consumer does (the channel send itself is not part of this scenario: the
  webhook and delivery benches measure those).

Figures: ``achieved_rate`` (envelopes appended per second over the run), ``delivered_rate``,
``lag_p50_ms``/``lag_p99_ms`` from an envelope's append to its answer being read by the
delivery consumer, ``lost`` (appended, never delivered within 10 s of the end) and
``duplicates`` (an answer delivered twice).  ``passed``: the achieved and delivered rates are at
least 99 % of the offered rate and nothing was lost or duplicated.

Not covered: the webhook ingress itself at 1,000/s (one control host on these 2 cores saturates
far below that: see the webhook benches in the README), so the ingress here is the bus append
the webhook handler makes.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

from bench_support import PrivateRedis, percentile

from wire.protocol import (
    AGENT_GROUP,
    DELIVERY_GROUP,
    Envelope,
    Event,
    events_stream,
    messages_stream,
)
from wire.redis_bus import RedisBus

PRODUCERS = 8  # threads appending in this process
AGENTS = 4  # agent processes (each agent runs on its own VM in production)
DRAIN_TIMEOUT = 10.0  # seconds after the last append for every answer to be delivered


def _bus(url: str) -> RedisBus:
    return RedisBus.from_url(url, retention=100_000)


class Run:
    """The producers' state: when each envelope was appended."""

    def __init__(self):
        self.lock = threading.Lock()
        self.appended: dict[str, float] = {}
        self.behind = 0  # appends that started later than scheduled by more than 1 s


def _produce(url: str, run: Run, tenants: list[str], rate: float, total: int, first: int,
             start: float) -> None:
    bus = _bus(url)
    for k in range(first, total, PRODUCERS):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            run.behind += 1
        tenant = tenants[k % len(tenants)]
        envelope = Envelope(id=uuid.uuid4().hex, tenant=tenant, channel="telegram", chat_id=str(k),
                            sender_id=str(k), text="What is on my calendar tomorrow morning?")
        with run.lock:
            run.appended[envelope.id] = time.monotonic()
        bus.append(messages_stream(tenant), envelope.to_json(), idempotency_key=envelope.id)
    bus.close()


def _agent(url: str, tenants: list[str], name: str, stopping) -> None:
    """An agent process: answer every envelope of ``tenants`` with one ``final`` event."""
    bus = _bus(url)
    streams = [messages_stream(t) for t in tenants]
    while not stopping.is_set():
        for delivery in bus.read(streams, AGENT_GROUP, name, count=200, block=0.05):
            envelope = Envelope.from_json(delivery.payload)
            event = Event(message_id=envelope.id, seq=0, kind="final", text="Nothing until noon.",
                          tenant=envelope.tenant, channel=envelope.channel, chat_id=envelope.chat_id)
            bus.append(events_stream(envelope.tenant), event.to_json(), idempotency_key=f"{envelope.id}:0")
            bus.ack(delivery.stream, AGENT_GROUP, delivery.entry_id)
    bus.close()


def _deliver(url: str, tenants: list[str], stopping, count, out) -> None:
    """The delivery consumer's process: read and ack every answer; put ``(when each message's
    answer was read, duplicates)`` on ``out`` once ``stopping`` is set."""
    bus = _bus(url)
    streams = [events_stream(t) for t in tenants]
    delivered: dict[str, float] = {}
    duplicates = 0
    while not stopping.is_set():
        deliveries = bus.read(streams, DELIVERY_GROUP, "delivery", count=500, block=0.05)
        now = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on the host
        by_stream: dict[str, list[str]] = {}
        for delivery in deliveries:
            message_id = Event.from_json(delivery.payload).message_id
            duplicates += message_id in delivered
            delivered.setdefault(message_id, now)
            by_stream.setdefault(delivery.stream, []).append(delivery.entry_id)
        for stream, ids in by_stream.items():
            bus.ack_many(stream, DELIVERY_GROUP, ids)
        count.value = len(delivered)
    bus.close()
    out.put((delivered, duplicates))


def run(rate: float, seconds: float, tenant_count: int) -> dict:
    """Run the scenario; return its result record (see ``load.py`` for the shared keys)."""
    redis = PrivateRedis()
    state = Run()
    tenants = [str(1000 + i) for i in range(tenant_count)]
    total = int(rate * seconds)
    context = multiprocessing.get_context("spawn")
    stopping, count, out = context.Event(), context.Value("i", 0), context.Queue()
    try:
        consumers = [context.Process(target=_agent, args=(redis.admin_url, tenants[i::AGENTS],
                                                          f"agent-{i}", stopping), daemon=True)
                     for i in range(AGENTS)]
        consumers.append(context.Process(target=_deliver, args=(redis.admin_url, tenants, stopping,
                                                                count, out), daemon=True))
        for process in consumers:
            process.start()
        time.sleep(2.0)  # spawned interpreters import the bus before the clock starts
        start = time.monotonic() + 0.5
        producers = [threading.Thread(target=_produce, args=(redis.admin_url, state, tenants, rate,
                                                             total, i, start), daemon=True)
                     for i in range(PRODUCERS)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        appended_for = time.monotonic() - start
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while count.value < total and time.monotonic() < deadline:
            time.sleep(0.05)
        stopping.set()
        delivered, duplicates = out.get(timeout=30)
        for process in consumers:
            process.join(10)
        delivered_for = max(delivered.values(), default=start) - start
    finally:
        redis.close()
    lags = [(delivered[m] - at) * 1000 for m, at in state.appended.items() if m in delivered]
    achieved = total / appended_for
    delivered_rate = len(delivered) / delivered_for if delivered_for > 0 else 0.0
    lost = total - len(delivered)
    return {
        "scenario": 3, "target": f">= {rate:g} messages/s through Redis, none lost or duplicated",
        "value": round(min(achieved, delivered_rate)), "unit": "messages/s",
        "passed": min(achieved, delivered_rate) >= 0.99 * rate and lost == 0 and duplicates == 0,
        "offered_rate": rate, "achieved_rate": round(achieved), "delivered_rate": round(delivered_rate),
        "messages": total, "tenants": tenant_count, "lost": lost, "duplicates": duplicates,
        "late_appends": state.behind, "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p99_ms": round(percentile(lags, 99), 1), "seconds": round(appended_for, 1),
    }
