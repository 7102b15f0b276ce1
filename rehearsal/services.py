"""The rehearsal's long-running parts as supervised subprocesses: Redis from the role's
rendered config, moto's S3 server, a fresh Postgres database, and the control plane started
from the control role's rendered units and environment file.

Every process runs in its own process group and is stopped (SIGTERM, then SIGKILL) by
``Processes.stop_all``; every wait has a deadline.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rehearsal.units import ServiceUnit
from rehearsal.vm import stop_process_group


class ServiceError(RuntimeError):
    """A rehearsal service did not start or did not answer in time."""


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2):
    """Return ``predicate()``'s first truthy value, polling every ``interval`` seconds.

    Raises:
        ServiceError: ``timeout`` seconds passed first (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Processes:
    """The rehearsal's subprocesses, by name, each with a log file in ``log_dir``."""

    log_dir: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
              ) -> subprocess.Popen:
        """Start ``argv`` in a new process group, output to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.running[name] = process
        return process

    def check(self) -> None:
        """Raise ``ServiceError`` if a started process has exited (with its log's tail)."""
        for name, process in self.running.items():
            if process.poll() is not None:
                raise ServiceError(f"{name} exited with code {process.returncode}:\n"
                                   f"{self.tail(name)}")

    def tail(self, name: str, size: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop_all(self) -> None:
        """Stop every process group, newest first."""
        for name in reversed(list(self.running)):
            stop_process_group(self.running.pop(name), timeout=15)


def start_redis(processes: Processes, conf: Path, url: str, ca_file: Path,
                timeout: float = 20.0) -> None:
    """Start ``redis-server conf`` and wait until ``url`` answers PING (TLS verified with
    ``ca_file`` for ``rediss://``).

    Raises:
        ServiceError: it exited or did not answer within ``timeout`` seconds.
    """
    import redis

    processes.start("redis", ["redis-server", str(conf)], env={"PATH": os.environ["PATH"]})
    kwargs = {"ssl_ca_certs": str(ca_file)} if url.startswith("rediss://") else {}

    def ping():
        processes.check()
        try:
            return redis.Redis.from_url(url, socket_timeout=2, **kwargs).ping()
        except redis.RedisError:
            return False

    wait_for(ping, timeout, "redis-server to answer PING")


def start_moto(processes: Processes, bucket: str, timeout: float = 30.0) -> dict[str, str]:
    """Start ``moto_server`` (S3) on a free loopback port and create ``bucket``.

    Returns:
        ``{"endpoint", "access_key", "secret_key", "region", "bucket"}``.
    """
    import httpx

    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    processes.start("moto", [str(moto), "-H", "127.0.0.1", "-p", str(port)],
                    env={"PATH": os.environ["PATH"]})
    endpoint = f"http://127.0.0.1:{port}"

    def up():
        processes.check()
        try:
            return httpx.get(endpoint, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, "moto_server")
    creds = {"endpoint": endpoint, "access_key": "rehearsal", "secret_key": "rehearsal-secret",
             "region": "us-east-1", "bucket": bucket}
    s3_client(creds).create_bucket(Bucket=bucket)
    return creds


def s3_client(creds: dict[str, str]):
    """A boto3 S3 client for the moto server described by ``creds``."""
    import boto3

    return boto3.client("s3", endpoint_url=creds["endpoint"], region_name=creds["region"],
                        aws_access_key_id=creds["access_key"],
                        aws_secret_access_key=creds["secret_key"])


class PostgresDatabase:
    """A throw-away database on the local PostgreSQL server (``postgres`` user, trust auth)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres"):
        self.host, self.port, self.user = host, port, user
        self.name = f"hermes_rehearsal_{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"

    def _admin(self):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                dbname="postgres", connect_timeout=5)
        conn.autocommit = True
        return conn

    def _admin_execute(self, sql: str) -> None:
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> None:
        self._admin_execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin_execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql: str, *params) -> list[tuple]:
        """Run one read-only query on the rehearsal database."""
        import psycopg2

        conn = psycopg2.connect(self.url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


def unit_process_env(unit_env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The environment a unit's process gets: systemd's basics, the unit's environment
    file(s), then the rehearsal's own additions (``extra``)."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root"), **unit_env, **extra}


def start_unit(processes: Processes, unit: ServiceUnit, env: dict[str, str]) -> None:
    """Start a host unit's ``ExecStart`` in its ``WorkingDirectory``, with each
    ``RuntimeDirectory`` created empty under ``/run`` as systemd does (``User=`` is not
    applied: the rehearsal runs as root, without systemd)."""
    for name in unit.runtime_directories:
        runtime = Path("/run") / name
        shutil.rmtree(runtime, ignore_errors=True)
        runtime.mkdir(parents=True)
    cwd = Path(unit.working_directory)
    cwd.mkdir(parents=True, exist_ok=True)
    processes.start(unit.name.removesuffix(".service"), unit.argv, env=env, cwd=cwd)
