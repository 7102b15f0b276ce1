"""The warm pool (issue 22): pre-booted servers claimed by payments, with the local provisioner.

The real app is served on a loopback port (pool bootstraps poll ``/api/pool/config`` over HTTP,
as a VM does over ``HERMES_AGENT_CONTROL_URL``); Stripe events are signed with Stripe's scheme;
pool servers and agents are real processes of the real ``LocalProvisioner`` on the embedded
SQLite bus; the agent's LLM is the Anthropic stand-in.  Huey runs tasks inline.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml
from support.serve import ROOT, wait_until
from support.webhooks import STRIPE_SECRET, TELEGRAM_SECRET, post_stripe
from werkzeug.serving import make_server

from control import create_app
from control.db import database
from control.models import Machine, MachineState, PoolServer, PoolServerState, Tenant
from control.providers.local import LocalProvisioner
from control.runtime import Runtime
from control.services import provisioning, warm_pool
from control.services.delivery import DeliveryWorker
from control.services.secrets_box import box_from_settings
from control.settings import Settings
from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin
from standins.telegram_bot_api import TelegramBotApiStandin

AGENT_READY_TIMEOUT = 120  # seconds: a fresh agent imports its stores and the embedder


@pytest.fixture
def pool_world(tmp_path):
    """``(runtime, client, worker, url)``: the app on a real port with ``light=1`` pooled."""
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start),  # noqa: PLW0108
                         threaded=True)
    holder = {}
    url = f"http://127.0.0.1:{server.server_port}"
    with AnthropicStandin() as anthropic, TelegramBotApiStandin() as telegram:
        settings = Settings(
            data_dir=str(tmp_path / "data"), stripe_webhook_secret=STRIPE_SECRET,
            telegram_webhook_secret=TELEGRAM_SECRET, telegram_bot_token=telegram.token,
            telegram_api_base=telegram.base_url, huey_immediate=True, public_url=url,
            warm_pool={"light": 1},
            agent_env={"HERMES_LLM": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-test",
                       "ANTHROPIC_BASE_URL": anthropic.base_url})
        provisioner = LocalProvisioner(tmp_path / "data" / "agents", pool_poll_interval=0.2)
        runtime = Runtime(settings, provisioner=provisioner, upgrade_schema=True)
        holder["app"] = create_app(settings, runtime)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def tenants():
            with database.connection_context():
                return provisioning.ready_tenant_ids()

        worker = DeliveryWorker(runtime.bus, runtime.tasks.adapters, tenants, tenant_refresh=0.0)
        try:
            yield runtime, holder["app"].test_client(), worker, url
        finally:
            server.shutdown()
            thread.join(timeout=10)
            runtime.close()


def pay(client, n: int) -> int:
    """One sign-up's Stripe events (subscription, then checkout); return the tenant id."""
    email, customer, sub = f"user{n}@example.com", f"cus_{n}", f"sub_{n}"
    created = se.subscription_created(customer=customer, subscription=sub, plan="light",
                                      status="active", event_id=f"evt_s_{n}")
    assert post_stripe(client, created).status_code == 200
    checkout = se.checkout_completed(email=email, customer=customer, subscription=sub,
                                     event_id=f"evt_c_{n}")
    assert post_stripe(client, checkout).status_code == 200
    with database.connection_context():
        return Tenant.get(Tenant.email == email).id


def wait_ready(worker, tenant_id: int) -> Machine:
    def ready():
        with database.connection_context():
            worker.step(block=0.05)
            machine = Machine.get(Machine.tenant == tenant_id)
        return machine if machine.state == MachineState.READY else None

    return wait_until(ready, AGENT_READY_TIMEOUT, f"tenant {tenant_id}'s agent to report ready")


def pool_rows() -> list[PoolServer]:
    with database.connection_context():
        return list(PoolServer.select().order_by(PoolServer.id))


