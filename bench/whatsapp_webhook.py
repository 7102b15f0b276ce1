"""WhatsApp webhook ack latency under load (issue 12): ``POST /webhooks/whatsapp`` at 200/s.

    python bench/whatsapp_webhook.py [--rate 200] [--seconds 10] [--users 50] [--retries 0.05]

Production wiring on loopback, as ``bench/slack_webhook.py``: ``hermes db upgrade``, then
gunicorn with the control role's worker model (``bench_support.GunicornServer``) serving
``control:create_app()`` with the control database on PostgreSQL (pooled driver) and the bus on a
private ``redis-server``.  ``--users`` WhatsApp numbers are linked to one tenant with a ready
machine and no agent, so each request does the whole ack path and nothing else: the
``X-Hub-Signature-256`` check on the raw body, the JSON parse, the 24-hour window upsert, the
``WebhookEvent`` + ``Message`` transaction and the bus append of the envelope.

Open loop: one signed text message (a published Cloud API body, ``standins/payloads/whatsapp``)
every ``1/--rate`` s for ``--seconds`` s, each with a new wamid except a ``--retries`` fraction
that sends the previous body again (Meta redelivers), which must publish nothing.  ``ack_ms``
runs from each request's scheduled send time to its answer (a sender falling behind is counted,
not hidden).  Meta expects a 200 quickly and retries otherwise
(https://developers.facebook.com/docs/graph-api/webhooks/getting-started#event-notifications);
the target is p99 < 50 ms.  ``published`` must equal the unique messages.  Before the open loop,
``SEQUENTIAL`` requests one at a time give the service time (``sequential_*``); ``load_average``
is the host's 1-minute load when the run ended (this host is shared).  Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import (
    ack_arguments,
    ack_record,
    open_loop,
    redelivery_plan,
    sequential_ms,
    stream_length,
    web_tier,
)

from standins.whatsapp_api import message_body, signed_headers

SECRET = "bench-whatsapp-app-secret"
PATH = "/webhooks/whatsapp"
SEQUENTIAL = 100  # one-at-a-time requests measuring the service time before the open loop


def _seed(database_url: str, users: int) -> str:
    """Link ``users`` WhatsApp numbers to one tenant with a ready machine; return its id."""
    from control.db import init_database
    from control.models import ChatIdentity, Machine, MachineState, Tenant, utcnow

    db = init_database(database_url, upgrade=False)
    with db.connection_context():
        tenant = Tenant.create(email="whatsapp@bench.example", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state=MachineState.READY, ready_at=utcnow())
        for i in range(users):
            ChatIdentity.create(channel="whatsapp", chat_id=_number(i), user_id=_number(i),
                                tenant=tenant)
    db.close()
    return str(tenant.id)


def _number(i: int) -> str:
    return f"4915{i:09d}"


def _message(i: int, users: int) -> bytes:
    return json.dumps(message_body(wa_id=_number(i % users), wamid=f"wamid.bench{i:09d}",
                                   text=f"bench message {i}")).encode()


def run(rate: float, seconds: float, users: int, retries: float) -> dict:
    """Measure the ack latency of ``rate`` events/s for ``seconds``; return the result record."""
    # A redelivery sends the previous body again, unchanged, as Meta does.
    plan = redelivery_plan(int(rate * seconds), retries)
    bodies = {i: _message(i, users) for i, _ in plan}  # built before the clock starts

    def request(k: int) -> tuple[bytes, dict[str, str]]:
        body = bodies[plan[k][0]]
        return body, signed_headers(body, SECRET)

    with web_tier("whatsapp", {"WHATSAPP_APP_SECRET": SECRET}) as tier:
        tenant = _seed(tier.postgres.url, users)
        tier.server.start()
        # Service time first: one request at a time (ids after the open loop's), no queueing.
        sequential = [_message(10_000_000 + j, users) for j in range(SEQUENTIAL)]
        sequential_times = sequential_ms(tier.client, PATH,
                                         [(body, signed_headers(body, SECRET)) for body in sequential])
        loop = open_loop(tier.client, PATH, rate, len(plan), request,
                         lambda answer: answer.json().get("messages", ["?"]))
        published = stream_length(tier.redis.admin_url, tenant)
    return ack_record("whatsapp_webhook", tier, rate, seconds, loop,
                      ("unique_messages", len(bodies)), published - SEQUENTIAL, sequential_times)


def main() -> None:
    args = ack_arguments(__doc__, "fraction of messages Meta delivers again")
    print(json.dumps(run(args.rate, args.seconds, args.users, args.retries)))


if __name__ == "__main__":
    main()
