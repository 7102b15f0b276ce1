"""Shared parts of the end-to-end benchmarks (``bench/skeleton.py``, ``bench/routing.py``).

``Stack`` runs what production runs, on loopback: ``hermes serve`` as a subprocess (control
plane, delivery worker, supervised local agents) on the SQLite or a private Redis bus, the
Telegram Bot API stand-in (the delivery target) and the Anthropic stand-in answering at once
(the zero-latency LLM).  Tenants sign up with signed Stripe events; their chats are linked by
writing ``ChatIdentity`` rows directly (setup, not measured), so a run can use hundreds of
distinct chats and the per-chat edit throttle (``HERMES_EDIT_INTERVAL``, 1 s) never queues
one reply behind another.

Timing: the webhook latency is the ``POST /webhooks/telegram`` round trip (the envelope is on
the bus when it answers 200); the reply latency runs from the POST to the moment the stand-in
applies the first ``sendMessage``/``editMessageText`` showing the complete final text.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, last_user_text, text_reply
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update

STRIPE_SECRET = "whsec_bench"
TELEGRAM_SECRET = "bench-telegram-secret"
ADMIN_PASSWORD = "bench-admin-password"
READY_TIMEOUT = 180.0  # seconds for a tenant's agent to come up
WEBHOOK_ATTEMPTS = 5  # Telegram redelivers an update whose webhook did not answer 200
WEBHOOK_RETRY_DELAY = 0.2  # seconds (Telegram waits longer; shorter keeps the run brief)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until truthy (returned) or raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


class ThrowawayPostgres:
    """A fresh database on the local PostgreSQL server (trust auth), dropped by ``close``."""

    def __init__(self, admin_url: str = POSTGRES_ADMIN):
        import psycopg2

        self.admin_url = admin_url
        self.name = f"hermes_bench_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(admin_url, connect_timeout=3)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{self.name}"')
        conn.close()
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    @property
    def pooled_url(self) -> str:
        """The same database through playhouse's connection pool (``postgresql+pool://``)."""
        return self.url.replace("postgresql://", "postgresql+pool://", 1) + \
            "?max_connections=32&stale_timeout=300"

    def close(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        conn.close()


class PrivateRedis:
    """A throwaway ``redis-server`` (no persistence) with an aclfile and a password-protected admin."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.port = free_port()
        Path(self._dir.name, "users.acl").write_text(f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n")
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self._dir.name, "--aclfile", "users.acl",
             "--save", "", "--appendonly", "no"],
            cwd=self._dir.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._listening, 10, "redis-server")

    @property
    def admin_url(self) -> str:
        return f"redis://default:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._dir.cleanup()


def instant_responder(request: dict):
    """The zero-latency LLM: answers ``echo: <question>`` at once, in one text delta."""
    return text_reply(f"echo: {last_user_text(request)}", chunk=4096)


@dataclass
class ReplyClock:
    """Records when each expected final text first became visible in its chat (monotonic s)."""

    expected: dict[str, str] = field(default_factory=dict)  # final text -> chat id
    seen_at: dict[str, float] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)  # reply prefix -> sendMessage count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_call(self, call, status: int) -> None:
        if status != 200 or call.method not in ("sendMessage", "editMessageText"):
            return
        text = call.params.get("text", "")
        with self.lock:
            if call.method == "sendMessage" and text.startswith("echo: "):
                key = text.split(" ", 2)[1]
                self.created[key] = self.created.get(key, 0) + 1
            if text in self.expected and text not in self.seen_at:
                self.seen_at[text] = call.at


class Stack:
    """``hermes serve`` + stand-ins, started on a temporary data directory.

    Args:
        bus: ``sqlite`` or ``redis``.
        redis_url: admin URL for the Redis bus (needs ``ACL SETUSER``).
        edit_interval: ``HERMES_EDIT_INTERVAL`` in seconds.
        database_url: ``DATABASE_URL`` (default: SQLite in the data directory).
        log_path: where ``hermes serve`` logs (default: in the temporary directory).
    """

    def __init__(self, bus: str = "sqlite", redis_url: str | None = None, edit_interval: float = 1.0,
                 database_url: str | None = None, log_path: str | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-stack-")
        self.data_dir = Path(self._tmp.name) / "data"
        self.data_dir.mkdir()  # hermes serve creates it only for a SQLite database
        self.clock = ReplyClock()
        self.telegram = TelegramBotApiStandin().start()
        self.telegram.on_call = self.clock.on_call
        self.anthropic = AnthropicStandin(responder=instant_responder)
        self.anthropic.start()
        self.port = free_port()
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT),
            "HERMES_DATA_DIR": str(self.data_dir), "HERMES_PORT": str(self.port),
            "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "TELEGRAM_BOT_TOKEN": self.telegram.token, "TELEGRAM_API_BASE": self.telegram.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": self.anthropic.base_url,
            "HERMES_LLM": "anthropic", "HERMES_EDIT_INTERVAL": str(edit_interval),
            "HERMES_BUS": bus,
        }
        self.env.pop("HERMES_BUS_URL", None)
        self.env.pop("REDIS_URL", None)
        self.database_url = database_url or f"sqlite:///{self.data_dir}/control.db"
        self.env["DATABASE_URL"] = self.database_url
        if bus == "redis":
            self.env["REDIS_URL"] = redis_url
        self.log = open(log_path or Path(self._tmp.name) / "serve.log", "wb")  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=ROOT,
                                        env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        self._db = None
        self._update_id = 10_000
        self.webhook_errors: dict[int, int] = {}
        try:
            wait_until(self._healthy, 60, "hermes serve /healthz", interval=0.1)
        except BaseException:
            self.close()
            raise

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"hermes serve exited; see {self.log.name}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def db(self):
        """The control database ``hermes serve`` uses, for setup and checks."""
        if self._db is None:
            from control.db import init_database

            self._db = init_database(self.database_url)
        return self._db

    def signup(self, n: int) -> int:
        """Pay for tenant ``n`` (signed Stripe events), wait for its agent; return the tenant id."""
        from control.models import Machine, Tenant

        email, customer = f"bench{n}@example.com", f"cus_bench{n}"
        for event in (se.subscription_created(customer=customer, subscription=f"sub_{customer}",
                                              plan="light", event_id=f"evt_s_{customer}"),
                      se.checkout_completed(email=email, customer=customer,
                                            subscription=f"sub_{customer}", event_id=f"evt_c_{customer}")):
            body = json.dumps(event).encode()
            response = self.http.post("/webhooks/stripe", content=body,
                                      headers={"Stripe-Signature": se.sign(body, STRIPE_SECRET)})
            response.raise_for_status()

        def ready():
            with self.db().connection_context():
                tenant = Tenant.get_or_none(Tenant.email == email)
                machine = tenant and Machine.get_or_none(Machine.tenant == tenant)
                if machine is not None and machine.state == "failed":
                    raise RuntimeError(f"provisioning failed: {machine.detail}")
                return tenant.id if machine is not None and machine.state == "ready" else None

        return wait_until(ready, READY_TIMEOUT, f"{email}'s agent", interval=0.2)

    def tenant_without_agent(self, email: str) -> int:
        """Create an active tenant with no machine: its envelopes stay on the bus (webhook-only runs)."""
        from control.models import Tenant

        with self.db().connection_context():
            return Tenant.create(email=email, plan="light", status="active").id

    def link_chats(self, tenant_id: int, chat_ids: list[int]) -> None:
        """Link ``chat_ids`` to the tenant (what a redeemed ``/start`` token records)."""
        from control.models import ChatIdentity

        with self.db().connection_context(), self.db().atomic():
            for chat_id in chat_ids:
                ChatIdentity.get_or_create(channel="telegram", chat_id=str(chat_id),
                                           defaults={"user_id": str(chat_id), "tenant": tenant_id})

    def send(self, chat_id: int, text: str) -> tuple[float, float, int]:
        """Post a Telegram update with ``text``, retrying a non-200 answer as Telegram would.

        Returns:
            ``(sent_at, webhook seconds of the first attempt, final status)``; every non-200
            answer is counted in ``webhook_errors`` (status -> count).
        """
        with self.clock.lock:
            self._update_id += 1
            update_id = self._update_id
            self.clock.expected[f"echo: {text}"] = str(chat_id)
        body = json.dumps(text_update(update_id, chat_id, text)).encode()
        headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET, "Content-Type": "application/json"}
        started = time.monotonic()
        first = None
        for attempt in range(WEBHOOK_ATTEMPTS):
            status = self.http.post("/webhooks/telegram", content=body, headers=headers).status_code
            first = first if first is not None else time.monotonic() - started
            if status == 200:
                break
            with self.clock.lock:
                self.webhook_errors[status] = self.webhook_errors.get(status, 0) + 1
            time.sleep(WEBHOOK_RETRY_DELAY)
        return started, first, status

    def reply_at(self, text: str) -> float | None:
        """When ``echo: <text>`` became visible, or None."""
        with self.clock.lock:
            return self.clock.seen_at.get(f"echo: {text}")

    def duplicates(self) -> int:
        """Replies that created more than one message (each extra message counts once)."""
        with self.clock.lock:
            return sum(count - 1 for count in self.clock.created.values() if count > 1)

    def close(self) -> None:
        """Stop ``hermes serve`` (SIGTERM: it stops its agents) and the stand-ins."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        if self._db is not None:
            self._db.close()
        self.telegram.stop()
        self.anthropic.stop()
        self.log.close()
        self._tmp.cleanup()
