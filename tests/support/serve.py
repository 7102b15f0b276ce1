"""Drive a real `hermes serve` subprocess in end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from standins import stripe_events

STRIPE_SECRET = "whsec_e2e"
TELEGRAM_SECRET = "e2e-telegram-secret"
ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout: float, what: str):
    """Return ``predicate()``'s first truthy value, polling every 0.1 s; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """A running `hermes serve` with the Telegram and Anthropic stand-ins as its internet.

    Args:
        tmp: a directory for the data dir and ``serve.log``.
        telegram: a started ``TelegramBotApiStandin``.
        anthropic: a started ``AnthropicStandin``.
        extra_env: more environment (e.g. ``REDIS_URL``).
    """

    def __init__(self, tmp: Path, telegram, anthropic, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT),
            "HERMES_DATA_DIR": str(self.data_dir), "HERMES_PORT": str(self.port),
            "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_API_BASE": telegram.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": anthropic.base_url,
            "HERMES_VISIBILITY_TIMEOUT": "3", "HERMES_EDIT_INTERVAL": "0.2",
            **(extra_env or {}),
        }
        self.log_path = tmp / "serve.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=self.env,
                                        cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        wait_until(self._healthy, 60, "hermes serve /healthz")

    def _healthy(self) -> bool:
        assert self.process.poll() is None, "hermes serve exited"
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``hermes ARGS`` against the same data dir."""
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, check=False)

    def stripe(self, event: dict) -> httpx.Response:
        """POST a Stripe event signed with the endpoint secret."""
        body = json.dumps(event).encode()
        return self.http.post("/webhooks/stripe", content=body,
                              headers={"Stripe-Signature": stripe_events.sign(body, STRIPE_SECRET)})

    def telegram(self, update: dict) -> httpx.Response:
        """POST a Telegram Update with the webhook secret."""
        return self.http.post("/webhooks/telegram", json=update,
                              headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})

    def agent_dir(self, email: str) -> Path:
        """Return the data dir of the tenant with ``email``'s local agent."""
        tenant_id = json.loads(self.cli("tenants", "show", email).stdout)["id"]
        return self.data_dir / "agents" / str(tenant_id)

    @staticmethod
    def agent_pid(agent_dir: Path) -> int | None:
        """Return the pid in the agent's readiness file, or None while it is not ready."""
        ready = agent_dir / "agent.ready"
        return json.loads(ready.read_text())["pid"] if ready.exists() else None

    def stop(self) -> int:
        """SIGTERM the server, wait for it, return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.log.close()
        return self.process.returncode
