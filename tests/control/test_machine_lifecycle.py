"""A machine is ready when its agent says so; missed heartbeats, retries, failures, reprovision.

The cloud is the hcloud API stand-in (``CloudProvisioner`` asks it for the plan's server type,
as ``HetznerProvisioner`` does before any stack exists, so a 503 there is a real Hetzner
answer); Telegram is the Bot API stand-in; the agent's lifecycle events go through the real
bus and the real delivery worker.  Huey runs tasks inline (immediate mode).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import generate_latest

from control import create_app
from control.db import database
from control.errors import ProvisioningError
from control.models import (
    AttentionItem,
    ChatIdentity,
    LinkToken,
    Machine,
    MachineState,
    Tenant,
    utcnow,
)
from control.providers.base import MachineSpec, MachineStatus, Provisioner
from control.runtime import Runtime
from control.services import machine_health, provisioning
from control.services.delivery import DeliveryWorker
from infra.hetzner_api import make_client, validate_server_types
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


@pytest.fixture
def world(settings, cloud, telegram):
    """``(runtime, provisioner, worker)``: inline Huey, no retry pause, the stand-ins as internet."""
    settings = settings.with_overrides(huey_immediate=True, provision_retry_delay=0.0,
                                       telegram_api_base=telegram.base_url,
                                       telegram_bot_token=telegram.token)
    prov = CloudProvisioner(make_client(cloud.token, cloud.url, poll_interval=0.01))
    runtime = Runtime(settings, provisioner=prov, upgrade_schema=True)
    app = create_app(settings, runtime)

    def tenants():
        with database.connection_context():
            return provisioning.ready_tenant_ids()

    worker = DeliveryWorker(runtime.bus, runtime.bot, tenants, tenant_refresh=0.0)
    with database.connection_context():
        yield runtime, prov, worker, app
    runtime.close()


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
    # No chat linked yet and no mail system: an operator is asked to e-mail the user.
    assert "email_user" in open_kinds(tenant)
    assert telegram.calls_for("sendMessage") == []  # lifecycle events never reach a chat


def test_a_linked_user_is_told_in_the_chat_when_the_agent_is_ready(world, telegram):
    runtime, _, worker, _ = world
    tenant = paying_tenant()
    ChatIdentity.create(channel="telegram", chat_id=str(CHAT), user_id="1", tenant=tenant)
    provisioning.request_machine(tenant, "light", runtime.tasks.provision_machine)
    publish(runtime, tenant, "ready")
    drain(worker, runtime, tenant)
    assert [m.text for m in telegram.chat_messages(CHAT)] == [machine_health.READY_TEXT]
    assert "email_user" not in open_kinds(tenant)


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
    assert [m.text for m in telegram.chat_messages(CHAT)] == [machine_health.FAILED_TEXT]


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
    assert {"provisioning_failed", "email_user"} <= open_kinds(tenant)


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
