"""Today's spend by goal and by job on the dashboard (issue 23): the calls an agent reports in a
reply's ``usage`` carry the goal or job they worked for; the control plane keeps them only when
they look like a goal number or a job id (they come from a tenant VM)."""

from __future__ import annotations

import re

from support.dashboard import make_ready, sign_in

from control.db import database
from control.models import Usage
from control.services.usage import record_usage
from wire.protocol import Event


def _call(cents: float, **extra) -> dict:
    return {"model": "claude-haiku-4-5", "input_tokens": 10, "output_tokens": 5, "cost_cents": cents,
            "latency_ms": 30, **extra}


def _rows(page: str, testid: str) -> list[tuple[str, str]]:
    table = page.split(f'data-testid="{testid}"')[1].split("</table>")[0]
    return re.findall(r"<th scope=\"row\">([^<]+)</th><td>([^<]+)</td>", table)


def test_the_dashboard_shows_todays_spend_by_goal_and_by_job(client):
    tenant = sign_in(client, "ada@example.com")
    make_ready(tenant)
    calls = [_call(1.5, goal_id=1), _call(0.5, goal_id=1), _call(4.0, goal_id=2),
             _call(2.0, job_id="job_7Hq2"), _call(9.0),
             # Not a goal number or a job id: kept as spend, but under no goal or job.
             _call(3.0, goal_id=True), _call(3.0, goal_id="1"), _call(3.0, goal_id=-4),
             _call(3.0, job_id="../../etc"), _call(3.0, job_id="x" * 65)]
    with database.connection_context():
        record_usage(tenant, Event(message_id="m1", seq=1, kind="final", text="done", tenant=str(tenant.id),
                                   channel="telegram", chat_id="1", usage={"model": "claude-haiku-4-5",
                                                                           "calls": calls}))
        assert Usage.select().where(Usage.tenant == tenant).count() == len(calls)

    page = client.get("/dashboard").text

    assert _rows(page, "today-by-goal") == [("Goal #2", "$0.0400"), ("Goal #1", "$0.0200")]
    assert _rows(page, "today-by-job") == [("job_7Hq2", "$0.0200")]


def test_no_goal_or_job_tables_without_such_spend(client):
    tenant = sign_in(client, "bo@example.com")
    make_ready(tenant)
    page = client.get("/dashboard").text
    assert "today-by-goal" not in page and "today-by-job" not in page