def test_a_payment_claims_the_pooled_server_whose_agent_fetches_its_config_and_reports_ready(
        pool_world):
    runtime, client, worker, _ = pool_world
    runtime.tasks.top_up_warm_pool()
    [row] = pool_rows()
    slot = runtime.provisioner.data_dir(row.provider_id)
    assert row.state == PoolServerState.AVAILABLE and (slot / "pool.token").exists()
    wait_until(lambda: pool_rows()[0].booted_at, 60, "the pool server to call home")

    tenant_id = pay(client, 1)
    wait_ready(worker, tenant_id)
    [row] = [r for r in pool_rows() if r.provider_id == row.provider_id]
    assert row.tenant_id == tenant_id
    assert row.state == PoolServerState.CONFIGURED and row.sealed_env is None
    # The slot became the tenant's data dir; its one-time token is spent and deleted.
    tenant_dir = runtime.provisioner.data_dir(str(tenant_id))
    assert not slot.exists() and (tenant_dir / "machine.json").exists()
    assert not (tenant_dir / "pool.token").exists()
    assert runtime.provisioner.pids()[str(tenant_id)]

    # A replayed payment claims nothing more; the pool is topped up again to one free server.
    checkout = se.checkout_completed(email="user1@example.com", customer="cus_1",
                                     subscription="sub_1", event_id="evt_c_1")
    assert post_stripe(client, checkout).json["outcome"] == "duplicate"
    runtime.tasks.top_up_warm_pool()
    rows = pool_rows()
    assert [r.tenant_id for r in rows if r.tenant_id] == [tenant_id]
    assert [r.state for r in rows if r.tenant_id is None] == [PoolServerState.AVAILABLE]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'hermes_warm_pool_servers{plan="light",state="available"} 1.0' in metrics
    assert 'hermes_warm_pool_servers{plan="light",state="configured"} 1.0' in metrics


def test_an_empty_pool_falls_back_to_a_cold_create(pool_world):
    runtime, client, worker, _ = pool_world
    tenant_id = pay(client, 2)  # no top-up ran: the pool is empty
    wait_ready(worker, tenant_id)
    assert pool_rows() == []
    assert (runtime.provisioner.data_dir(str(tenant_id)) / "machine.json").exists()


def test_the_config_endpoint_answers_once_and_only_to_the_pool_token(pool_world):
    runtime, _, _, url = pool_world
    token = "t" * 43
    with database.connection_context():
        tenant = Tenant.create(email="x@example.com", plan="light", status="active")
        row = PoolServer.create(plan="light", snapshot="local", provider_id="pool-light-test",
                                token_hash=warm_pool.hash_token(token))
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/api/pool/config").status_code == 401
    assert httpx.get(f"{url}/api/pool/config", headers={"Authorization": "Bearer nope"}
                     ).status_code == 401
    assert httpx.get(f"{url}/api/pool/config", headers=bearer).status_code == 204
    with database.connection_context():
        claimed = warm_pool.claim(tenant.id, "light", "local")
        assert claimed is not None and claimed.id == row.id
        warm_pool.assign(claimed, {"env": {"HERMES_TENANT": str(tenant.id)}, "files": {}},
                         box_from_settings(runtime.settings), None)
    first = httpx.get(f"{url}/api/pool/config", headers=bearer)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    assert first.json() == {"env": {"HERMES_TENANT": str(tenant.id)}, "files": {}}
    assert httpx.get(f"{url}/api/pool/config", headers=bearer).status_code == 404


def test_a_server_is_never_claimed_twice_and_a_replay_gets_its_own_again(client, runtime):
    with database.connection_context():
        tenants = [Tenant.create(email=f"t{i}@example.com", plan="light", status="active")
                   for i in range(8)]
        PoolServer.create(plan="light", snapshot="s1", provider_id="only",
                          token_hash=warm_pool.hash_token("only"))

    def claim(tenant):
        with database.connection_context():
            row = warm_pool.claim(tenant.id, "light", "s1")
            return tenant.id if row is not None else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        winners = [t for t in pool.map(claim, tenants) if t is not None]
    assert len(winners) == 1
    with database.connection_context():
        again = warm_pool.claim(winners[0], "light", "s1")
        assert again is not None and again.provider_id == "only"
        assert PoolServer.get(PoolServer.provider_id == "only").tenant_id == winners[0]
        assert warm_pool.claim(tenants[0].id if tenants[0].id != winners[0] else tenants[1].id,
                               "light", "s1") is None


