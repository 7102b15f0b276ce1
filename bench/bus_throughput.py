"""Raw bus throughput: append + consume + ack, for SqliteBus and RedisBus.

    python bench/bus_throughput.py [--redis-url URL] [--n N] [--batch B]

For each bus: append N entries of a ~300-byte envelope in pipelined batches of B
(``append_many``), then read them back in batches of B through a consumer group and
acknowledge each batch (``ack_many``); msgs/s = N / (append time + consume time), on one
thread.  Without ``--redis-url`` a throwaway ``redis-server`` (no persistence) is started on
a free loopback port.  ``redis-benchmark`` then measures plain ``XADD`` on the same server
(100,000 requests, pipeline 16, 50 clients) for comparison; our figure does three commands
per message (XADD through the append script, XREADGROUP, XACK), so the fraction is a
conservative ratio.

Prints one JSON line: sqlite_bus_msgs_per_s, redis_bus_msgs_per_s,
redis_benchmark_xadd_per_s, fraction_of_redis_benchmark, plus append-only rates, n, batch.
Target (issue 4): redis_bus_msgs_per_s >= 10,000 on loopback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from wire.bus import Bus
from wire.protocol import Envelope
from wire.redis_bus import RedisBus, connect
from wire.sqlite_bus import SqliteBus

BENCHMARK_REQUESTS = 100_000


def sample_payload() -> str:
    """A realistic envelope, as the control plane publishes it (about 300 bytes of JSON)."""
    return Envelope(id=uuid.uuid4().hex, tenant="bench", channel="telegram", chat_id="123456789",
                    sender_id="123456789", text="What is on my calendar tomorrow morning?",
                    platform_message_id="4242").to_json()


def measure(bus: Bus, stream: str, n: int, batch: int) -> dict[str, float]:
    """Append ``n`` entries then consume and ack them all; return rates in messages/second."""
    payload = sample_payload()
    started = time.perf_counter()
    for first in range(0, n, batch):
        bus.append_many(stream, [payload] * min(batch, n - first))
    appended = time.perf_counter()
    consumed = 0
    while consumed < n:
        deliveries = bus.read([stream], "bench", "consumer", count=batch)
        if not deliveries:
            raise RuntimeError(f"only {consumed} of {n} entries came back from {stream}")
        bus.ack_many(stream, "bench", [d.entry_id for d in deliveries])
        consumed += len(deliveries)
    finished = time.perf_counter()
    return {"msgs_per_s": n / (finished - started), "append_per_s": n / (appended - started)}


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def throwaway_redis():
    """Yield the URL of a fresh redis-server (no persistence) in a temp dir; stop it after."""
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        process = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
             "--bind", "127.0.0.1", "--dir", directory, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def redis_benchmark_xadd(url: str, key: str) -> float:
    """Run ``redis-benchmark`` XADD against ``url``; return its requests per second."""
    parts = urlparse(url)
    command = [shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark",
               "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
               "-n", str(BENCHMARK_REQUESTS), "-P", "16", "-c", "50", "--csv"]
    if parts.username:
        command += ["--user", parts.username]
    if parts.password:
        command += ["-a", parts.password]
    if parts.scheme == "rediss":
        command += ["--tls"]
    command += ["XADD", key, "*", "f", "v"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(output)))
    return float(rows[-1]["rps"])


def run(redis_url: str, n: int, batch: int) -> dict:
    """Measure both buses and redis-benchmark; return the result record."""
    with tempfile.TemporaryDirectory() as directory:
        sqlite_bus = SqliteBus(Path(directory) / "bus.db")
        sqlite = measure(sqlite_bus, "bench:sqlite", n, batch)
        sqlite_bus.close()
    stream = f"bench:{uuid.uuid4().hex}"
    retention = max(100_000, 2 * n)
    redis_bus = RedisBus.from_url(redis_url, retention=retention, max_backlog=retention)
    try:
        redis_rates = measure(redis_bus, stream, n, batch)
        baseline = redis_benchmark_xadd(redis_url, f"{stream}:redis-benchmark")
    finally:
        redis_bus.close()
        cleanup = connect(redis_url)
        cleanup.delete(stream, f"{stream}:redis-benchmark")
        cleanup.close()
    return {
        "sqlite_bus_msgs_per_s": round(sqlite["msgs_per_s"]),
        "redis_bus_msgs_per_s": round(redis_rates["msgs_per_s"]),
        "redis_benchmark_xadd_per_s": round(baseline),
        "fraction_of_redis_benchmark": round(redis_rates["msgs_per_s"] / baseline, 4),
        "sqlite_bus_append_per_s": round(sqlite["append_per_s"]),
        "redis_bus_append_per_s": round(redis_rates["append_per_s"]),
        "n": n,
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="measure this server (default: a throwaway one)")
    parser.add_argument("--n", type=int, default=50_000, help="messages per bus")
    parser.add_argument("--batch", type=int, default=500, help="messages per round trip")
    args = parser.parse_args()
    if args.redis_url:
        result = run(args.redis_url, args.n, args.batch)
    else:
        with throwaway_redis() as url:
            result = run(url, args.n, args.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
