"""Mission-control overview server time (issue 21): ``GET /ops`` on a loaded fleet.

    python bench/ops_overview.py [--tenants 1000] [--messages 100000] [--requests 200]
                                 [--database-url postgresql://...]

Seeds ``--tenants`` paying tenants with machines in every state, ``--messages`` inbound and
outbound messages over the last 24 hours, one LLM call and one reply per five messages, an
attention item per twenty tenants and dead letters on the embedded SQLite bus; then an admin
signs in with password and TOTP and ``GET /ops`` is served ``--requests`` times in process
(Flask's test client: the time is the server's, from the WSGI call to the last body byte,
with the database on SQLite by default, or the PostgreSQL database given).
Prints one JSON line: ``overview_p50_ms``, ``overview_p99_ms`` and the seed sizes; the aim is
p99 < 150 ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import percentile_figures

PASSWORD = "bench passphrase 123"
STATES = ["ready"] * 90 + ["unhealthy"] * 3 + ["booting"] * 2 + ["failed"] * 3 + ["paused"] * 2
CHUNK = 500  # rows per INSERT (SQLite's default limit is 32766 variables)


def _seed(tenants: int, messages: int, bus) -> None:
    """Write the fleet (setup, not measured)."""
    from control.db import database
    from control.models import (
        AttentionItem,
        Delivery,
        LlmCall,
        Machine,
        Message,
        Tenant,
        utcnow,
    )
    from wire.bus import Delivery as BusDelivery

    now, rng = utcnow(), random.Random(21)

    def insert(model, rows) -> None:
        for start in range(0, len(rows), CHUNK):
            model.insert_many(rows[start:start + CHUNK]).execute()

    with database.atomic():
        insert(Tenant, [{"email": f"user{i}@bench.example", "plan": rng.choice(["light", "heavy"]),
                         "status": "active"} for i in range(tenants)])
        ids = [t.id for t in Tenant.select(Tenant.id)]
        insert(Machine, [{"tenant": t, "plan": "light", "state": rng.choice(STATES),
                          "requested_at": now, "ready_at": now, "detail": "bench"} for t in ids])
        rows = []
        for n in range(messages):
            at = now - timedelta(seconds=rng.randrange(86400))
            rows.append({"tenant": rng.choice(ids), "envelope_id": f"e{n}",
                         "direction": "in" if n % 2 == 0 else "out", "channel": "telegram",
                         "chat_id": str(n % 5000), "text": "hello", "created_at": at})
        insert(Message, rows)
        insert(LlmCall, [{"tenant": rng.choice(ids), "api": "anthropic", "model": "m",
                          "status": 200 if n % 50 else 529, "cost_cents": 0.4,
                          "created_at": now - timedelta(seconds=rng.randrange(86400))}
                         for n in range(messages // 5)])
        insert(Delivery, [{"envelope_id": f"d{n}", "tenant": rng.choice(ids),
                           "channel": "telegram", "chat_id": str(n),
                           "state": "delivered" if n % 40 else "failed",
                           "created_at": now - timedelta(seconds=rng.randrange(86400))}
                          for n in range(messages // 5)])
        insert(AttentionItem, [{"kind": "provisioning_failed", "subject": str(t), "detail": "bench"}
                               for t in ids[::20]])
    for t in ids[:20]:
        stream = f"hermes:messages:{t}"
        entry = bus.append(stream, json.dumps({"message_id": f"dead-{t}"}))
        bus.dead_letter(BusDelivery(stream, entry, "{}", 5), "agent", "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    import pyotp

    from control import create_app
    from control.db import database
    from control.runtime import Runtime
    from control.services import audit, operators
    from control.settings import Settings
    from wire import logs

    logs.configure("console", level=logging.WARNING)  # stderr only; stdout is the JSON line
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=data_dir, database_url=args.database_url)
        runtime = Runtime(settings, upgrade_schema=True)
        app = create_app(settings, runtime)
        with database.connection_context():
            _seed(args.tenants, args.messages, runtime.bus)
            _op, uri = operators.add("bench@ops.example", "admin", PASSWORD, runtime.secrets_box,
                                     audit.Actor(name="bench", role="cli", source="bench"))
        client = app.test_client()
        page = client.get("/ops/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
        signed_in = client.post("/ops/login", data={
            "csrf_token": token, "email": "bench@ops.example", "password": PASSWORD,
            "totp": pyotp.TOTP(pyotp.parse_uri(uri).secret).now()})
        assert signed_in.status_code == 303, signed_in.status_code
        timings = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get("/ops")
            body = response.get_data()
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and b"machines-ready" in body
        runtime.close()
    print(json.dumps({"bench": "ops_overview", "tenants": args.tenants,
                      "messages": args.messages, "requests": args.requests,
                      "database": "postgresql" if args.database_url else "sqlite",
                      **percentile_figures("overview", timings)}))


if __name__ == "__main__":
    main()
