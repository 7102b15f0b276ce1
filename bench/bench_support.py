"""Shared parts of the end-to-end benchmarks (``bench/skeleton.py``, ``bench/routing.py``, and
``GunicornServer`` for the web-tier ones: ``front_door``, ``discord_webhook``, ``slack_webhook``,
``whatsapp_webhook``; the last two also share ``web_tier``, ``open_loop`` and ``ack_record``).

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

import argparse
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


WORKERS, THREADS = 2, 8  # the control role's defaults are 3 x 8; this machine has 2 cores


def upgrade_database(env: dict[str, str]) -> None:
    """Run ``hermes db upgrade`` with ``env`` (what the control role does before gunicorn starts).

    Raises:
        subprocess.CalledProcessError: the upgrade failed.
    """
    subprocess.run([str(Path(sys.executable).parent / "hermes"), "db", "upgrade"], env=env,
                   check=True, capture_output=True)


class GunicornServer:
    """``control:create_app()`` under gunicorn with the control role's worker model
    (``--worker-class gthread``, ``control.gunicorn_conf``) on loopback; a context manager.

    Starting waits for ``GET /healthz`` to answer 200; stopping sends SIGTERM (gunicorn's
    graceful stop) and kills after 60 s.

    Args:
        env: the app's environment; its ``HERMES_PORT`` is the port bound on 127.0.0.1.
        log_path: file receiving gunicorn's and the app's output (appended; read it after
            ``stop`` for the request log).
        workers, threads: gunicorn workers and threads per worker.
        ready_timeout: seconds to wait for ``/healthz``.

    Raises (on entering):
        RuntimeError: gunicorn exited while starting.
        TimeoutError: ``/healthz`` did not answer 200 within ``ready_timeout``.
    """

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = WORKERS,
                 threads: int = THREADS, ready_timeout: float = 60.0):
        self.env, self.log_path = env, Path(log_path)
        self.workers, self.threads, self.ready_timeout = workers, threads, ready_timeout
        self.base_url = f"http://127.0.0.1:{env['HERMES_PORT']}"
        self.process: subprocess.Popen | None = None

    @property
    def description(self) -> str:
        """``gunicorn gthread <workers>x<threads>``, as the bench results name the server."""
        return f"gunicorn gthread {self.workers}x{self.threads}"

    def start(self) -> GunicornServer:
        """Start gunicorn and wait until it serves; returns ``self``."""
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"),
                 "--bind", f"127.0.0.1:{self.env['HERMES_PORT']}", "--workers", str(self.workers),
                 "--worker-class", "gthread", "--threads", str(self.threads), "--timeout", "30",
                 "--config", "python:control.gunicorn_conf", "control:create_app()"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._healthy, self.ready_timeout, "gunicorn /healthz")
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {self.process.returncode}; "
                               f"see {self.log_path}")
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop gunicorn (SIGTERM, then SIGKILL after 60 s); safe to call twice."""
        if self.process is None or self.process.poll() is not None:
            return
        stop_process(self.process)

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def stop_process(process: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM ``process`` and wait ``timeout`` s for it, then kill it."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        from control.models import Machine, MachineState, Tenant

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
                if machine is not None and machine.state == MachineState.FAILED:
                    raise RuntimeError(f"provisioning failed: {machine.detail}")
                return tenant.id if machine is not None and machine.state == MachineState.READY else None

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
        for _attempt in range(WEBHOOK_ATTEMPTS):
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


def redelivery_plan(total: int, fraction: float) -> list[tuple[int, bool]]:
    """What each of ``total`` open-loop requests sends: ``(event index, redelivered)``.

    Request k sends a new event, except every ``round(1 / fraction)``-th, which sends the
    previous event again (as Slack and Meta redeliver a webhook); ``fraction`` 0: none again.
    """
    every = max(1, round(1 / fraction)) if fraction > 0 else 0
    plan: list[tuple[int, bool]] = []
    fresh = 0
    for k in range(total):
        if every and k % every == every - 1:
            plan.append((fresh - 1, True))
        else:
            plan.append((fresh, False))
            fresh += 1
    return plan


def sequential_ms(client: httpx.Client, path: str,
                  requests: list[tuple[bytes, dict[str, str]]]) -> list[float]:
    """POST each ``(body, headers)`` to ``path`` one at a time: the service time without
    queueing; returns each round trip in ms."""
    times = []
    for body, headers in requests:
        sent = time.monotonic()
        client.post(path, content=body, headers=headers)
        times.append((time.monotonic() - sent) * 1000)
    return times


@dataclass
class OpenLoop:
    """What an open loop saw: ``ack_ms`` from each answered request's scheduled send time to its
    answer, answers counted by status (or transport error name), the answers' ``outcomes``, and
    ``elapsed`` seconds from the loop's start (its 0.5 s lead included)."""

    ack_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0


def open_loop(client: httpx.Client, path: str, rate: float, total: int,
              request: Callable[[int], tuple[bytes, dict[str, str]]],
              outcomes_of: Callable[[httpx.Response], list[str]]) -> OpenLoop:
    """POST ``request(k)`` (body, headers) to ``path`` at ``start + k / rate`` for k < ``total``
    from 48 threads, ``start`` 0.5 s ahead; a sender falling behind is counted, not hidden.

    ``outcomes_of`` names the outcomes of a 200 answer; a transport error is counted under its
    exception name, as the platform would count a missing answer.
    """
    loop = OpenLoop()
    lock = threading.Lock()

    def send(k: int) -> None:
        scheduled = start + k / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body, headers = request(k)
        try:
            answer = client.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            with lock:
                loop.statuses[type(exc).__name__] = loop.statuses.get(type(exc).__name__, 0) + 1
            return
        done = time.monotonic()
        with lock:
            loop.ack_ms.append((done - scheduled) * 1000)
            loop.statuses[str(answer.status_code)] = loop.statuses.get(str(answer.status_code), 0) + 1
            if answer.status_code == 200:
                for outcome in outcomes_of(answer):
                    loop.outcomes[outcome] = loop.outcomes.get(outcome, 0) + 1

    start = time.monotonic() + 0.5
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=48) as executor:
        list(executor.map(send, range(total)))
    loop.elapsed = time.monotonic() - began
    return loop


