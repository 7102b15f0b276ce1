"""Slack webhook ack latency under load (issue 11): ``POST /webhooks/slack/events`` at 200/s.

    python bench/slack_webhook.py [--rate 200] [--seconds 10] [--users 50] [--retries 0.05]

Production wiring on loopback: ``hermes db upgrade``, then gunicorn with the control role's
worker model (``--worker-class gthread``, ``control.gunicorn_conf``) serving
``control:create_app()`` on production's transport: the control database on PostgreSQL through
the pooled driver and the bus on a private ``redis-server`` (``bench_support``; on SQLite each
request's commit and connection close cost this host's disk some 20 ms, which measures the
disk, not the webhook).  The Slack app is installed
(an encrypted bot token in the installation store) and ``--users`` Slack people are linked to
one tenant with a ready machine and no agent, so each request does the whole ack path and
nothing else: signature check, bolt dispatch, ``authorize`` from the database, the
``WebhookEvent`` + ``Message`` transaction and the bus append of the envelope.

Open loop: one signed ``message.im`` request every ``1/--rate`` s for ``--seconds`` s, each a
new ``event_id`` except a ``--retries`` fraction that repeats the previous event with
``X-Slack-Retry-Num: 1`` (as Slack retries), which must publish nothing.  ``ack_ms`` runs from each request's scheduled
send time to its answer (a sender falling behind is counted, not hidden).  Slack's limit is
3 s (https://docs.slack.dev/apis/events-api/#responding); the target is p99 < 50 ms.
``published`` must equal the unique events.  Before the open loop, ``SEQUENTIAL`` requests
one at a time give the service time (``sequential_*``) without queueing; ``load_average`` is
the host's 1-minute load when the run ended (this host is shared).  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import PrivateRedis, ThrowawayPostgres, free_port, percentile, wait_until

from standins.slack_api import oauth_response, signed_headers

SECRET = "bench-slack-signing-secret"
SEQUENTIAL = 100  # one-at-a-time requests measuring the service time before the open loop
WORKERS, THREADS = 2, 8  # the control role's defaults are 3 x 8; this machine has 2 cores


def _seed(data_dir: Path, database_url: str, users: int) -> str:
    """Install the app (Slack's published oauth.v2.access answer) and link ``users`` people to
    one tenant with a ready machine; return the tenant id."""
    from slack_sdk.oauth.installation_store import Bot

    from control.db import init_database
    from control.models import ChatIdentity, Machine, Tenant, utcnow
    from control.services.secrets_box import box_from_settings
    from control.services.slack_install import DatabaseInstallationStore
    from control.settings import Settings

    db = init_database(database_url, upgrade=False)
    answer = oauth_response()
    with db.connection_context():
        store = DatabaseInstallationStore(box_from_settings(Settings(data_dir=str(data_dir))))
        store.save_bot(Bot(app_id=answer["app_id"], team_id=answer["team"]["id"],
                           bot_token=answer["access_token"], bot_id="B0BENCH",
                           bot_user_id=answer["bot_user_id"], bot_scopes=answer["scope"],
                           installed_at=time.time()))
        tenant = Tenant.create(email="slack@bench.example", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="ready", ready_at=utcnow())
        for i in range(users):
            ChatIdentity.create(channel="slack", chat_id=f"{answer['team']['id']}:U{i:08d}",
                                user_id=f"U{i:08d}", tenant=tenant)
    db.close()
    return str(tenant.id)


def _event(i: int, users: int, team: str) -> bytes:
    ts = f"{1700000000 + i}.{i:06d}"
    return json.dumps({
        "token": "bench", "team_id": team, "api_app_id": "A0KRD7HC3", "type": "event_callback",
        "event_id": f"EvBench{i:07d}", "event_time": 1700000000 + i,
        "event": {"type": "message", "channel": f"D{i % users:08d}", "user": f"U{i % users:08d}",
                  "text": f"bench message {i}", "ts": ts, "event_ts": ts, "channel_type": "im"},
    }).encode()


def run(rate: float, seconds: float, users: int, retries: float) -> dict:
    """Measure the ack latency of ``rate`` events/s for ``seconds``; return the result record."""
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-slack-"))
    postgres, redis = ThrowawayPostgres(), PrivateRedis()
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HERMES_DATA_DIR": str(tmp / "data"), "HERMES_PORT": str(port),
           "HERMES_LOG_FORMAT": "json", "SLACK_SIGNING_SECRET": SECRET,
           "DATABASE_URL": postgres.url, "REDIS_URL": redis.admin_url}
    for name in ("HERMES_BUS", "HERMES_BUS_URL"):
        env.pop(name, None)
    subprocess.run([str(bin_dir / "hermes"), "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    tenant = _seed(tmp / "data", postgres.url, users)
    team = oauth_response()["team"]["id"]
    log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
         "--worker-class", "gthread", "--threads", str(THREADS), "--timeout", "30",
         "--config", "python:control.gunicorn_conf", "control:create_app()"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    total = int(rate * seconds)
    every = max(1, round(1 / retries)) if retries > 0 else 0
    ack_ms: list[float] = []
    statuses: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    client = httpx.Client(base_url=base, timeout=30,
                          limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
    try:
        wait_until(lambda: _up(base, server), 60, "gunicorn /healthz")

        # Request k sends a new event, except every ``every``-th, which retries the previous one.
        plan: list[tuple[int, bool]] = []
        fresh = 0
        for k in range(total):
            if every and k % every == every - 1:
                plan.append((fresh - 1, True))
            else:
                plan.append((fresh, False))
                fresh += 1

        def send(k: int) -> None:
            i, retry = plan[k]
            scheduled = start + k / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = _event(i, users, team)
            headers = signed_headers(body, SECRET)
            if retry:
                headers["X-Slack-Retry-Num"] = "1"
            try:
                answer = client.post("/webhooks/slack/events", content=body, headers=headers)
            except httpx.HTTPError as exc:  # counted, as Slack would count a missing answer
                with lock:
                    statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                return
            done = time.monotonic()
            with lock:
                ack_ms.append((done - scheduled) * 1000)
                statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
                if answer.status_code == 200:
                    outcome = answer.json().get("outcome", "?")
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

        # Service time first: one request at a time (ids after the open loop's), no queueing.
        sequential_ms = []
        for j in range(SEQUENTIAL):
            body = _event(10_000_000 + j, users, team)
            sent = time.monotonic()
            client.post("/webhooks/slack/events", content=body, headers=signed_headers(body, SECRET))
            sequential_ms.append((time.monotonic() - sent) * 1000)
        start = time.monotonic() + 0.5
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=48) as executor:
            list(executor.map(send, range(total)))
        elapsed = time.monotonic() - began
        published = _published(redis.admin_url, tenant)
    finally:
        client.close()
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        postgres.close()
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "bench": "slack_webhook", "server": f"gunicorn gthread {WORKERS}x{THREADS}",
        "database": "postgresql (pooled)", "bus": "redis",
        "rate": rate, "seconds": seconds, "requests": len(ack_ms),
        "achieved_rate": round(len(ack_ms) / elapsed, 1),
        "ack_p50_ms": round(percentile(ack_ms, 50), 2),
        "ack_p99_ms": round(percentile(ack_ms, 99), 2),
        "ack_max_ms": round(max(ack_ms), 2), "statuses": statuses, "outcomes": outcomes,
        "unique_events": len({i for i, _ in plan}), "published": published - SEQUENTIAL,
        "sequential_p50_ms": round(percentile(sequential_ms, 50), 2),
        "sequential_p99_ms": round(percentile(sequential_ms, 99), 2),
        "load_average": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
    }


def _published(bus_url: str, tenant: str) -> int:
    from wire.factory import bus_from_url
    from wire.protocol import messages_stream

    bus = bus_from_url(bus_url)
    try:
        return bus.length(messages_stream(tenant))
    finally:
        bus.close()


def _up(base: str, server: subprocess.Popen) -> bool:
    if server.poll() is not None:
        raise RuntimeError(f"gunicorn exited with code {server.returncode}")
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (retries included)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--retries", type=float, default=0.05,
                        help="fraction of events Slack sends again (X-Slack-Retry-Num)")
    args = parser.parse_args()
    print(json.dumps(run(args.rate, args.seconds, args.users, args.retries)))


if __name__ == "__main__":
    main()
