"""The fleet's SLOs (issue 21): what ``hermes slo``, ``/metrics`` and the alerts read."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from cli.main import cli
from control.db import database
from control.models import (
    Delivery,
    Machine,
    MachineEvent,
    Message,
    Tenant,
    utcnow,
)
from control.services import slo
from wire.bus import Delivery as BusDelivery
from wire.protocol import AGENT_GROUP, messages_stream


@pytest.fixture
def db(runtime):
    with database.connection_context():
        yield runtime


def _tenant(email: str, state: str = "ready") -> Tenant:
    tenant = Tenant.create(email=email, plan="light", status="active")
    Machine.create(tenant=tenant, plan="light", state=state, ready_at=utcnow())
    return tenant


def test_provisioning_success_counts_jobs_that_ended_in_the_window(db):
    now = utcnow()
    ada, bob, cy = _tenant("ada@example.com"), _tenant("bob@example.com"), _tenant("cy@example.com")
    for tenant, kind, days_ago in ((ada, "provisioned", 1), (bob, "provisioned", 2),
                                   (cy, "failed", 3), (cy, "failed", 45)):
        MachineEvent.create(tenant=tenant, kind=kind, at=now - timedelta(days=days_ago))

    ratio = slo.provisioning_success(now)

    assert (ratio.good, ratio.total) == (2, 3)
    assert slo.report(db.bus, now)["provisioning_success"]["met"] is False


def test_uptime_adds_every_outage_in_the_window_and_one_still_going(db):
    now = utcnow()
    flaky, down = _tenant("flaky@example.com"), _tenant("down@example.com", state="unhealthy")
    MachineEvent.create(tenant=flaky, kind="provisioned", at=now - timedelta(days=60))
    events = [("down", 40 * 86400, flaky), ("up", 40 * 86400 - 3600, flaky),  # before the window
              ("up", 29 * 86400, flaky),  # down since before the window started: 1 day
              ("down", 10 * 86400, flaky), ("up", 10 * 86400 - 1800, flaky),
              ("provisioned", 2 * 86400, down), ("down", 86400, down)]
    for kind, seconds_ago, tenant in events:
        MachineEvent.create(tenant=tenant, kind=kind, at=now - timedelta(seconds=seconds_ago))

    uptime = slo.machine_uptime(now)

    window = 30 * 86400
    assert uptime[flaky.id] == pytest.approx(1 - (86400 + 1800) / window)
    assert uptime[down.id] == pytest.approx(0.5)  # provisioned 2 days ago, down for the last one
    figure = slo.report(db.bus, now)["machine_uptime"]
    assert figure["below_target"] == [flaky.id, down.id] and figure["met"] is False


def test_delivery_success_counts_failed_and_stuck_replies_not_fresh_ones(db):
    now = utcnow()
    tenant = _tenant("ada@example.com")
    for n, (state, minutes_ago) in enumerate([("delivered", 5), ("delivered", 30), ("failed", 60),
                                              ("sending", 20), ("sending", 1),
                                              ("delivered", 25 * 60)]):
        Delivery.create(envelope_id=f"e{n}", tenant=tenant, channel="telegram", chat_id="1",
                        state=state, created_at=now - timedelta(minutes=minutes_ago))

    ratio = slo.delivery_success(now)

    assert (ratio.good, ratio.total) == (2, 4)


def test_dead_letter_rate_is_dead_letters_of_the_day_over_its_envelopes(runtime, client):
    with database.connection_context():
        tenant = _tenant("ada@example.com")
        for n in range(10):
            Message.create(tenant=tenant, envelope_id=f"m{n}", direction="in", channel="telegram",
                           chat_id="1")
    stream = messages_stream(str(tenant.id))
    entry_id = runtime.bus.append(stream, "{}")
    runtime.bus.dead_letter(BusDelivery(stream=stream, entry_id=entry_id, payload="{}", attempts=4),
                            AGENT_GROUP, "turn failed 4 times")

    with database.connection_context():
        ratio = slo.dead_letter_rate(runtime.bus)
        tomorrow = slo.dead_letter_rate(runtime.bus, utcnow() + timedelta(days=2))
    metrics = client.get("/metrics").get_data(as_text=True)

    assert (ratio.good, ratio.total) == (1, 10)
    assert tomorrow.value is None  # nothing in that window
    assert "hermes_slo_dead_letter_ratio 0.1" in metrics
    assert 'hermes_slo_target{slo="dead_letter_rate"} 0.01' in metrics
    assert "hermes_slo_delivery_success_ratio" not in metrics  # no reply: no data, no alert


def test_hermes_slo_prints_every_objective_and_json(runtime, settings, monkeypatch):
    with database.connection_context():
        tenant = _tenant("ada@example.com")
        MachineEvent.create(tenant=tenant, kind="provisioned", at=utcnow())
    monkeypatch.setenv("HERMES_DATA_DIR", settings.data_dir)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)

    text = CliRunner().invoke(cli, ["slo"], catch_exceptions=False).output
    figures = json.loads(CliRunner().invoke(cli, ["slo", "--json"], catch_exceptions=False).output)

    assert "provisioning_success" in text and "100.00%" in text and "met" in text
    assert figures["provisioning_success"]["value"] == 1.0
    assert figures["delivery_success"]["value"] is None  # no reply yet: no data
    assert figures["machine_uptime"]["machines"] == 1
