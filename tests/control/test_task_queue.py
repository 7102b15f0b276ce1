"""The control plane's task queue (issue 22): on Redis when the bus is Redis, so `hermes worker`
on another control host runs what this one enqueued; SQLite (one host) stays the embedded
default; a wrong ``HERMES_TASK_QUEUE`` stops start-up with a clear message."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from huey import PriorityRedisHuey, SqliteHuey

from control.errors import ConfigError
from control.settings import Settings
from control.tasks import create_huey


@pytest.fixture
def redis_url(tmp_path):
    """A private redis-server on a free loopback port (never the shared 6379)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server",
                                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: _answers(url), "redis-server to answer PING")
    yield url
    process.terminate()
    process.wait(10)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _host(data_dir: Path, **settings):
    """One control host's Huey with a ``record`` task that writes ``text`` to ``path``."""
    huey = create_huey(Settings(data_dir=str(data_dir), **settings))

    @huey.task(name="record")
    def record(path: str, text: str) -> None:
        Path(path).write_text(text)

    return huey, record


def test_a_task_enqueued_on_one_host_runs_on_another_hosts_worker(tmp_path, redis_url):
    web, record_on_web = _host(tmp_path / "web-host", bus_url=redis_url)
    worker, _ = _host(tmp_path / "worker-host", bus_url=redis_url)
    assert isinstance(web, PriorityRedisHuey)
    consumer = worker.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        done = tmp_path / "done.txt"
        record_on_web(str(done), "provisioned")
        assert _wait(lambda: done.exists() and done.read_text(), "the other host's worker") == "provisioned"
    finally:
        consumer.stop(graceful=True)


def test_sqlite_stays_the_embedded_default(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    assert settings.task_queue == "sqlite"
    huey = create_huey(settings)
    assert isinstance(huey, SqliteHuey)
    huey.storage.enqueue(b"probe")  # the queue file lives in the data directory
    assert (tmp_path / "queue.db").exists()


def test_sqlite_can_be_kept_next_to_a_redis_bus(tmp_path, redis_url):
    settings = Settings(data_dir=str(tmp_path), bus_url=redis_url, task_queue="sqlite")
    assert isinstance(create_huey(settings), SqliteHuey)


@pytest.mark.parametrize(("settings", "message"), [
    ({"task_queue": "rabbitmq"}, "HERMES_TASK_QUEUE must be redis or sqlite, not 'rabbitmq'"),
    ({"task_queue": "redis"}, "HERMES_TASK_QUEUE=redis needs the bus on Redis (REDIS_URL)"),
])
def test_a_wrong_queue_setting_stops_start_up(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(data_dir=str(tmp_path), **settings)
