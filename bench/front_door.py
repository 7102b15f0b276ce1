"""Web front door under load (issue 10): dashboard and chat-stream time to first byte.

    python bench/front_door.py [--users 20] [--rounds 10]

Production wiring on loopback: ``hermes db upgrade``, then gunicorn with the control role's
worker model (``--worker-class gthread``, ``control.gunicorn_conf``) serving
``control:create_app()`` and ``hermes worker`` (the delivery worker) on an embedded SQLite
database and bus, behind a trusted proxy hop (``HERMES_PROXY_HOPS=1``: each simulated user
sends its own ``X-Forwarded-For``, as nginx would, so the login rate limit applies per person).
``--users`` accounts with a paid plan and a ready machine sign in, then each runs ``--rounds``
of: ``GET /dashboard``; ``POST /dashboard/chat/messages``; ``GET
/dashboard/chat/stream/<id>`` read to its ``final`` event.  All users run at once.

Times in milliseconds from sending the request: ``*_ttfb_ms`` to the first response byte,
``chat_final_ms`` from the POST to the stream's ``final`` event.  The agents are one
zero-latency echo consumer on the bus (``EchoAgent``: a delta, then the final), so the figures
are the web tier's and the delivery path's, not a model's (``bench/skeleton.py`` has those).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import GunicornServer, free_port, percentile, stop_process, upgrade_database

PASSWORD = "bench passphrase 123"


def _seed(data_dir: Path, users: int) -> tuple[list[str], list[str]]:
    """Create ``users`` accounts with an active plan and a ready machine; return their e-mails
    and tenant ids."""
    from control.db import init_database
    from control.models import Machine, MachineState, Tenant, utcnow
    from control.services.accounts import create_account

    db = init_database(f"sqlite:///{data_dir}/control.db", upgrade=False)
    emails = [f"user{i}@bench.example" for i in range(users)]
    tenants = []
    with db.connection_context():
        for email in emails:
            account = create_account(email, PASSWORD)
            tenants.append(str(account.tenant_id))
            Tenant.update(plan="light", status="active").where(
                Tenant.id == account.tenant_id).execute()
            Machine.create(tenant=account.tenant_id, plan="light", state=MachineState.READY, ready_at=utcnow())
    db.close()
    return emails, tenants


class EchoAgent(threading.Thread):
    """Every tenant's agent at zero latency: answers each envelope on ``hermes:messages:<id>``
    with a ``delta`` then a ``final`` event (the wire protocol's), as a real agent would."""

    def __init__(self, bus_url: str, tenants: list[str]):
        super().__init__(daemon=True)
        from wire.factory import bus_from_url

        self.bus = bus_from_url(bus_url)
        self.tenants = tenants
        self.stopping = threading.Event()

    def run(self) -> None:
        from wire.protocol import AGENT_GROUP, Envelope, Event, events_stream, messages_stream

        streams = [messages_stream(t) for t in self.tenants]
        while not self.stopping.is_set():
            for delivery in self.bus.read(streams, AGENT_GROUP, "bench-echo", count=50, block=0.05):
                envelope = Envelope.from_json(delivery.payload)
                answer = f"echo: {envelope.text}"
                for seq, (kind, text) in enumerate((("delta", answer[:4]), ("final", answer))):
                    event = Event(message_id=envelope.id, seq=seq, kind=kind, text=text,
                                  tenant=envelope.tenant, channel=envelope.channel,
                                  chat_id=envelope.chat_id)
                    self.bus.append(events_stream(envelope.tenant), event.to_json(),
                                    idempotency_key=f"{envelope.id}:{seq}")
                self.bus.ack(delivery.stream, AGENT_GROUP, delivery.entry_id)
        self.bus.close()


def _ttfb(client: httpx.Client, method: str, url: str, **kwargs) -> tuple[float, int]:
    """Return (milliseconds to the first body byte, status)."""
    started = time.perf_counter()
    with client.stream(method, url, **kwargs) as response:
        next(response.iter_raw(1), b"")
        return (time.perf_counter() - started) * 1000, response.status_code


class User(threading.Thread):
    """One signed-in person running the dashboard and chat rounds."""

    def __init__(self, base: str, email: str, address: str, rounds: int, start: threading.Event):
        super().__init__(daemon=True)
        self.email, self.rounds, self.start_event = email, rounds, start
        self.client = httpx.Client(base_url=base, timeout=60,
                                   headers={"X-Forwarded-For": address, "Accept": "text/html"})
        self.dashboard_ms: list[float] = []
        self.stream_ms: list[float] = []
        self.final_ms: list[float] = []
        self.errors: dict[str, int] = {}

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def sign_in(self) -> str:
        page = self.client.get("/login").text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        answer = self.client.post("/login", data={"csrf_token": token, "email": self.email,
                                                  "password": PASSWORD})
        if answer.status_code != 302:
            raise RuntimeError(f"login of {self.email} answered {answer.status_code}")
        chat = self.client.get("/dashboard/chat").text
        return re.search(r'data-csrf="([^"]+)"', chat).group(1)

    def run(self) -> None:
        csrf = self.sign_in()
        self.start_event.wait()
        for i in range(self.rounds):
            ms, status = _ttfb(self.client, "GET", "/dashboard")
            self.dashboard_ms.append(ms) if status == 200 else self._error(f"dashboard {status}")
            posted = time.perf_counter()
            sent = self.client.post("/dashboard/chat/messages", json={"text": f"round {i}"},
                                    headers={"X-CSRFToken": csrf, "Accept": "application/json"})
            if sent.status_code != 202:
                self._error(f"chat {sent.status_code}")
                continue
            self._follow(sent.json()["stream_url"], posted, f"echo: round {i}")
        self.client.close()

    def _follow(self, url: str, posted: float, expected: str) -> None:
        """Read the reply stream to its ``final`` event, timing the first byte and the final."""
        started = time.perf_counter()
        with self.client.stream("GET", url, headers={"Accept": "text/event-stream"}) as stream:
            if stream.status_code != 200:
                self._error(f"stream {stream.status_code}")
                return
            first = True
            event = None
            for line in stream.iter_lines():
                if first:
                    self.stream_ms.append((time.perf_counter() - started) * 1000)
                    first = False
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("final", "error"):
                    if event == "final" and json.loads(line[5:])["text"] == expected:
                        self.final_ms.append((time.perf_counter() - posted) * 1000)
                    else:
                        self._error(f"reply {event}")
                    return
        self._error("stream ended without a final")


def run(users: int, rounds: int) -> dict:
    """Measure ``users`` concurrent users for ``rounds`` rounds; return the result record."""
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-web-"))
    env = {**os.environ, "HERMES_DATA_DIR": str(tmp / "data"), "HERMES_PORT": str(free_port()),
           "HERMES_PROXY_HOPS": "1", "HERMES_LOG_FORMAT": "json"}
    for name in ("DATABASE_URL", "REDIS_URL", "HERMES_BUS", "HERMES_BUS_URL"):
        env.pop(name, None)
    upgrade_database(env)
    emails, tenants = _seed(tmp / "data", users)
    echo = EchoAgent(f"sqlite:///{tmp / 'data'}/bus.db", tenants)
    echo.start()
    log = open(tmp / "worker.log", "wb")  # noqa: SIM115 (closed below)
    worker = subprocess.Popen([str(Path(sys.executable).parent / "hermes"), "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    server = GunicornServer(env, tmp / "gunicorn.log")
    try:
        with server:
            start = threading.Event()
            crowd = [User(server.base_url, email, f"198.18.{i // 250}.{i % 250 + 1}", rounds, start)
                     for i, email in enumerate(emails)]
            for user in crowd:
                user.start()
            time.sleep(0.5)  # sign-ins are not measured; let them finish before the clock starts
            began = time.monotonic()
            start.set()
            for user in crowd:
                user.join(600)
            seconds = time.monotonic() - began
    finally:
        echo.stopping.set()
        stop_process(worker)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    dashboard = [ms for u in crowd for ms in u.dashboard_ms]
    stream = [ms for u in crowd for ms in u.stream_ms]
    final = [ms for u in crowd for ms in u.final_ms]
    errors: dict[str, int] = {}
    for user in crowd:
        for what, count in user.errors.items():
            errors[what] = errors.get(what, 0) + count
    return {
        "bench": "front_door", "users": users, "rounds": rounds,
        "server": server.description, "seconds": round(seconds, 2),
        "dashboard_ttfb_ms": {"n": len(dashboard), "p50": round(percentile(dashboard, 50), 1),
                              "p99": round(percentile(dashboard, 99), 1)},
        "chat_stream_ttfb_ms": {"n": len(stream), "p50": round(percentile(stream, 50), 1),
                                "p99": round(percentile(stream, 99), 1)},
        "chat_final_ms": {"n": len(final), "p50": round(percentile(final, 50), 1),
                          "p99": round(percentile(final, 99), 1)},
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(run(args.users, args.rounds)))


if __name__ == "__main__":
    main()
