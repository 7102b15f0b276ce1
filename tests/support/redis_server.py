"""A private ``redis-server`` process for tests: a free loopback port, its own temp dir.

Never touches the machine's shared server on 127.0.0.1:6379.  Each server runs in its own
temp dir with an ``aclfile`` (so ``ACL SAVE`` works and tenant users survive restarts) whose
``default`` user, the admin, has the password ``ADMIN_PASSWORD``, and with roles/redis's
``proto-max-bulk-len`` (the per-argument cap a tenant meets in production).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
import yaml

from support.serve import free_port

ADMIN_PASSWORD = "admin-test-password"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROLE_DEFAULTS = Path(__file__).resolve().parents[2] / "roles/redis/defaults/main.yml"
PROTO_MAX_BULK_LEN = yaml.safe_load(ROLE_DEFAULTS.read_text())["redis_proto_max_bulk_len"]


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:``port`` with its data in ``directory``.

    Args:
        directory: data dir (AOF, aclfile, log).
        appendonly: persist every write to the AOF with ``appendfsync always``.
        config: extra ``--name value`` settings, e.g. ``{"stream-node-max-entries": "10"}``.
        tls: ``{"cert": path, "key": path, "ca": path}``: serve TLS only on ``port`` (``port 0``
            and ``tls-auth-clients no``, as roles/redis configures it); ``admin_url`` is then
            ``rediss://`` and must be used with the CA.
    """

    def __init__(self, directory: Path, appendonly: bool = False, config: dict | None = None,
                 tls: dict | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.config = config or {}
        self.tls = tls
        self.process: subprocess.Popen | None = None
        aclfile = self.directory / "users.acl"
        if not aclfile.exists():
            aclfile.write_text(f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n")

    @property
    def admin_url(self) -> str:
        """URL of the admin (``default``) user."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://default:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait (up to 10 s) until it answers PING."""
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.tls["cert"]),
                     "--tls-key-file", str(self.tls["key"]),
                     "--tls-ca-cert-file", str(self.tls["ca"]), "--tls-auth-clients", "no"]
        args = [REDIS_SERVER, *ports, "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--aclfile", str(self.directory / "users.acl"),
                "--save", "", "--logfile", "redis.log", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
                "--proto-max-bulk-len", PROTO_MAX_BULK_LEN]
        for name, value in self.config.items():
            args += [f"--{name}", str(value)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls["ca"])} if self.tls else {}
        client = redis.Redis(host="127.0.0.1", port=self.port, password=ADMIN_PASSWORD,
                             socket_timeout=1.0, **tls)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop(signal.SIGKILL)  # never leave a half-started server behind
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server with ``sig`` (SIGKILL simulates a crash) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case it is paused
            self.process.send_signal(sig)
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop (with ``sig``) and start again on the same port and data dir."""
        self.stop(sig)
        self.start()
