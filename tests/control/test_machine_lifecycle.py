"""A machine is ready when its agent says so; missed heartbeats, retries, failures, reprovision.

The cloud is the hcloud API stand-in (``CloudProvisioner`` asks it for the plan's server type,
as ``HetznerProvisioner`` does before any stack exists, so a 503 there is a real Hetzner
answer); Telegram is the Bot API stand-in; the agent's lifecycle events go through the real
bus and the real delivery worker.  Huey runs tasks inline (immediate mode).
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import timedelta

import pytest
from prometheus_client import generate_latest
from support.webhooks import post_stripe

from control import create_app
from control.db import database
from control.errors import ProvisioningError
from control.models import (
    AttentionItem,
    ChatIdentity,
    LinkToken,
    Machine,
    MachineEvent,
    MachineState,
    OutboxMail,
    Tenant,
    utcnow,
)
from control.providers.base import MachineSpec, MachineStatus, Provisioner
from control.runtime import Runtime
from control.services import machine_health, notices, provisioning, slo
from control.services.delivery import DeliveryWorker
from control.services.notices import Notice
from infra.hetzner_api import make_client, validate_server_types
from standins import stripe_events as se
from standins.hcloud_api import HcloudStandin
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.protocol import DELIVERY_GROUP, Event, events_stream

CHAT = 777001


class CloudProvisioner(Provisioner):
    """Provisions against the hcloud stand-in: checks the plan's server type through the API
    (an ``APIException`` becomes ``ProvisioningError``, as in ``HetznerProvisioner``), then
    reports the server ``running`` — what the cloud says before any agent has started."""

    def __init__(self, client):
        self.client = client
        self.calls = 0

    def provision(self, spec: MachineSpec) -> MachineStatus:
        from hcloud import APIException

        self.calls += 1
        try:
            validate_server_types(self.client, ["cx23"], "nbg1")
        except APIException as err:
            raise ProvisioningError(f"Hetzner API error while checking server types: {err}") from err
        return MachineStatus(spec.tenant, "running", plan=spec.plan, address="10.0.0.5")

    def resize(self, tenant, plan):
        raise NotImplementedError

    def restart(self, tenant):
        raise NotImplementedError

    def pause(self, tenant):
        raise NotImplementedError

    def resume(self, tenant):
        raise NotImplementedError

    def deprovision(self, tenant, archive=True):
        return None

    def status(self, tenant):
        return MachineStatus(tenant, "running")

    def list(self):
        return []


@pytest.fixture
def cloud():
    with HcloudStandin() as api:
        yield api


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as api:
        yield api


@contextmanager
def _world(settings, cloud, telegram, immediate: bool):
    settings = settings.with_overrides(huey_immediate=immediate, provision_retry_delay=0.0,
                                       telegram_api_base=telegram.base_url,
                                       telegram_bot_token=telegram.token)
    prov = CloudProvisioner(make_client(cloud.token, cloud.url, poll_interval=0.01))
    runtime = Runtime(settings, provisioner=prov, upgrade_schema=True)
    app = create_app(settings, runtime)

    def tenants():
        with database.connection_context():
            return provisioning.ready_tenant_ids()

    worker = DeliveryWorker(runtime.bus, runtime.tasks.adapters, tenants, tenant_refresh=0.0)
    yield runtime, prov, worker, app
    runtime.close()


@pytest.fixture
def world(settings, cloud, telegram):
    """``(runtime, provisioner, worker)``: inline Huey, no retry pause, the stand-ins as internet."""
    with _world(settings, cloud, telegram, immediate=True) as parts, database.connection_context():
        yield parts


@pytest.fixture
def queued_world(settings, cloud, telegram):
    """As ``world``, with the real SqliteHuey queue: tasks wait until ``run_queue``.  No
    connection is held open: the app's requests open and close their own."""
    with _world(settings, cloud, telegram, immediate=False) as parts:
        yield parts


def run_queue(runtime) -> None:
    """Run every queued task, as the control plane's Huey consumers would (the main queue and
    the provisioning queue, ``control.tasks.PROVISION_QUEUE``)."""
    for huey in (runtime.huey, runtime.provision_huey):
        while (task := huey.dequeue()) is not None:
            huey.execute(task)


def paying_tenant(email="ada@example.com") -> Tenant:
    return Tenant.create(email=email, plan="light", status="active")


def publish(runtime, tenant: Tenant, state: str, text: str = "", at: float | None = None) -> None:
    runtime.bus.append(events_stream(str(tenant.id)),
                       Event.lifecycle_event(str(tenant.id), state, text, at=at).to_json())


def drain(worker, runtime, tenant) -> None:
    """Let the delivery worker read until the tenant's events stream has nothing unread."""
    for _ in range(50):
        if worker.step(block=0.05) == 0 and runtime.bus.pending_count(
                events_stream(str(tenant.id)), DELIVERY_GROUP) == 0:
            return
    raise AssertionError("the delivery worker did not drain the events stream")


