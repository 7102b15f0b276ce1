"""Discord interactions endpoint under load (issues 11 and 20): ack latency at 200 requests/s.

    python bench/discord_webhook.py [--rate 200] [--seconds 10] [--users 50]

Production's web tier on loopback, the same as ``bench/slack_webhook.py``'s (``web_tier``):
gunicorn with the control role's worker model serving ``control:create_app()`` on a throwaway
PostgreSQL database and a private ``redis-server`` (bus and task queue).  ``--users`` Discord
users are linked to tenants with a ready machine; every request is a distinct ``/ask``
interaction from one of them, signed with Ed25519 as Discord signs
(``standins.discord_api.InteractionSigner``; signed before the clock starts).  Each is
verified, its user looked up (one read) and the command queued on the task queue with its
token encrypted before the deferred response (type 5) is returned: the work of an
acknowledgement; the writes (token, webhook key, message log, envelope) run in the
``route_discord_interaction`` task, which this bench does not run (no consumer).

First ``SEQUENTIAL`` requests one at a time (``sequential_*``: the service time, the issue's
"p99 < 50 ms one at a time"), then the open loop (``ack_*``): request ``k`` is scheduled at
``start + k / rate`` and its latency runs from that time to the answer, so a server falling
behind shows.  Discord's limit is 3 s.  Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import ack_record, open_loop, open_loop_parser, sequential_ms, web_tier

from standins.discord_api import InteractionSigner, command_interaction

FIRST_USER = 400_000_000_000_000_000


def _seed(database_url: str, users: int) -> list[str]:
    """Link ``users`` Discord users to tenants with a ready machine; return their user ids."""
    from control.db import init_database
    from control.models import ChatIdentity, Machine, MachineState, Tenant, utcnow

    db = init_database(database_url, upgrade=False)
    ids = [str(FIRST_USER + i) for i in range(users)]
    with db.connection_context():
        for i, user in enumerate(ids):
            tenant = Tenant.create(email=f"discord{i}@bench.example", plan="light", status="active")
            Machine.create(tenant=tenant, plan="light", state=MachineState.READY, ready_at=utcnow())
            ChatIdentity.create(channel="discord", chat_id=user, user_id=user, tenant=tenant)
    db.close()
    return ids


SEQUENTIAL = 100  # one-at-a-time requests measuring the service time before the open loop
PATH = "/webhooks/discord"


def run(rate: float, seconds: float, users: int) -> dict:
    """Measure the ack latency of ``rate * seconds`` interactions; return the result record."""
    signer = InteractionSigner()
    settings = {"DISCORD_PUBLIC_KEY": signer.public_key_hex,
                "DISCORD_APPLICATION_ID": "775799577604522054", "DISCORD_BOT_TOKEN": "bench-token"}
    count = int(rate * seconds)

    def signed(i: int) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(command_interaction("ask", ids[i % len(ids)], {"question": f"q{i}"})).encode()
        return body, signer.headers(body)

    with web_tier("discord", settings) as tier:
        ids = _seed(tier.postgres.url, users)
        requests = [signed(i) for i in range(count + SEQUENTIAL)]
        tier.server.start()
        sequential = sequential_ms(tier.client, PATH, requests[count:])
        loop = open_loop(tier.client, PATH, rate, count, requests.__getitem__,
                         lambda answer: [f"type {answer.json().get('type')}"])
    record = ack_record("discord_webhook", tier, rate, seconds, loop, ("interactions", count), 0,
                        sequential)
    del record["published"]  # nothing is published during the ack (the task does it)
    return record


def main() -> None:
    args = open_loop_parser(__doc__, "requests per second", "linked Discord users (tenants)").parse_args()
    print(json.dumps(run(args.rate, args.seconds, args.users)))


if __name__ == "__main__":
    main()