def test_top_up_fills_the_pool_replaces_it_on_a_new_snapshot_and_sweeps_orphans(
        client, runtime, tmp_path):
    provisioner = LocalProvisioner(tmp_path / "pool-agents", pool_poll_interval=0.2)
    try:
        with database.connection_context():
            report = warm_pool.top_up(provisioner, {"light": 2}, "http://127.0.0.1:9")
            assert len(report.created["light"]) == 2
            assert warm_pool.top_up(provisioner, {"light": 2}, "http://127.0.0.1:9").created == {}
            first = {s.provider_id for s in provisioner.pool_servers()}
            assert first == set(report.created["light"])

            provisioner.pool_image = "v2"  # a new snapshot was pinned
            renewed = warm_pool.top_up(provisioner, {"light": 2}, "http://127.0.0.1:9")
            assert set(renewed.retired) == first and len(renewed.created["light"]) == 2
            assert {s.snapshot for s in provisioner.pool_servers()} == {"v2"}
            assert {r.snapshot for r in PoolServer.select()} == {"v2"}

            orphan = provisioner.create_pool_server("light", "no-row", "http://127.0.0.1:9")
            swept = warm_pool.sweep(provisioner)
            assert swept.orphans == [orphan.provider_id]
            assert orphan.provider_id not in {s.provider_id for s in provisioner.pool_servers()}

            lowered = warm_pool.top_up(provisioner, {"light": 0}, "http://127.0.0.1:9")
            assert len(lowered.retired) == 2 and provisioner.pool_servers() == []
            assert PoolServer.select().count() == 0
    finally:
        provisioner.close()


class BootRecorder:
    """The hcloud stand-in's ``machines``: records each server's cloud-init user data, as the
    VM would receive it (nothing boots)."""

    def __init__(self):
        self.user_data: dict[int, str] = {}

    def boot(self, server, user_data):
        self.user_data[server["id"]] = user_data

    def power_off(self, sid):
        pass

    def power_on(self, sid):
        pass

    def delete(self, sid):
        pass


def test_hetzner_pool_servers_are_claimed_into_the_tenant_stack_and_swept(client, runtime, tmp_path):
    from control.providers.hetzner.archive import LocalDirectoryArchiver, LocalDirectoryRestorer
    from control.providers.hetzner.config import HetznerConfig
    from control.providers.hetzner.provisioner import HetznerProvisioner
    from infra.hetzner_api import make_client
    from rehearsal.engine import MockEngineWorkspace
    from standins.hcloud_api import HcloudStandin

    machines = BootRecorder()
    api = HcloudStandin(machines=machines).start()
    old = api.add_image("hermes-base v1", {"app": "hermes", "role": "base-image"})
    new = api.add_image("hermes-base v2", {"app": "hermes", "role": "base-image"})
    (tmp_path / "agents").mkdir()

    def provisioner(snapshot: int) -> HetznerProvisioner:
        config = HetznerConfig(
            env="test", hcloud_token=api.token, snapshot_id=str(snapshot), network_id="77",
            firewall_label="hermes-firewall=test-tenant", control_url="https://control.test",
            pulumi_backend_url=f"file://{tmp_path}/state", pulumi_passphrase="pool",
            hcloud_endpoint=api.url, archive_dir=str(tmp_path / "archives"),
            lock_dir=str(tmp_path / "locks"), state_dir=str(tmp_path / "provisioner"),
            known_hosts_dir=str(tmp_path / "known_hosts"))
        return HetznerProvisioner(
            config, workspace=MockEngineWorkspace(config.pulumi_backend_url, env_vars={
                "HCLOUD_TOKEN": api.token, "HCLOUD_ENDPOINT": api.url}),
            hcloud_client=make_client(api.token, api.url, poll_interval=0.01),
            archiver=LocalDirectoryArchiver(tmp_path / "agents"),
            restorer=LocalDirectoryRestorer(tmp_path / "agents"))

    hetzner = provisioner(old["id"])
    try:
        with database.connection_context():
            created = warm_pool.top_up(hetzner, {"light": 2}, "https://agents.control.test")
        pool_ids = created.created["light"]
        assert len(pool_ids) == 2
        for sid in map(int, pool_ids):
            server = api.servers[sid]
            assert server["labels"]["pool"] == "light" and "tenant" not in server["labels"]
            assert server["labels"]["snapshot"] == str(old["id"])
            assert "HERMES_AGENT_TOKEN" not in machines.user_data[sid]  # no tenant secret yet
            assert "https://agents.control.test" in machines.user_data[sid]

        with database.connection_context():
            tenant = Tenant.create(email="h@example.com", plan="light", status="active")
            provisioning.request_machine(tenant, "light", enqueue=lambda _: None)
            machine = provisioning.run_provisioning(
                tenant.id, hetzner, {"HERMES_BUS_URL": "sqlite:////var/lib/hermes/bus.db",
                                     "HERMES_LLM": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-x",
                                     "HERMES_CONTROL_URL": "https://agents.control.test"},
                3600, box=box_from_settings(runtime.settings))
            row = PoolServer.get(PoolServer.tenant == tenant.id)
        assert machine.state == MachineState.BOOTING and row.state == PoolServerState.ASSIGNED
        claimed = api.servers[int(row.provider_id)]
        assert claimed["name"] == f"hermes-test-{tenant.id}"
        assert claimed["labels"]["tenant"] == str(tenant.id) and "pool" not in claimed["labels"]
        stack = hetzner.stack_ref(str(tenant.id))
        assert hetzner.runner.outputs(stack)["server_id"] == row.provider_id  # imported
        assert len(api.servers) == 2  # no server was created for the tenant

        # The VM's bootstrap reads its token from its user data and fetches the config once.
        token = yaml.safe_load(machines.user_data[int(row.provider_id)])["write_files"][0]["content"]
        with database.connection_context():
            config = warm_pool.fetch_config(f"Bearer {token.strip()}",
                                            box_from_settings(runtime.settings))
        assert config["env"]["HERMES_TENANT"] == str(tenant.id)
        assert config["env"]["HERMES_AGENT_TOKEN"] and config["env"]["HERMES_DATA_DIR"]

        # The tenant sweep sees the claimed server tracked; the pool sweep deletes an orphan.
        assert hetzner.reconcile({str(tenant.id)}).orphans == []
        orphan = hetzner.create_pool_server("light", "rowless", "https://agents.control.test")
        with database.connection_context():
            assert warm_pool.sweep(hetzner).orphans == [orphan.provider_id]
        assert int(orphan.provider_id) not in api.servers

        # A new snapshot: the unclaimed old-snapshot server is replaced, the tenant's kept.
        renewed = provisioner(new["id"])
        with database.connection_context():
            report = warm_pool.top_up(renewed, {"light": 1}, "https://agents.control.test")
        [spare] = [p for p in pool_ids if p != row.provider_id]
        assert report.retired == [spare] and int(spare) not in api.servers
        [fresh] = report.created["light"]
        assert api.servers[int(fresh)]["labels"]["snapshot"] == str(new["id"])
        assert int(row.provider_id) in api.servers
    finally:
        api.stop()


