"""End to end on the production transport: `hermes serve` on a Redis bus with per-tenant ACLs.

A private `redis-server` (AOF, an aclfile whose `default` user is the password-protected admin)
runs on a free loopback port; `hermes serve` gets its admin URL as REDIS_URL with
HERMES_BUS=redis, and each tenant's agent must get only its own ACL user's URL.  Telegram and
Anthropic are the local stand-ins; Stripe events are signed with Stripe's scheme.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from support.serve import ServeProcess, free_port, wait_until

from control.db import init_database
from control.models import Machine, Tenant, utcnow
from control.providers.local import LocalProvisioner
from control.services import provisioning
from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, echo_responder, last_user_text, text_reply
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update
from wire.errors import BusAuthError
from wire.protocol import events_stream, messages_stream

ADMIN_PASSWORD = "redis-e2e-admin"
SLOW_PROMPT = "think slowly over redis"


class PrivateRedis:
    """A `redis-server` on a free port with AOF and an aclfile (the tests/wire pattern)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        (directory / "users.acl").write_text(f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n")

    @property
    def admin_url(self) -> str:
        return f"redis://default:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--aclfile", str(self.directory / "users.acl"),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--logfile", "redis.log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 10, "redis-server to answer PING")
        return self

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.admin_url, socket_timeout=1)
        try:
            return client.ping()
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class SlowOnce:
    """Echoes, except that the first request for SLOW_PROMPT hangs (the agent is mid-turn)."""

    def __init__(self):
        self.slow_requests = 0

    def __call__(self, request: dict):
        if last_user_text(request) == SLOW_PROMPT:
            self.slow_requests += 1
            return text_reply("too late", delay=60) if self.slow_requests == 1 else \
                text_reply("Considered over Redis.")
        return echo_responder(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    responder = SlowOnce()
    with TelegramBotApiStandin() as telegram, AnthropicStandin(responder=responder) as anthropic:
        serve = ServeProcess(tmp_path_factory.mktemp("serve"), telegram, anthropic,
                             {"HERMES_BUS": "redis", "REDIS_URL": server.admin_url, "HERMES_LLM": "anthropic"})
        try:
            yield serve, server, telegram, responder
        finally:
            serve.stop()
            server.stop()


def signup_and_link(serve, telegram, n: int) -> tuple[int, int]:
    """Pay, wait for the machine, link chat ``700000 + n``; return ``(tenant id, chat id)``."""
    email, customer, chat_id = f"redis{n}@example.com", f"cus_redis{n}", 700000 + n
    assert serve.stripe(se.subscription_created(customer=customer, subscription=f"sub_{customer}",
                                                plan="light", event_id=f"evt_s_{customer}")).status_code == 200
    assert serve.stripe(se.checkout_completed(email=email, customer=customer, subscription=f"sub_{customer}",
                                              event_id=f"evt_c_{customer}")).status_code == 200
    printed = wait_until(lambda: (r := serve.cli("tenants", "link-token", email)).returncode == 0 and r.stdout,
                         180, f"{email}'s machine to become ready")
    token = printed.split("token:")[1].split()[0]
    serve.telegram(text_update(n * 1000, chat_id, f"/start {token}"))
    wait_until(lambda: any(m.text.startswith("Linked!") for m in telegram.chat_messages(chat_id)),
               30, "the link confirmation")
    tenant_id = json.loads(serve.cli("tenants", "show", email).stdout)["id"]
    return tenant_id, chat_id


def replies(telegram, chat_id: int, prefix: str) -> list[str]:
    return [m.text for m in telegram.chat_messages(chat_id) if m.text.startswith(prefix)]


def settled(server: PrivateRedis, tenant_id: int) -> bool:
    """Every message of the tenant handled and every event delivered: each consumer group has
    read its stream to the end (lag 0) and acknowledged all of it (no pending entry), so a
    duplicate answer, if there were one, would already be at the stand-in."""
    admin = redis.Redis.from_url(server.admin_url, decode_responses=True)
    try:
        groups = [group for stream in (messages_stream(str(tenant_id)), events_stream(str(tenant_id)))
                  for group in admin.xinfo_groups(stream)]
    finally:
        admin.close()
    return bool(groups) and all(g["lag"] == 0 and g["pending"] == 0 for g in groups)


def agent_env(serve: ServeProcess, tenant_id: int) -> dict:
    return json.loads((serve.data_dir / "agents" / str(tenant_id) / "machine.json").read_text())["env"]


def test_agent_on_redis_gets_only_its_tenant_user_and_answers(stack):
    serve, _, telegram, _ = stack
    tenant_id, chat_id = signup_and_link(serve, telegram, 1)
    assert serve.telegram(text_update(1001, chat_id, "hello over redis")).json()["outcome"] == "published"
    wait_until(lambda: replies(telegram, chat_id, "echo:") == ["echo: hello over redis"], 60,
               "the agent's reply")
    url = agent_env(serve, tenant_id)["HERMES_BUS_URL"]
    assert urlparse(url).username == f"hermes-tenant-{tenant_id}" and ADMIN_PASSWORD not in url
    agent = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert agent.xlen(events_stream(str(tenant_id))) >= 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.xadd(messages_stream(str(tenant_id)), {"payload": "{}"})  # cannot forge user input
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.xlen(messages_stream(str(tenant_id + 1)))  # nor touch another tenant
    finally:
        agent.close()
    assert serve.http.get("/readyz").status_code == 200


def test_agent_killed_mid_turn_on_redis_answers_exactly_once(stack):
    serve, server, telegram, responder = stack
    tenant_id, chat_id = signup_and_link(serve, telegram, 2)
    ready = serve.data_dir / "agents" / str(tenant_id) / "agent.ready"
    pid = json.loads(ready.read_text())["pid"]
    serve.telegram(text_update(2001, chat_id, SLOW_PROMPT))
    wait_until(lambda: responder.slow_requests == 1, 60, "the agent to be mid-turn")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: ready.exists() and json.loads(ready.read_text())["pid"] != pid, 60,
               "the supervisor's restart")
    wait_until(lambda: replies(telegram, chat_id, "Considered"), 60, "the answer after the restart")
    wait_until(lambda: settled(server, tenant_id), 30, "every message handled and every event delivered")
    texts = [m.text for m in telegram.chat_messages(chat_id) if m.text in ("too late", "Considered over Redis.")]
    assert texts == ["Considered over Redis."]


