"""Load scenario 3 (seed 000 §5.3, issue 22): 1,000 messages/s through Redis, end to end.

Run through ``bench/load.py --scenario 3``.  Two measurements, each printed in the one line:

**The bus with its production consumers.**  On a private ``redis-server`` (no persistence,
``bench_support.PrivateRedis``), ``RedisBus`` (the production bus) and a throwaway PostgreSQL
control database (production's; ``bench_support.ThrowawayPostgres``) holding ``tenants`` active
tenants, each with a ready machine and ``CHATS_PER_TENANT`` linked Telegram chats:

* ingress: ``PRODUCERS`` threads append envelopes one at a time with their idempotency key (the
  bus append each accepted webhook makes), open loop at ``rate`` per second, round robin over
  the tenants' messages streams and their chats, for ``seconds``;
* agents: ``AGENTS`` stand-in processes, each owning a share of the tenants, read their
  envelopes in group ``agent``, append one ``final`` event per envelope to the tenant's events
  stream (keyed ``<id>:0``, as the agent does) and acknowledge;
* delivery: ``delivery_workers`` processes, each running the production ``DeliveryWorker``
  (event guard, ledger, conversation log, usage, ``TelegramAdapter``) as ``hermes worker``
  does with ``HERMES_DELIVERY_SHARD=i/delivery_workers`` (``in_shard``: one worker per tenant,
  so a reply's events never split between workers), its own consumer name
  (``consumer_name``) and ``concurrency`` send threads (``HERMES_DELIVERY_CONCURRENCY``),
  sending every reply with ``sendMessage`` to the Telegram Bot API stand-in, which runs in a
  process of its own and records each reply.

Figures: ``achieved_rate`` (envelopes appended per second), ``answered_rate`` (envelopes the
agents read and answered per second, up to the last answer), ``delivered_rate`` (replies the
stand-in received per second, over the run up to the last one), ``lag_p50_ms``/``lag_p99_ms``
from an envelope's append to its reply reaching the stand-in, ``undelivered`` (appended, no
reply within ``DRAIN_TIMEOUT`` s of the end: lost or still queued) and ``duplicates`` (a reply
sent twice).  ``passed``: achieved and delivered rates at least 99 % of the offered rate,
nothing undelivered or duplicated.  ``per_delivery_worker_rate`` is the delivered rate over the
worker count and ``delivery_workers_needed`` the offered rate over it, rounded up (on this
shared host: each worker process is one of many on 2 cores); ``load_average`` is the 1-minute
load when the run ended.

**The webhook ingress ceiling of one control host** (``ingress`` in the line): gunicorn with the
control role's worker model (gthread 2x8, ``bench_support.GunicornServer``) serving
``POST /webhooks/telegram`` on PostgreSQL and a private Redis, every request a linked chat's
text message (the whole ack path: secret check, ``WebhookEvent`` + ``Message`` transaction, bus
append), offered open loop at ``INGRESS_RATE``/s for ``INGRESS_SECONDS`` s from 48 threads in
this process (the generator shares the 2 cores).  That rate is above what the host answers, so
the answered rate is its ceiling; ``control_hosts_needed`` is the offered ``rate`` over it,
rounded up.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import threading
import time
import uuid

from bench_support import (
    PrivateRedis,
    ThrowawayPostgres,
    ack_figures,
    open_loop,
    percentile,
    stream_length,
    upgrade_database,
    web_tier,
)

from wire.protocol import AGENT_GROUP, Envelope, Event, events_stream, messages_stream
from wire.redis_bus import RedisBus

PRODUCERS = 8  # threads appending in this process
AGENTS = 3  # agent stand-in processes (each agent runs on its own VM in production)
CHATS_PER_TENANT = 50  # so Telegram's one message per second per chat never throttles a reply
DRAIN_TIMEOUT = 10.0  # seconds after the last append for every reply to reach the stand-in
BOT_TOKEN = "123456:BENCH"
TELEGRAM_SECRET = "bench-telegram-secret"
INGRESS_RATE = 600.0  # webhooks/s offered to one control host: above its ceiling on 2 cores
INGRESS_SECONDS = 6.0
INGRESS_TENANTS = 200


def _bus(url: str) -> RedisBus:
    return RedisBus.from_url(url, retention=100_000)


def _chat(tenant: int, k: int) -> str:
    return str(tenant * 1000 + k % CHATS_PER_TENANT)


def _seed(database_url: str, tenants: int) -> list[int]:
    """``tenants`` active tenants, each with a ready machine and ``CHATS_PER_TENANT`` linked
    Telegram chats; returns their ids."""
    from control.db import init_database
    from control.models import ChatIdentity, Machine, MachineState, Tenant, utcnow

    db = init_database(database_url, upgrade=False)
    with db.connection_context(), db.atomic():
        ids = [Tenant.create(email=f"bus{i}@bench.example", plan="light", status="active").id
               for i in range(tenants)]
        Machine.insert_many([{"tenant": t, "plan": "light", "state": MachineState.READY,
                              "ready_at": utcnow()} for t in ids]).execute()
        ChatIdentity.insert_many([{"channel": "telegram", "chat_id": _chat(t, k), "user_id": _chat(t, k),
                                   "tenant": t} for t in ids for k in range(CHATS_PER_TENANT)]).execute()
    db.close()
    return ids


class Run:
    """The producers' state: when each envelope was appended."""

    def __init__(self):
        self.lock = threading.Lock()
        self.appended: dict[str, float] = {}
        self.behind = 0  # appends that started later than scheduled by more than 1 s


