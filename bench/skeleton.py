"""Walking-skeleton latency (issue 2): webhook → envelope and webhook → final reply.

    python bench/skeleton.py [--n 200] [--bus sqlite|redis]

Runs ``hermes serve`` (embedded defaults: SQLite database and bus, local agent process) with
the Telegram stand-in and a zero-latency Anthropic stand-in (``bench/bench_support.py``), signs
up one tenant and sends ``--n`` messages one at a time, each from its own linked chat, waiting
for each reply before the next message.  Latencies in milliseconds:

* ``webhook_*``: the ``POST /webhooks/telegram`` round trip; the envelope is on the bus when it
  answers 200 (webhook → envelope).
* ``reply_*``: from that POST to the Telegram stand-in applying the call that shows the
  complete final text (webhook → final reply as the user sees it).
* ``webhook_errors``: non-200 answers by status; the update is then retried as Telegram
  would (``bench_support.WEBHOOK_ATTEMPTS``), and counts as lost only if every attempt failed.

``warmup`` messages are sent first and not counted.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import PrivateRedis, Stack, percentile, wait_until

REPLY_TIMEOUT = 30.0  # seconds per message before it counts as lost
FIRST_CHAT = 900_000


def run(n: int, warmup: int, bus: str) -> dict:
    """Measure ``n`` sequential messages; return the result record."""
    redis = PrivateRedis() if bus == "redis" else None
    try:
        stack = Stack(bus=bus, redis_url=redis.admin_url if redis else None)
    except BaseException:
        if redis is not None:
            redis.close()
        raise
    try:
        tenant_id = stack.signup(1)
        chats = list(range(FIRST_CHAT, FIRST_CHAT + n + warmup))
        stack.link_chats(tenant_id, chats)
        webhook_ms, reply_ms, lost = [], [], 0
        run_id = uuid.uuid4().hex[:6]
        started_run = time.monotonic()
        for i, chat_id in enumerate(chats):
            text = f"s{run_id}-{i}"
            sent_at, webhook_s, status = stack.send(chat_id, text)
            if status != 200:
                lost += 1
                continue
            try:
                shown = wait_until(lambda t=text: stack.reply_at(t), REPLY_TIMEOUT, f"reply {i}",
                                   interval=0.001)
            except TimeoutError:
                lost += 1
                continue
            if i >= warmup:
                webhook_ms.append(webhook_s * 1000)
                reply_ms.append((shown - sent_at) * 1000)
        elapsed = time.monotonic() - started_run
        time.sleep(1.0)  # give a duplicate the chance to show before counting
        return {
            "bench": "skeleton", "bus": bus, "n": n, "warmup": warmup,
            "webhook_p50_ms": round(percentile(webhook_ms, 50), 2),
            "webhook_p99_ms": round(percentile(webhook_ms, 99), 2),
            "reply_p50_ms": round(percentile(reply_ms, 50), 2),
            "reply_p99_ms": round(percentile(reply_ms, 99), 2),
            "lost": lost, "duplicates": stack.duplicates(),
            "webhook_errors": {str(k): v for k, v in stack.webhook_errors.items()},
            "elapsed_s": round(elapsed, 1),
        }
    finally:
        stack.close()
        if redis is not None:
            redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="messages measured")
    parser.add_argument("--warmup", type=int, default=5, help="messages sent first, not measured")
    parser.add_argument("--bus", choices=("sqlite", "redis"), default="sqlite")
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.warmup, args.bus)))


if __name__ == "__main__":
    main()