def machine_of(tenant) -> Machine:
    return Machine.get(Machine.tenant == tenant)


def open_kinds(tenant) -> set[str]:
    return {a.kind for a in AttentionItem.select().where(
        (AttentionItem.subject == str(tenant.id)) & AttentionItem.resolved_at.is_null())}


def test_machine_stays_booting_while_the_cloud_says_running_until_its_agent_reports_ready(world, telegram):
    runtime, _prov, worker, _ = world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    assert machine_of(tenant).state == MachineState.BOOTING
    drain(worker, runtime, tenant)
    assert machine_of(tenant).state == MachineState.BOOTING  # running VM, silent agent: not ready

    publish(runtime, tenant, "ready", "llm chain anthropic")
    drain(worker, runtime, tenant)

    machine = machine_of(tenant)
    assert machine.state == MachineState.READY and machine.ready_at and machine.last_heartbeat_at
    token = LinkToken.get(LinkToken.tenant == tenant)
    assert token.used_at is None and token.expires_at > utcnow()
    # No chat linked yet: the user is told by e-mail (the outbox), nobody by hand.
    assert [(m.to_addr, m.subject) for m in OutboxMail.select()] == [
        ("ada@example.com", notices.render(Notice.READY)[0])]
    assert "notice_undelivered" not in open_kinds(tenant)
    assert telegram.calls_for("sendMessage") == []  # lifecycle events never reach a chat


def test_a_linked_user_is_told_in_the_chat_when_the_agent_is_ready(world, telegram):
    runtime, _, worker, _ = world
    tenant = paying_tenant()
    ChatIdentity.create(channel="telegram", chat_id=str(CHAT), user_id="1", tenant=tenant)
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    publish(runtime, tenant, "ready")
    drain(worker, runtime, tenant)
    assert [m.text for m in telegram.chat_messages(CHAT)] == [notices.render(Notice.READY)[1]]


def test_missing_heartbeats_make_a_ready_machine_unhealthy_until_the_next_one(world):
    runtime, _, worker, app = world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    publish(runtime, tenant, "ready")
    drain(worker, runtime, tenant)
    policy = runtime.tasks.health_policy
    later = utcnow() + timedelta(seconds=policy.heartbeat_interval * policy.missed_heartbeats + 1)

    assert machine_health.check_machines(policy, print, print, now=utcnow())["unhealthy"] == []
    report = machine_health.check_machines(policy, print, print, now=later)

    assert report["unhealthy"] == [tenant.id]
    assert machine_of(tenant).state == MachineState.UNHEALTHY
    assert "agent_unhealthy" in open_kinds(tenant)
    metrics = generate_latest(app.extensions["hermes_metrics"]).decode()  # what /metrics serves
    assert 'hermes_machines{state="unhealthy"} 1.0' in metrics
    assert "hermes_agent_unhealthy_total 1.0" in metrics

    publish(runtime, tenant, "heartbeat")
    drain(worker, runtime, tenant)
    assert machine_of(tenant).state == MachineState.READY
    assert "agent_unhealthy" not in open_kinds(tenant)


def test_a_503_from_hetzner_is_retried_and_the_machine_ends_ready(world, cloud):
    runtime, _prov, worker, _ = world
    tenant = paying_tenant()
    cloud.inject(503, count=1)
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    machine = machine_of(tenant)
    assert machine.state == MachineState.BOOTING and machine.attempts == 2
    publish(runtime, tenant, "ready")
    drain(worker, runtime, tenant)
    assert machine_of(tenant).state == MachineState.READY
    assert "provisioning_failed" not in open_kinds(tenant)


def test_hetzner_failing_every_attempt_fails_the_machine_and_tells_the_user(world, cloud, telegram):
    runtime, _prov, _, _ = world
    tenant = paying_tenant()
    ChatIdentity.create(channel="telegram", chat_id=str(CHAT), user_id="1", tenant=tenant)
    cloud.inject(503, count=1000)
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    machine = machine_of(tenant)
    assert machine.state == MachineState.FAILED
    assert machine.attempts == runtime.settings.provision_attempts
    assert "provisioning_failed" in open_kinds(tenant)
    assert [m.text for m in telegram.chat_messages(CHAT)] == [notices.render(Notice.FAILED)[1]]


