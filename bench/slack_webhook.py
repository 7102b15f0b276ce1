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

import json
import sys
import time
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

from standins.slack_api import oauth_response, signed_headers

SECRET = "bench-slack-signing-secret"
EVENTS = "/webhooks/slack/events"
SEQUENTIAL = 100  # one-at-a-time requests measuring the service time before the open loop


def _seed(data_dir: Path, database_url: str, users: int) -> str:
    """Install the app (Slack's published oauth.v2.access answer) and link ``users`` people to
    one tenant with a ready machine; return the tenant id."""
    from slack_sdk.oauth.installation_store import Bot

    from control.db import init_database
    from control.models import ChatIdentity, Machine, MachineState, Tenant, utcnow
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
        Machine.create(tenant=tenant, plan="light", state=MachineState.READY, ready_at=utcnow())
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
    team = oauth_response()["team"]["id"]
    plan = redelivery_plan(int(rate * seconds), retries)

    def request(k: int) -> tuple[bytes, dict[str, str]]:
        i, retry = plan[k]
        body = _event(i, users, team)
        headers = signed_headers(body, SECRET)
        if retry:  # as Slack retries
            headers["X-Slack-Retry-Num"] = "1"
        return body, headers

    with web_tier("slack", {"SLACK_SIGNING_SECRET": SECRET}) as tier:
        tenant = _seed(tier.data_dir, tier.postgres.url, users)
        tier.server.start()
        # Service time first: one request at a time (ids after the open loop's), no queueing.
        bodies = [_event(10_000_000 + j, users, team) for j in range(SEQUENTIAL)]
        sequential = sequential_ms(tier.client, EVENTS,
                                   [(body, signed_headers(body, SECRET)) for body in bodies])
        loop = open_loop(tier.client, EVENTS, rate, len(plan), request,
                         lambda answer: [answer.json().get("outcome", "?")])
        published = stream_length(tier.redis.admin_url, tenant)
    return ack_record("slack_webhook", tier, rate, seconds, loop,
                      ("unique_events", len({i for i, _ in plan})), published - SEQUENTIAL,
                      sequential)


def main() -> None:
    args = ack_arguments(__doc__, "fraction of events Slack sends again (X-Slack-Retry-Num)")
    print(json.dumps(run(args.rate, args.seconds, args.users, args.retries)))


if __name__ == "__main__":
    main()