def test_the_vm_bootstrap_waits_for_its_claim_then_writes_the_env_file_and_files(pool_world,
                                                                                  tmp_path):
    runtime, _, _, url = pool_world
    token_file = tmp_path / "pool.token"
    token_file.write_text("vm-token\n")
    with database.connection_context():
        tenant = Tenant.create(email="vm@example.com", plan="light", status="active")
        PoolServer.create(plan="light", snapshot="local", provider_id="vm-1",
                          token_hash=warm_pool.hash_token("vm-token"))
    boot = subprocess.Popen(
        [sys.executable, "-m", "agent.pool_boot", "--control-url", url, "--token-file",
         str(token_file), "--write-env", str(tmp_path / "etc" / "agent.env"), "--interval", "0.1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: pool_rows()[0].booted_at, 30, "the bootstrap's first poll")
        assert boot.poll() is None  # unclaimed: it keeps polling
        with database.connection_context():
            row = warm_pool.claim(tenant.id, "light", "local")
            warm_pool.assign(row, {"env": {"HERMES_TENANT": str(tenant.id),
                                           "HERMES_AGENT_TOKEN": 'a"b$c'},
                                   "files": {str(tmp_path / "etc" / "ca.pem"): "PEM\n"}},
                             box_from_settings(runtime.settings), None)
        assert boot.wait(timeout=30) == 0, boot.stdout.read()
    finally:
        boot.kill()
    env_file = tmp_path / "etc" / "agent.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert sorted(env_file.read_text().splitlines()) == [
        'HERMES_AGENT_TOKEN="a\\"b\\$c"', f'HERMES_TENANT="{tenant.id}"']
    assert (tmp_path / "etc" / "ca.pem").read_text() == "PEM\n"
    assert not token_file.exists()  # spent