def test_no_ready_event_by_the_deadline_retries_then_fails(world):
    runtime, _prov, _worker, _ = world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    policy = runtime.tasks.health_policy
    scheduled = []
    for attempt in range(1, policy.attempts + 1):
        assert machine_of(tenant).attempts == attempt
        late = utcnow() + timedelta(seconds=policy.ready_timeout + 1)
        report = machine_health.check_machines(
            policy, print, lambda tid, delay: scheduled.append((tid, delay)), now=late)
        if attempt < policy.attempts:
            assert report["retried"] == [tenant.id]
            assert machine_of(tenant).state == MachineState.REQUESTED
            runtime.tasks.provision_machine(tenant.id)  # what the scheduled retry runs
    assert report["failed"] == [tenant.id]
    assert machine_of(tenant).state == MachineState.FAILED
    assert "did not report ready" in machine_of(tenant).detail
    assert [d for _, d in scheduled] == [policy.backoff(n) for n in range(1, policy.attempts)]
    assert "provisioning_failed" in open_kinds(tenant)
    assert [m.subject for m in OutboxMail.select()] == [notices.render(Notice.FAILED)[0]]


def test_an_agent_reporting_failed_fails_the_machine_with_its_reason(world):
    runtime, _, worker, _ = world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    publish(runtime, tenant, "failed", "agent cannot start: HERMES_LLM=anthropic needs ANTHROPIC_API_KEY")
    drain(worker, runtime, tenant)
    machine = machine_of(tenant)
    assert machine.state == MachineState.FAILED
    assert "needs ANTHROPIC_API_KEY" in machine.detail
    assert "provisioning_failed" in open_kinds(tenant)


def test_reprovision_is_idempotent_and_ignores_the_old_agents_backlog(world):
    runtime, prov, worker, _ = world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    assert provisioning.reprovision(tenant, runtime.tasks.provision_machine) == "in_progress"
    publish(runtime, tenant, "failed", "local model missing")
    drain(worker, runtime, tenant)
    assert machine_of(tenant).state == MachineState.FAILED
    stale_at = utcnow().timestamp() + 0.0
    publish(runtime, tenant, "failed", "the old agent again", at=stale_at - 3600)

    assert provisioning.reprovision(tenant, runtime.tasks.provision_machine) == "requested"
    assert machine_of(tenant).state == MachineState.BOOTING and prov.calls == 2
    assert provisioning.reprovision(tenant, runtime.tasks.provision_machine) == "in_progress"
    drain(worker, runtime, tenant)  # the old agent's failure, written before this attempt
    assert machine_of(tenant).state == MachineState.BOOTING

    publish(runtime, tenant, "ready")
    drain(worker, runtime, tenant)
    assert provisioning.reprovision(tenant, runtime.tasks.provision_machine) == "already_ready"
    assert prov.calls == 2


def _refuse_queuing(monkeypatch, runtime, times: int) -> list:
    """Make the next ``times`` provisioning enqueues fail as a locked SQLite queue file does."""
    real, refused = runtime.provision_huey.enqueue, []

    def enqueue(task):
        if len(refused) < times:
            refused.append(task.name)
            raise sqlite3.OperationalError("database is locked")
        return real(task)

    monkeypatch.setattr(runtime.provision_huey, "enqueue", enqueue)
    return refused


def _pay(client, email="ada@example.com"):
    """Stripe's two events of a paid sign-up; returns the checkout event (for a retry)."""
    checkout = se.checkout_completed(email=email, customer="cus_A", subscription="sub_A",
                                     event_id="evt_cs_A")
    assert post_stripe(client, se.subscription_created(
        customer="cus_A", subscription="sub_A", plan="light", event_id="evt_sub_A")).status_code == 200
    assert post_stripe(client, checkout).status_code == 200
    return checkout


def test_a_paid_machine_whose_task_could_not_be_queued_is_provisioned_by_the_sweep(
        queued_world, monkeypatch):
    runtime, prov, worker, app = queued_world
    client = app.test_client()
    refused = _refuse_queuing(monkeypatch, runtime, times=1)
    checkout = _pay(client)
    assert refused == ["provision_machine"]
    # Stripe's retry is a duplicate: nothing on the webhook path queues the task again.
    assert post_stripe(client, checkout).json["outcome"] == "duplicate"
    tenant = Tenant.get(Tenant.email == "ada@example.com")
    assert machine_of(tenant).state == MachineState.REQUESTED
    assert runtime.provision_huey.pending_count() == 0

    # Within a minute of the request the sweep leaves it alone (its own enqueue may be under way).
    assert runtime.tasks._requeue_requested()["requeued"] == []
    later = utcnow() + timedelta(seconds=provisioning.REQUEUE_AFTER + 1)
    assert runtime.tasks._requeue_requested(now=later)["requeued"] == [tenant.id]
    assert runtime.tasks._requeue_requested(now=later)["requeued"] == []  # already queued
    assert runtime.provision_huey.pending_count() == 1

    run_queue(runtime)
    assert machine_of(tenant).state == MachineState.BOOTING and prov.calls == 1
    publish(runtime, tenant, "ready")
    drain(worker, runtime, tenant)
    assert machine_of(tenant).state == MachineState.READY
    assert runtime.tasks._requeue_requested(now=later + timedelta(hours=1)) == {
        "requeued": [], "stuck": []}
    assert prov.calls == 1


