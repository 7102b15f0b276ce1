"""Jobs API throughput per agent (issue 23): how many jobs one tenant's agent gets through.

    python bench/jobs_throughput.py [--jobs 200] [--chain 20]

In one process, on loopback: the control app (SQLite, werkzeug's threaded server) with the
delivery worker, one tenant's agent as production runs it (``AgentRuntime``, its inbox
listener, a Huey consumer with ``HERMES_WORKERS`` threads, default 2) on the SQLite bus, and
the Anthropic stand-in answering at once (the zero-latency LLM), so the figures are the
platform's overhead per job, not a model's.  The token is made directly (setup) and the API's
rate limit (``control/web/jobs.py``, per token) is switched off for the run.

* ``post_p50_ms`` / ``post_p99_ms``: ``POST /api/jobs`` round trips, ``--jobs`` of them, each
  job independent (the envelope is on the bus when it answers).
* ``jobs_per_s``: those jobs from the first POST until every one is ``done`` (polled with
  ``GET /api/jobs?state=done``); ``job_p50_ms`` / ``job_p99_ms``: each job's ``created_at``
  to ``finished_at``.
* ``chain_hop_ms``: ``--chain`` jobs each depending on the previous, from the first POST to
  the last ``done``, divided by the chain's length: dispatch on the previous one's end,
  agent turn, event back.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx
from bench_support import percentile, wait_until
from werkzeug.serving import make_server

from agent.config import AgentConfig
from agent.listener import InboxListener
from agent.runtime import AgentRuntime
from agent.tasks import AgentTasks
from control import create_app
from control.db import database
from control.models import Job, Machine, Tenant, utcnow
from control.runtime import Runtime
from control.services import jobs
from control.services.delivery import DeliveryWorker
from control.services.secrets_box import box_from_settings
from control.settings import Settings
from control.web.auth import limiter
from standins.anthropic_api import AnthropicStandin, text_reply
from wire import logs
from wire.sqlite_bus import SqliteBus


def _agent(settings: Settings, tenant_id: int, anthropic: AnthropicStandin, data: Path):
    bus = SqliteBus(settings.bus_url.removeprefix("sqlite:///"), visibility_timeout=30,
                    poll_interval=0.01)
    config = AgentConfig(tenant=str(tenant_id), data_dir=str(data / "agent"),
                         bus_url=settings.bus_url, llm="anthropic", anthropic_api_key="bench",
                         anthropic_base_url=anthropic.base_url, memory_extraction=False,
                         delta_interval=0.0, llm_backoff=0.0)
    runtime = AgentRuntime(config, bus=bus)
    tasks = AgentTasks(runtime)
    listener = InboxListener(runtime, tasks)
    consumer = tasks.huey.create_consumer(workers=config.workers, periodic=False,
                                          check_worker_health=False, initial_delay=0.01,
                                          max_delay=0.05)
    consumer.start()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the consumer took it over
    threading.Thread(target=listener.run, daemon=True).start()
    return runtime, listener, consumer


def run(count: int, chain: int) -> dict:
    """Run the benchmark; return its figures (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp, \
            AnthropicStandin(responder=lambda request: text_reply("Done.")) as anthropic:
        data = Path(tmp)
        settings = Settings(data_dir=str(data / "control"), huey_immediate=True)
        runtime = Runtime(settings, upgrade_schema=True)
        app = create_app(settings, runtime)
        limiter.enabled = False
        logs.configure("console", level=logging.WARNING)  # a line per request: most of the work
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        with database.connection_context():
            tenant = Tenant.create(email="bench@example.com", plan="light", status="active")
            Machine.create(tenant=tenant, plan="light", state="ready", ready_at=utcnow())
            _row, token, _secret = jobs.create_token(tenant, "bench", list(jobs.SCOPES),
                                                     box_from_settings(settings))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        agent, listener, consumer = _agent(settings, tenant.id, anthropic, data)
        worker_bus = SqliteBus(settings.bus_url.removeprefix("sqlite:///"), visibility_timeout=30,
                               poll_interval=0.01)
        delivery = DeliveryWorker(worker_bus, runtime.tasks.adapters, lambda: [tenant.id])
        stopping = threading.Event()

        def deliver():
            with database.connection_context():
                delivery.run(stopping)

        threading.Thread(target=deliver, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                result = _measure(client, count, chain)
        finally:
            stopping.set()
            listener.stop()
            consumer.stop(graceful=True)
            server.shutdown()
            agent.close()
            runtime.close()
    return result


def _measure(client: httpx.Client, count: int, chain: int) -> dict:
    posts: list[float] = []
    started = time.perf_counter()
    for n in range(count):
        sent = time.perf_counter()
        answer = client.post("/api/jobs", json={"prompt": f"Job {n}: say done.",
                                                "priority": n % 10})
        answer.raise_for_status()
        posts.append((time.perf_counter() - sent) * 1000)
    # ``GET /api/jobs`` lists at most 100: count done ones from the database instead.
    wait_until(lambda: _count_done() >= count, 600, f"{count} jobs done", interval=0.05)
    elapsed = time.perf_counter() - started
    with database.connection_context():
        spans = [(j.finished_at - j.created_at).total_seconds() * 1000
                 for j in Job.select().where(Job.state == "done") if j.finished_at is not None]
    chain_started = time.perf_counter()
    previous: list[str] = []
    for n in range(chain):
        answer = client.post("/api/jobs", json={"prompt": f"Step {n}: say done.",
                                                "depends_on": previous})
        answer.raise_for_status()
        previous = [answer.json()["id"]]
    wait_until(lambda: client.get(f"/api/jobs/{previous[0]}").json()["state"] == "done", 600,
               "the chain's last job", interval=0.02)
    chain_elapsed = time.perf_counter() - chain_started
    return {"jobs": count, "post_p50_ms": round(percentile(posts, 50), 1),
            "post_p99_ms": round(percentile(posts, 99), 1),
            "jobs_per_s": round(count / elapsed, 1),
            "job_p50_ms": round(percentile(spans, 50), 1),
            "job_p99_ms": round(percentile(spans, 99), 1),
            "chain": chain, "chain_hop_ms": round(chain_elapsed / max(chain, 1) * 1000, 1),
            "failed": _count_state("failed")}


def _count_done() -> int:
    return _count_state("done")


def _count_state(state: str) -> int:
    with database.connection_context():
        return Job.select().where(Job.state == state).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="independent jobs to run")
    parser.add_argument("--chain", type=int, default=20, help="length of the dependency chain")
    args = parser.parse_args()
    print(json.dumps(run(args.jobs, args.chain)))


if __name__ == "__main__":
    main()
