"""Routing benchmark (issue 4): raw bus throughput and webhook → bus → agent → delivery.

    python bench/routing.py [--redis-url URL] [--tenants 2] [--rate 200] [--rate-seconds 5]

1. Raw bus throughput (``bench/bus_throughput.py``): append + consume + ack of ``--bus-n``
   envelopes on the SqliteBus and the RedisBus (``--redis-url``, else a throwaway
   ``redis-server``), and ``redis-benchmark`` XADD on the same server in the same run.
   ``bus_msgs_per_s`` is the RedisBus figure; ``fraction_of_redis_benchmark`` compares it with
   plain XADD (our figure does three commands per message: the append script's XADD,
   XREADGROUP and XACK).
2. End to end, on the production transport: ``hermes serve`` on a private ``redis-server``
   with per-tenant ACL users (never the ``--redis-url`` server, whose keys we must not touch),
   the control database on PostgreSQL (``--database``; production's), ``--tenants`` local
   agents, the zero-latency Anthropic stand-in and the Telegram stand-in
   as the delivery target (``bench/bench_support.py``).  Every message goes to a chat not used
   for ``--chats`` messages, so the delivery worker's per-chat edit throttle
   (``HERMES_EDIT_INTERVAL`` = 1 s, Telegram's one message per second per chat) never queues
   a reply behind another.

   * webhook → envelope, open loop at ``--rate`` requests/s for ``--rate-seconds``, to chats
     of a tenant with no agent (nothing consumes; the control plane only verifies, routes,
     records and publishes): ``webhook_p50_ms``/``webhook_p99_ms`` from each request's
     scheduled time to its 200 (a sender falling behind is counted, not hidden); the
     envelope is on the bus when the webhook answers 200.
   * closed loop at each ``--concurrency`` level: that many senders each post a message and
     wait for its reply before the next; ``e2e_msgs_per_s`` is the best level's rate and
     ``e2e_p50_ms``/``e2e_p99_ms`` its webhook → final-reply latency.
   * ``paced_e2e``: the open loop again, to the agents' chats, waiting up to ``--drain``
     seconds for every reply (webhook latency with the whole pipeline busy on this host).

   ``lost``: messages whose reply never became visible (or whose webhook never answered 200
   after Telegram-like retries); ``duplicates``: replies that created more than one message.
   The control database is PostgreSQL through playhouse's pooled driver
   (``postgresql+pool://``): with a plain ``postgresql://`` URL every request opens and
   closes a server connection, which alone caps webhooks near 100/s on this host.

Targets (issue 4): bus_msgs_per_s >= 10,000 on loopback; webhook p99 < 10 ms at 200
requests/s; lost = duplicates = 0.  Prints one JSON line (the last line).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext, suppress
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import PrivateRedis, Stack, ThrowawayPostgres, percentile, wait_until
from bus_throughput import run as bus_run
from bus_throughput import throwaway_redis

FIRST_CHAT = 800_000
REPLY_TIMEOUT = 30.0  # seconds a closed-loop sender waits for one reply


class ChatPool:
    """Hands out chats round-robin, so one chat is reused only after all others."""

    def __init__(self, chats: list[int]):
        self.chats = chats
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            chat = self.chats[self.next % len(self.chats)]
            self.next += 1
            return chat


def closed_loop(stack: Stack, pool: ChatPool, concurrency: int, count: int, tag: str) -> dict:
    """``concurrency`` senders, ``count`` messages in all, each waiting for its reply."""
    latencies, lost = [], []
    counter = iter(range(count))
    lock = threading.Lock()

    def sender():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            text = f"{tag}-{i}"
            sent_at, _, status = stack.send(pool.take(), text)
            try:
                if status != 200:
                    raise TimeoutError
                shown = wait_until(lambda t=text: stack.reply_at(t), REPLY_TIMEOUT, text, interval=0.002)
                with lock:
                    latencies.append((shown - sent_at) * 1000)
            except TimeoutError:
                with lock:
                    lost.append(text)

    started = time.monotonic()
    threads = [threading.Thread(target=sender) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"concurrency": concurrency, "messages": count,
            "e2e_msgs_per_s": round(len(latencies) / elapsed, 1),
            "e2e_p50_ms": round(percentile(latencies, 50), 1),
            "e2e_p99_ms": round(percentile(latencies, 99), 1), "lost": len(lost)}


def open_loop(stack: Stack, pool: ChatPool, rate: float, seconds: float, drain: float, tag: str,
              replies: bool = True) -> dict:
    """Post at ``rate`` requests/s for ``seconds``; then wait up to ``drain`` s for every reply.

    ``replies=False``: the chats' tenant has no agent, nothing answers; only webhooks count.
    """
    count = int(rate * seconds)
    webhook_ms, failed = [], 0
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def post(i: int):
        nonlocal failed
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent_at, first, status = stack.send(pool.take(), f"{tag}-{i}")
        with lock:
            webhook_ms.append((sent_at + first - scheduled) * 1000)
            failed += status != 200

    with ThreadPoolExecutor(max_workers=32) as executor:
        list(executor.map(post, range(count)))
    sent_done = time.monotonic()
    result = {"rate": rate, "messages": count, "achieved_rate": round(count / (sent_done - start), 1),
              "webhook_p50_ms": round(percentile(webhook_ms, 50), 2),
              "webhook_p99_ms": round(percentile(webhook_ms, 99), 2),
              "webhook_max_ms": round(max(webhook_ms), 2), "webhook_failed": failed}
    if not replies:
        return {**result, "lost": failed}
    texts = [f"{tag}-{i}" for i in range(count)]
    with suppress(TimeoutError):
        wait_until(lambda: all(stack.reply_at(t) for t in texts), drain, "every reply", interval=0.05)
    shown = [stack.reply_at(t) for t in texts]
    delivered = [s for s in shown if s is not None]
    return {**result, "drain_s": round((max(delivered) - start) if delivered else 0.0, 1),
            "lost": len(texts) - len(delivered)}


def end_to_end(args) -> dict:
    """Run the webhook-only phase, the closed-loop levels and the open-loop e2e phase."""
    with ExitStack() as cleanup:
        redis = PrivateRedis()
        cleanup.callback(redis.close)
        postgres = ThrowawayPostgres() if args.database == "postgres" else None
        if postgres is not None:
            cleanup.callback(postgres.close)
        # playhouse's pooled driver: one Postgres connection per request thread, kept open.
        stack = Stack(bus="redis", redis_url=redis.admin_url, log_path=args.serve_log,
                      database_url=postgres.pooled_url if postgres else None)
        cleanup.callback(stack.close)
        return _phases(stack, args)


def _phases(stack: Stack, args) -> dict:
    """The measured phases on a started stack (see the module docstring)."""
    run_id = uuid.uuid4().hex[:6]
    sink = stack.tenant_without_agent("sink@example.com")
    sink_chats = list(range(FIRST_CHAT - args.chats, FIRST_CHAT))
    stack.link_chats(sink, sink_chats)
    open_loop(stack, ChatPool(sink_chats), args.rate, 1.0, 0, f"v{run_id}", replies=False)  # warm-up
    webhook = open_loop(stack, ChatPool(sink_chats), args.rate, args.rate_seconds, 0,
                        f"h{run_id}", replies=False)
    tenants = [stack.signup(n) for n in range(1, args.tenants + 1)]
    chats = list(range(FIRST_CHAT, FIRST_CHAT + args.chats))
    for index, tenant_id in enumerate(tenants):
        stack.link_chats(tenant_id, chats[index::len(tenants)])
    pool = ChatPool(chats)
    closed_loop(stack, pool, 4, 20, f"w{run_id}")  # warm-up: agents, connections, caches
    levels = [closed_loop(stack, pool, c, max(args.per_level, 4 * c), f"c{c}x{run_id}")
              for c in args.concurrency]
    paced = open_loop(stack, pool, args.rate, args.rate_seconds, args.drain, f"r{run_id}")
    time.sleep(1.0)  # a late duplicate gets the chance to show before counting
    return {"webhook": webhook, "levels": levels, "paced": paced, "tenants": len(tenants),
            "chats": len(chats), "duplicates": stack.duplicates(),
            "webhook_errors": {str(k): v for k, v in stack.webhook_errors.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="measure the raw RedisBus on this server (default: a throwaway one)")
    parser.add_argument("--bus-n", type=int, default=50_000, help="messages per bus, raw throughput")
    parser.add_argument("--batch", type=int, default=500, help="messages per round trip, raw throughput")
    parser.add_argument("--tenants", type=int, default=2, help="tenants (local agent processes)")
    parser.add_argument("--chats", type=int, default=2000, help="distinct linked chats")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--per-level", type=int, default=60, help="messages per level (at least 4 x concurrency)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop webhook requests per second")
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the open-loop replies")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres",
                        help="control database: a throwaway one on the local PostgreSQL, or SQLite")
    parser.add_argument("--serve-log", help="keep hermes serve's log at this path")
    args = parser.parse_args()

    with (nullcontext(args.redis_url) if args.redis_url else throwaway_redis()) as url:
        bus = bus_run(url, args.bus_n, args.batch)
    e2e = end_to_end(args)
    best = max(e2e["levels"], key=lambda level: level["e2e_msgs_per_s"])
    paced, webhook = e2e["paced"], e2e["webhook"]
    result = {
        "bus_msgs_per_s": bus["redis_bus_msgs_per_s"],
        "sqlite_bus_msgs_per_s": bus["sqlite_bus_msgs_per_s"],
        "redis_benchmark_xadd_per_s": bus["redis_benchmark_xadd_per_s"],
        "fraction_of_redis_benchmark": bus["fraction_of_redis_benchmark"],
        "e2e_msgs_per_s": best["e2e_msgs_per_s"], "e2e_concurrency": best["concurrency"],
        "e2e_p50_ms": best["e2e_p50_ms"], "e2e_p99_ms": best["e2e_p99_ms"],
        "webhook_p50_ms": webhook["webhook_p50_ms"], "webhook_p99_ms": webhook["webhook_p99_ms"],
        "webhook_rate": webhook["rate"], "webhook_achieved_rate": webhook["achieved_rate"],
        "lost": sum(level["lost"] for level in e2e["levels"]) + paced["lost"] + webhook["lost"],
        "duplicates": e2e["duplicates"],
        "webhook_errors": e2e["webhook_errors"],
        "webhook_only": webhook, "levels": e2e["levels"], "paced_e2e": paced,
        "tenants": e2e["tenants"], "chats": e2e["chats"], "edit_interval_s": 1.0,
        "database": args.database,
        "bus_n": args.bus_n, "bus_batch": args.batch,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