def _produce(url: str, run: Run, tenants: list[int], rate: float, total: int, first: int,
             start: float) -> None:
    bus = _bus(url)
    for k in range(first, total, PRODUCERS):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            run.behind += 1
        tenant = tenants[k % len(tenants)]
        chat = _chat(tenant, k // len(tenants))
        envelope = Envelope(id=uuid.uuid4().hex, tenant=str(tenant), channel="telegram", chat_id=chat,
                            sender_id=chat, text="What is on my calendar tomorrow morning?")
        with run.lock:
            run.appended[envelope.id] = time.monotonic()
        bus.append(messages_stream(str(tenant)), envelope.to_json(), idempotency_key=envelope.id)
    bus.close()


def _agent(url: str, tenants: list[int], name: str, stopping, answered) -> None:
    """An agent stand-in process: answer every envelope of ``tenants`` with one ``final``
    event ``re <envelope id>``; ``answered`` holds the answers of every agent and the monotonic
    time of the last one."""
    bus = _bus(url)
    streams = [messages_stream(str(t)) for t in tenants]
    while not stopping.is_set():
        deliveries = bus.read(streams, AGENT_GROUP, name, count=200, block=0.05)
        for delivery in deliveries:
            envelope = Envelope.from_json(delivery.payload)
            event = Event(message_id=envelope.id, seq=0, kind="final", text=f"re {envelope.id}",
                          tenant=envelope.tenant, channel=envelope.channel, chat_id=envelope.chat_id)
            bus.append(events_stream(envelope.tenant), event.to_json(), idempotency_key=f"{envelope.id}:0")
            bus.ack(delivery.stream, AGENT_GROUP, delivery.entry_id)
        if deliveries:
            with answered.get_lock():
                answered[0] += len(deliveries)
                answered[1] = time.monotonic()
    bus.close()


def _deliver(url: str, database_url: str, api_base: str, share: int, workers: int, concurrency: int,
             stopping) -> None:
    """A delivery worker process as ``hermes worker`` runs it with ``HERMES_DELIVERY_SHARD=
    share/workers`` and ``HERMES_DELIVERY_CONCURRENCY=concurrency``, delivering to the Telegram
    stand-in at ``api_base``."""
    from control.channels.telegram import BotApiClient
    from control.channels.telegram_adapter import TelegramAdapter
    from control.db import init_database
    from control.services.delivery import DeliveryWorker, consumer_name, in_shard
    from control.services.provisioning import ready_tenant_ids

    db = init_database(database_url, upgrade=False)
    bus = _bus(url)
    worker = DeliveryWorker(bus, {"telegram": TelegramAdapter(BotApiClient(BOT_TOKEN, api_base))},
                            lambda: [t for t in ready_tenant_ids() if in_shard(t, (share, workers))],
                            consumer=consumer_name(), concurrency=concurrency)
    with db.connection_context():
        while not stopping.is_set():
            worker.step(block=0.05)
    worker.close()
    bus.close()


def _channel(urls, stopping, count, out) -> None:
    """The Telegram Bot API stand-in's process: put its base URL on ``urls``, count replies in
    ``count`` and, once ``stopping`` is set (after the delivery workers stopped), put ``(when
    each envelope's reply arrived, duplicates)`` on ``out``."""
    from standins.telegram_bot_api import TelegramBotApiStandin

    seen: dict[str, float] = {}
    duplicates = 0
    lock = threading.Lock()

    def on_call(call, status: int) -> None:
        nonlocal duplicates
        text = call.params.get("text", "")
        if status != 200 or call.method != "sendMessage" or not text.startswith("re "):
            return
        with lock:
            duplicates += text[3:] in seen
            seen.setdefault(text[3:], call.at)  # CLOCK_MONOTONIC: one clock for the host
            count.value = len(seen)

    standin = TelegramBotApiStandin(token=BOT_TOKEN)
    standin.on_call = on_call
    standin.start()
    urls.put(standin.base_url)
    stopping.wait()
    standin.stop()
    out.put((seen, duplicates))


def run(rate: float, seconds: float, tenant_count: int, delivery_workers: int = 4,
        concurrency: int = 8) -> dict:
    """Run both measurements; return the result record (see ``load.py`` for the shared keys).
    ``concurrency``: send threads per delivery worker (``HERMES_DELIVERY_CONCURRENCY``)."""
    ingress = ingress_ceiling()
    bus = _through_bus(rate, seconds, tenant_count, delivery_workers, concurrency)
    passed = (min(bus["achieved_rate"], bus["delivered_rate"]) >= 0.99 * rate
              and bus["undelivered"] == 0 and bus["duplicates"] == 0)
    return {
        "scenario": 3,
        "target": f">= {rate:g} messages/s through Redis to the channel, none lost or duplicated",
        "value": min(bus["achieved_rate"], bus["delivered_rate"]), "unit": "messages/s",
        "passed": passed, "offered_rate": rate, **bus,
        "ingress": {**ingress, "control_hosts_needed": math.ceil(rate / ingress["ceiling_rate"])
                    if ingress["ceiling_rate"] else None},
    }


def _through_bus(rate: float, seconds: float, tenant_count: int, delivery_workers: int,
                 concurrency: int) -> dict:
    """The bus with its production consumers (module docstring); returns its figures."""
    redis, postgres = PrivateRedis(), ThrowawayPostgres()
    state = Run()
    total = int(rate * seconds)
    context = multiprocessing.get_context("spawn")
    stopping, channel_stop = context.Event(), context.Event()
    count, urls, out = context.Value("i", 0), context.Queue(), context.Queue()
    answered = context.Array("d", 2)  # answers, monotonic time of the last one
    processes = []
    try:
        upgrade_database({**os.environ, "DATABASE_URL": postgres.url})
        tenants = _seed(postgres.url, tenant_count)
        channel = context.Process(target=_channel, args=(urls, channel_stop, count, out), daemon=True)
        channel.start()
        processes.append(channel)
        api_base = urls.get(timeout=30)
        processes += [context.Process(target=_agent, args=(redis.admin_url, tenants[i::AGENTS],
                                                           f"agent-{i}", stopping, answered),
                                       daemon=True)
                      for i in range(AGENTS)]
        processes += [context.Process(target=_deliver, args=(redis.admin_url, postgres.url, api_base,
                                                             i, delivery_workers, concurrency, stopping),
                                       daemon=True)
                      for i in range(delivery_workers)]
        for process in processes[1:]:
            process.start()
        time.sleep(3.0)  # spawned interpreters import the control plane before the clock starts
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
        for process in processes[1:]:  # a worker finishes the flush it is in (killed below)
            process.join(5)
        channel_stop.set()
        delivered, duplicates = out.get(timeout=30)
    finally:
        stopping.set()
        channel_stop.set()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
        redis.close()
        postgres.close()
    delivered_for = max(delivered.values(), default=start) - start
    lags = [(delivered[m] - at) * 1000 for m, at in state.appended.items() if m in delivered]
    delivered_rate = round(len(delivered) / delivered_for) if delivered_for > 0 else 0
    per_worker = delivered_rate / delivery_workers
    return {
        "achieved_rate": round(total / appended_for), "delivered_rate": delivered_rate,
        "answered_rate": round(answered[0] / (answered[1] - start)) if answered[1] > start else 0,
        "messages": total, "tenants": tenant_count, "delivery_workers": delivery_workers,
        "per_delivery_worker_rate": round(per_worker), "delivery_concurrency": concurrency,
        "delivery_workers_needed": math.ceil(rate / per_worker) if per_worker else None,
        "load_average": round(os.getloadavg()[0], 1),
        "agent_processes": AGENTS, "undelivered": total - len(delivered), "duplicates": duplicates,
        "late_appends": state.behind, "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p99_ms": round(percentile(lags, 99), 1), "seconds": round(appended_for, 1),
    }


def ingress_ceiling() -> dict:
    """The webhook ingress ceiling of one control host (module docstring): its figures, with
    ``ceiling_rate`` the answered webhooks per second."""
    from standins.telegram_updates import text_update

    total = int(INGRESS_RATE * INGRESS_SECONDS)
    with web_tier("ingress", {"TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
                              "TELEGRAM_BOT_TOKEN": BOT_TOKEN}) as tier:
        tenants = _seed(tier.postgres.url, INGRESS_TENANTS)
        tier.server.start()
        headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET,
                   "Content-Type": "application/json"}

        def request(k: int) -> tuple[bytes, dict[str, str]]:
            chat = int(_chat(tenants[k % len(tenants)], k // len(tenants)))
            return json.dumps(text_update(1_000_000 + k, chat, f"ingress {k}", message_id=k + 1)).encode(), headers

        loop = open_loop(tier.client, "/webhooks/telegram", INGRESS_RATE, total, request,
                         lambda answer: [answer.json().get("outcome", "?")])
        published = sum(stream_length(tier.redis.admin_url, str(t)) for t in tenants)
        server = tier.server.description
    answered = loop.statuses.get("200", 0)
    return {
        "server": server, "database": "postgresql (pooled)", "offered_rate": INGRESS_RATE,
        "seconds": INGRESS_SECONDS, "ceiling_rate": round(answered / loop.elapsed, 1),
        **{k: v for k, v in ack_figures(loop.ack_ms, loop.elapsed).items() if k != "achieved_rate"},
        "statuses": loop.statuses, "outcomes": loop.outcomes, "published": published,
        "load_average": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
    }