def percentile_figures(name: str, values_ms: list[float]) -> dict[str, float]:
    """``<name>_p50_ms`` and ``<name>_p99_ms`` of ``values_ms``, rounded to 0.01 ms."""
    return {f"{name}_p50_ms": round(percentile(values_ms, 50), 2),
            f"{name}_p99_ms": round(percentile(values_ms, 99), 2)}


def ack_figures(ack_ms: list[float], elapsed: float) -> dict[str, float]:
    """An open loop's figures: ``requests`` timed, ``achieved_rate`` (per s over ``elapsed`` s)
    and the ack latency's p50, p99 and maximum in ms.

    Raises:
        ValueError: ``ack_ms`` is empty (nothing was answered).
    """
    return {"requests": len(ack_ms), "achieved_rate": round(len(ack_ms) / elapsed, 1),
            **percentile_figures("ack", ack_ms), "ack_max_ms": round(max(ack_ms), 2)}


def stream_length(bus_url: str, tenant: str) -> int:
    """How many envelopes the tenant's messages stream holds on the bus at ``bus_url``."""
    from wire.factory import bus_from_url
    from wire.protocol import messages_stream

    bus = bus_from_url(bus_url)
    try:
        return bus.length(messages_stream(tenant))
    finally:
        bus.close()


def ack_arguments(doc: str, retries_help: str) -> argparse.Namespace:
    """The command line of the webhook ack benches that redeliver (``slack_webhook``,
    ``whatsapp_webhook``): ``--rate``, ``--seconds``, ``--users``, ``--retries``."""
    parser = open_loop_parser(doc, "requests per second (retries included)")
    parser.add_argument("--retries", type=float, default=0.05, help=retries_help)
    return parser.parse_args()


def open_loop_parser(doc: str, rate_help: str, users_help: str | None = None) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line with ``--rate`` (default 200 /s),
    ``--seconds`` (10) and ``--users`` (50)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help=rate_help)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=50, help=users_help)
    return parser


@dataclass
class WebTier:
    """What ``web_tier`` yields: the app's data directory, its database and bus, its (not yet
    started) server and a client for it."""

    data_dir: Path
    postgres: ThrowawayPostgres
    redis: PrivateRedis
    server: GunicornServer
    client: httpx.Client


@contextmanager
def web_tier(name: str, settings: dict[str, str]) -> Iterator[WebTier]:
    """Production's web tier on loopback for the ``name`` bench: a throwaway PostgreSQL database
    (``DATABASE_URL``, upgraded with ``hermes db upgrade``) and a private ``redis-server`` bus
    (``REDIS_URL``), the app's environment plus ``settings``, and a ``GunicornServer`` logging
    to ``gunicorn.log``; seed the database, then ``server.start()``.  Everything is stopped and
    removed on exit.

    Raises:
        subprocess.CalledProcessError: the upgrade failed.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"hermes-bench-{name}-"))
    postgres, redis = ThrowawayPostgres(), PrivateRedis()
    env = {**os.environ, "HERMES_DATA_DIR": str(tmp / "data"), "HERMES_PORT": str(free_port()),
           "HERMES_LOG_FORMAT": "json", **settings,
           "DATABASE_URL": postgres.url, "REDIS_URL": redis.admin_url}
    for variable in ("HERMES_BUS", "HERMES_BUS_URL"):
        env.pop(variable, None)
    upgrade_database(env)
    server = GunicornServer(env, tmp / "gunicorn.log")
    client = httpx.Client(base_url=server.base_url, timeout=30,
                          limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
    try:
        yield WebTier(tmp / "data", postgres, redis, server, client)
    finally:
        client.close()
        server.stop()
        postgres.close()
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)


def ack_record(bench: str, tier: WebTier, rate: float, seconds: float, loop: OpenLoop,
               unique: tuple[str, int], published: int, sequential: list[float]) -> dict:
    """The JSON record of a redelivering ack bench (``slack_webhook``, ``whatsapp_webhook``):
    the setup, ``ack_figures``, the answers, ``unique`` as ``(key, count)`` next to the
    envelopes ``published`` by the open loop, the ``sequential`` service times and the host's
    1-minute load average and CPU count (this host is shared)."""
    return {
        "bench": bench, "server": tier.server.description,
        "database": "postgresql (pooled)", "bus": "redis",
        "rate": rate, "seconds": seconds, **ack_figures(loop.ack_ms, loop.elapsed),
        "statuses": loop.statuses, "outcomes": loop.outcomes,
        unique[0]: unique[1], "published": published,
        **percentile_figures("sequential", sequential),
        "load_average": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
    }
