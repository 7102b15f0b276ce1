"""Prometheus metrics the alert rules and dashboards in dashboards/ rely on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support.serve import free_port, wait_until
from support.webhooks import post_telegram

from control.db import database
from control.models import AttentionItem, Machine, Tenant, Usage, utcnow
from control.runtime import Runtime
from control.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_expose_requests_machines_failures_cost_and_bus_backlog(client, runtime):
    with database.connection_context():
        ready = Tenant.create(email="r@example.com", plan="light", status="active")
        Machine.create(tenant=ready, plan="light", state="ready", ready_at=utcnow())
        failed = Tenant.create(email="f@example.com", plan="heavy", status="active")
        Machine.create(tenant=failed, plan="heavy", state="failed")
        AttentionItem.create(kind="provisioning_failed", subject=str(failed.id), detail="boom")
        Usage.create(tenant=ready, model="claude-haiku-4-5", input_tokens=10, output_tokens=5,
                     cost_cents=1.25)
    post_telegram(client, {"update_id": 1}, secret="wrong")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hermes_http_requests_total{route="/webhooks/telegram",status="401"} 1.0' in text
    assert "hermes_http_request_duration_seconds_bucket" in text
    assert 'hermes_machines{state="ready"} 1.0' in text
    assert 'hermes_machines{state="failed"} 1.0' in text
    assert "hermes_provisioning_failures_total 1.0" in text
    assert "hermes_llm_cost_cents_total 1.25" in text
    assert f'hermes_bus_pending{{stream="hermes:messages:{ready.id}"}} 0.0' in text


def healthz_requests(text: str) -> float:
    """Sum of ``hermes_http_requests_total{route="/healthz"}`` in one exposition."""
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "hermes_http_requests_total"
               and sample.labels.get("route") == "/healthz")


def test_request_counter_under_gunicorn_adds_up_every_worker_even_a_dead_one(tmp_path):
    data_dir, multiproc = tmp_path / "data", tmp_path / "prometheus"
    multiproc.mkdir()
    Runtime(Settings(data_dir=str(data_dir)), upgrade_schema=True).db.close()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HERMES_DATA_DIR": str(data_dir),
           "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    gunicorn = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--workers", "3", "--config", "python:control.gunicorn_conf", "control:create_app()"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        # Three workers import the whole app at once, beside the suite's other worker: slow
        # under load (30 s was once not enough in CI).
        wait_until(lambda: _answers(base), 120, "gunicorn to answer")
        before = healthz_requests(httpx.get(f"{base}/metrics").text)
        local = threading.local()

        def hit(_):  # a connection per thread, so the workers share the load
            local.client = getattr(local, "client", None) or httpx.Client(base_url=base)
            return local.client.get("/healthz").status_code

        def send(count: int) -> None:
            with ThreadPoolExecutor(max_workers=6) as pool:
                assert set(pool.map(hit, range(count))) == {200}

        send(30)
        # The kernel may hand every connection to one worker; stopping the one that answered
        # guarantees a second process answers the next batch.
        answered = {p.name for p in multiproc.glob("counter_*.db")}
        worker_pid = int(next(iter(answered)).removeprefix("counter_").removesuffix(".db"))
        os.kill(worker_pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{worker_pid}").exists(), 60, "the worker to exit")
        send(30)
        counters = {p.name for p in multiproc.glob("counter_*.db")}
        assert len(counters) >= 2, f"one worker answered everything: {counters}"
        for _ in range(5):  # each scrape may land on another worker
            assert healthz_requests(httpx.get(f"{base}/metrics").text) - before == 60
    finally:
        gunicorn.terminate()
        _, stderr = gunicorn.communicate(timeout=30)
    assert b"Traceback" not in stderr, stderr.decode()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