def test_redis_down_makes_webhooks_503_and_loses_nothing(stack):
    serve, server, telegram, _ = stack
    tenant_id, chat_id = signup_and_link(serve, telegram, 3)
    before = text_update(3001, chat_id, "sent before the outage")
    assert serve.telegram(before).json()["outcome"] == "published"
    server.stop()
    during = text_update(3002, chat_id, "sent during the outage")
    assert serve.telegram(during).status_code == 503  # Telegram retries the update later
    assert serve.http.get("/readyz").status_code == 503
    server.start()
    retried = wait_until(lambda: (r := serve.telegram(during)).status_code == 200 and r, 30,
                         "the retried update to be accepted")
    assert retried.json()["outcome"] == "published"
    wait_until(lambda: len(replies(telegram, chat_id, "echo:")) == 2, 90, "both answers")
    wait_until(lambda: settled(server, tenant_id), 30, "every message handled and every event delivered")
    assert sorted(replies(telegram, chat_id, "echo:")) == ["echo: sent before the outage",
                                                          "echo: sent during the outage"]


def test_tenant_bus_access_is_granted_then_revoked_on_deprovisioning(tmp_path):
    server = PrivateRedis(tmp_path).start()
    try:
        db = init_database(f"sqlite:///{tmp_path}/control.db")
        with db.connection_context():
            tenant = Tenant.create(email="acl@example.com", plan="light", status="canceled")
            Machine.create(tenant=tenant, plan="light", state="ready", ready_at=utcnow())
            assert provisioning.tenant_bus_url("sqlite:////x/bus.db", str(tenant.id)) == "sqlite:////x/bus.db"
            url = provisioning.tenant_bus_url(server.admin_url, str(tenant.id))
            agent = redis.Redis.from_url(url)
            agent.ping()
            agent.close()
            provisioner = LocalProvisioner(tmp_path / "agents")
            try:
                machine = provisioning.run_deprovisioning(tenant.id, provisioner, bus_url=server.admin_url)
            finally:
                provisioner.close()
            assert machine.state == "deprovisioned"
        admin = redis.Redis.from_url(server.admin_url, decode_responses=True)
        assert f"hermes-tenant-{tenant.id}" not in admin.acl_users()
        admin.close()
        from wire.redis_bus import connect
        with pytest.raises(BusAuthError):
            connect(url)
        db.close()
    finally:
        server.stop()
