"""Discord interactions endpoint under load (issue 11): ack latency at 200 requests/s.

    python bench/discord_webhook.py [--rate 200] [--seconds 10] [--users 50] [--embedded]

Production wiring on loopback: ``hermes db upgrade``, then gunicorn with the control role's
worker model (``--worker-class gthread``, ``control.gunicorn_conf``) serving
``control:create_app()`` on the production transport: a throwaway PostgreSQL database through
playhouse's pool and a private ``redis-server`` bus (``bench/bench_support.py``, as
``bench/routing.py``); ``--embedded`` uses the SQLite database and bus instead (one writer at a
time: it falls behind well below 200/s on this 2-core host).  ``--users`` Discord users are
linked to tenants with a ready machine; every request is a distinct ``/ask`` interaction from
one of them, signed with Ed25519 as Discord signs (``standins.discord_api.InteractionSigner``;
signed before the clock starts).  Each is verified, its user looked up (one read) and the
command queued on the task queue (Redis in production) with its token encrypted before the
deferred response (type 5) is returned: the work of an acknowledgement; the writes (token,
webhook key, message log, envelope) run in the ``route_discord_interaction`` task, which this
bench does not run (no consumer).

Open loop: request ``i`` is scheduled at ``start + i / rate``; its latency runs from that
scheduled time to the response, so a server falling behind shows in the figures
(``ack_*``); ``server_*`` is the app's own time per request from its request log (the ack's
cost without the queueing).  Discord's limit is 3 s; the aim is under 50 ms.  Prints one JSON
line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import (
    GunicornServer,
    PrivateRedis,
    ThrowawayPostgres,
    ack_figures,
    free_port,
    open_loop_parser,
    percentile_figures,
    upgrade_database,
)

from standins.discord_api import InteractionSigner, command_interaction

FIRST_USER = 400_000_000_000_000_000


def _seed(env: dict, users: int) -> list[str]:
    """Link ``users`` Discord users to tenants with a ready machine; return their user ids."""
    from control.db import init_database
    from control.models import ChatIdentity, Machine, MachineState, Tenant, utcnow

    db = init_database(env.get("DATABASE_URL") or f"sqlite:///{env['HERMES_DATA_DIR']}/control.db",
                       upgrade=False)
    ids = [str(FIRST_USER + i) for i in range(users)]
    with db.connection_context():
        for i, user in enumerate(ids):
            tenant = Tenant.create(email=f"discord{i}@bench.example", plan="light", status="active")
            Machine.create(tenant=tenant, plan="light", state=MachineState.READY, ready_at=utcnow())
            ChatIdentity.create(channel="discord", chat_id=user, user_id=user, tenant=tenant)
    db.close()
    return ids


def run(rate: float, seconds: float, users: int, embedded: bool) -> dict:
    """Measure the ack latency of ``rate * seconds`` interactions; return the result record."""
    if embedded:
        return _run(rate, seconds, users, None, None)
    redis, postgres = PrivateRedis(), ThrowawayPostgres()
    try:
        return _run(rate, seconds, users, postgres.pooled_url, redis.admin_url)
    finally:
        redis.close()
        postgres.close()


def _run(rate: float, seconds: float, users: int, database_url: str | None,
         redis_url: str | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-discord-"))
    signer = InteractionSigner()
    env = {**os.environ, "HERMES_DATA_DIR": str(tmp / "data"), "HERMES_PORT": str(free_port()),
           "HERMES_LOG_FORMAT": "json",
           "DISCORD_PUBLIC_KEY": signer.public_key_hex, "DISCORD_APPLICATION_ID": "775799577604522054",
           "DISCORD_BOT_TOKEN": "bench-token"}
    for name in ("DATABASE_URL", "REDIS_URL", "HERMES_BUS", "HERMES_BUS_URL"):
        env.pop(name, None)
    if database_url:
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, HERMES_BUS="redis")
    upgrade_database(env)
    ids = _seed(env, users)
    count = int(rate * seconds)
    bodies = []
    for i in range(count):
        body = json.dumps(command_interaction("ask", ids[i % len(ids)], {"question": f"q{i}"})).encode()
        bodies.append((body, signer.headers(body)))
    server = GunicornServer(env, tmp / "gunicorn.log")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()
    try:
        server.start()
        base = server.base_url
        for body, headers in bodies[:20]:  # warm-up: connections, imports, first writes
            httpx.post(f"{base}/webhooks/discord", content=body, headers=headers, timeout=30)
        start = time.monotonic() + 0.2

        def post(i: int) -> None:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=base, timeout=30)
            body, headers = bodies[i]
            scheduled = start + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                response = local.client.post("/webhooks/discord", content=body, headers=headers)
                outcome = str(response.status_code) if response.status_code != 200 \
                    else f"type {response.json().get('type')}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with lock:
                latencies.append((time.monotonic() - scheduled) * 1000)
                statuses[outcome] = statuses.get(outcome, 0) + 1

        with ThreadPoolExecutor(max_workers=48) as executor:
            list(executor.map(post, range(20, count)))
        elapsed = time.monotonic() - start
    finally:
        server.stop()
        served = _served_ms(tmp / "gunicorn.log")
        shutil.rmtree(tmp, ignore_errors=True)
    return {"bench": "discord_webhook", "rate": rate, **ack_figures(latencies, elapsed),
            "server": server.description,
            "transport": "postgres+redis" if database_url else "sqlite",
            **percentile_figures("server", served), "answers": statuses}


def _served_ms(log_path: Path) -> list[float]:
    """The app's own time per webhook request (``duration_ms`` of its JSON request log lines):
    what the ack costs without the wait in the server's queue."""
    durations = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("path") == "/webhooks/discord" and "duration_ms" in record:
            durations.append(float(record["duration_ms"]))
    return durations[20:]  # the warm-up requests


def main() -> None:
    parser = open_loop_parser(__doc__, "requests per second", "linked Discord users (tenants)")
    parser.add_argument("--embedded", action="store_true",
                        help="SQLite database and bus instead of PostgreSQL and Redis")
    args = parser.parse_args()
    print(json.dumps(run(args.rate, args.seconds, args.users, args.embedded)))


if __name__ == "__main__":
    main()