def test_a_retry_waiting_out_its_backoff_is_not_queued_twice(queued_world):
    runtime, prov, _worker, _ = queued_world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    Machine.update(updated_at=utcnow() - timedelta(minutes=5)).where(Machine.tenant == tenant).execute()
    runtime.tasks.provision_machine.schedule((tenant.id,), delay=3600)  # check_machines' retry
    run_queue(runtime)  # the first attempt runs; the retry moves to the schedule
    Machine.update(state=MachineState.REQUESTED).where(Machine.tenant == tenant).execute()
    assert runtime.tasks.queued_provisioning() == {tenant.id}
    assert runtime.tasks._requeue_requested()["requeued"] == []
    assert prov.calls == 1


def test_a_machine_requested_for_ten_minutes_raises_attention_and_the_alert_metric(
        queued_world, monkeypatch):
    runtime, prov, _worker, app = queued_world
    refused = _refuse_queuing(monkeypatch, runtime, times=2)  # the webhook's and the sweep's
    _pay(app.test_client())
    tenant = Tenant.get(Tenant.email == "ada@example.com")
    Machine.update(updated_at=utcnow() - timedelta(minutes=11)).where(Machine.tenant == tenant).execute()

    report = runtime.tasks._requeue_requested()
    assert report == {"requeued": [], "stuck": [tenant.id]} and len(refused) == 2
    assert provisioning.STUCK_KIND in open_kinds(tenant)
    metrics = generate_latest(app.extensions["hermes_metrics"]).decode()  # what /metrics serves
    age = next(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("hermes_machine_requested_age_seconds "))
    assert 660 <= age < 720  # HermesMachineStuckRequested fires above 600

    assert runtime.tasks._requeue_requested()["requeued"] == [tenant.id]  # the queue is back
    run_queue(runtime)
    assert machine_of(tenant).state == MachineState.BOOTING and prov.calls == 1
    runtime.tasks._requeue_requested()
    assert provisioning.STUCK_KIND not in open_kinds(tenant)
    assert "hermes_machine_requested_age_seconds 0.0" in generate_latest(
        app.extensions["hermes_metrics"]).decode()


def test_an_outage_counts_from_the_last_heartbeat_and_lowers_that_vms_uptime(world):
    runtime, _, worker, app = world
    tenant, steady = paying_tenant(), paying_tenant("bob@example.com")
    for who in (tenant, steady):
        provisioning.request_machine(who, "light", runtime.tasks.provision_machine)
        publish(runtime, who, "ready")
        drain(worker, runtime, who)
    policy = runtime.tasks.health_policy
    last_beat = machine_of(tenant).last_heartbeat_at
    Machine.update(last_heartbeat_at=utcnow() + timedelta(days=1)).where(
        Machine.tenant == steady).execute()  # bob keeps beating
    machine_health.check_machines(policy, print, print, now=last_beat + timedelta(hours=1))
    publish(runtime, tenant, "heartbeat")
    drain(worker, runtime, tenant)

    assert [(e.kind, e.at) for e in MachineEvent.select().where(MachineEvent.tenant == tenant)
            .order_by(MachineEvent.id)][:2] == [("provisioned", last_beat), ("down", last_beat)]
    assert "agent_unhealthy" not in open_kinds(tenant)
    resolved = AttentionItem.get(AttentionItem.kind == "agent_unhealthy")
    assert (resolved.resolved_by, resolved.resolution) == ("", "cause cleared: the agent beats again")
    up_at = MachineEvent.get(MachineEvent.kind == "up").at
    a_day_on = last_beat + timedelta(days=1)
    uptime = slo.machine_uptime(now=a_day_on)
    down = (up_at - last_beat).total_seconds()
    assert uptime[tenant.id] == pytest.approx(1 - down / 86400, abs=1e-6)
    assert uptime[steady.id] == 1.0
    metrics = generate_latest(app.extensions["hermes_metrics"]).decode()
    assert f'hermes_machine_uptime_ratio{{tenant="{steady.id}"}} 1.0' in metrics
    assert "hermes_slo_provisioning_success_ratio 1.0" in metrics


def test_the_agent_version_comes_from_its_ready_event_and_odd_text_leaves_it_unknown(world):
    runtime, _, worker, _app = world
    tenant = paying_tenant()
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    publish(runtime, tenant, "ready", "hermes-max 0.9.1; llm chain anthropic,local")
    drain(worker, runtime, tenant)
    assert machine_of(tenant).agent_version == "0.9.1"

    publish(runtime, tenant, "ready", "hermes-max <script>alert(1)</script>; llm chain x")
    drain(worker, runtime, tenant)
    assert machine_of(tenant).agent_version is None
