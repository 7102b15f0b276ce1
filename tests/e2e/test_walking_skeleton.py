"""End to end: `hermes serve` as a subprocess, Stripe → machine → Telegram link → Claude reply.

Only the internet's edge is replaced: Telegram's Bot API and Anthropic's Messages API (SSE
streaming) by local stand-ins speaking their wire formats; Stripe events are signed with
Stripe's scheme from Stripe's published objects.
"""

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
import pytest

from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, echo_responder, last_user_text, text_reply
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update

STRIPE_SECRET = "whsec_e2e"
TELEGRAM_SECRET = "e2e-telegram-secret"
SLOW_PROMPT = "please think slowly about this"


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class SlowOnceResponder:
    """Answers like the echo responder, but the first request for SLOW_PROMPT hangs (mid-turn)."""

    def __init__(self):
        self.slow_requests = 0

    def __call__(self, request: dict):
        if last_user_text(request) == SLOW_PROMPT:
            self.slow_requests += 1
            if self.slow_requests == 1:
                return text_reply("too late", delay=60)
            return text_reply("Here is my considered answer.")
        return echo_responder(request)


class Serve:
    """A running `hermes serve` subprocess and helpers to drive it."""

    def __init__(self, tmp: Path, telegram: TelegramBotApiStandin, anthropic: AnthropicStandin):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data_dir = tmp / "data"
        self.env = {
            **os.environ,
            "HERMES_DATA_DIR": str(self.data_dir), "HERMES_PORT": str(self.port),
            "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_API_BASE": telegram.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": anthropic.base_url,
            "HERMES_VISIBILITY_TIMEOUT": "3", "HERMES_EDIT_INTERVAL": "0.2",
        }
        self.log = open(tmp / "serve.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        wait_until(self._healthy, 60, "hermes serve /healthz")

    def _healthy(self):
        assert self.process.poll() is None, "hermes serve exited"
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def stripe(self, event: dict) -> httpx.Response:
        body = json.dumps(event).encode()
        return self.http.post("/webhooks/stripe", content=body,
                              headers={"Stripe-Signature": se.sign(body, STRIPE_SECRET)})

    def telegram(self, update: dict) -> httpx.Response:
        return self.http.post("/webhooks/telegram", json=update,
                              headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})

    def link_token(self, email: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli.main", "tenants", "link-token", email],
                              env=self.env, capture_output=True, text=True)

    def agent_pid(self, tenant_dir: Path) -> int | None:
        ready = tenant_dir / "agent.ready"
        return json.loads(ready.read_text())["pid"] if ready.exists() else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    responder = SlowOnceResponder()
    with TelegramBotApiStandin() as telegram, AnthropicStandin(responder=responder) as anthropic:
        serve = Serve(tmp_path_factory.mktemp("e2e"), telegram, anthropic)
        yield serve, telegram, anthropic, responder
        serve.stop()


def signup_and_link(serve, telegram, email, customer, chat_id, order, update_base):
    sub = se.subscription_created(customer=customer, subscription=f"sub_{customer}", plan="light",
                                  event_id=f"evt_s_{customer}")
    checkout = se.checkout_completed(email=email, customer=customer, subscription=f"sub_{customer}",
                                     event_id=f"evt_c_{customer}")
    first, second = (sub, checkout) if order == "subscription_first" else (checkout, sub)
    assert serve.stripe(first).status_code == 200
    assert serve.link_token(email).returncode != 0  # not ready: only half the signup arrived
    assert serve.stripe(second).status_code == 200
    assert serve.stripe(second).json()["outcome"] == "duplicate"
    printed = wait_until(lambda: (r := serve.link_token(email)).returncode == 0 and r.stdout,
                         180, f"{email}'s machine to become ready")
    token = printed.split("token:")[1].split()[0]
    assert f"https://t.me/HermesMaxBot?start={token}" in printed
    serve.telegram(text_update(update_base, chat_id, f"/start {token}"))
    wait_until(lambda: any(m.text.startswith("Linked!") for m in telegram.chat_messages(chat_id)),
               30, "the link confirmation")


@pytest.mark.parametrize("order", ["subscription_first", "checkout_first"])
def test_paid_signup_gets_an_agent_that_answers_on_telegram(stack, order):
    serve, telegram, anthropic, _ = stack
    n = 1 if order == "subscription_first" else 2
    chat_id, email = 610000 + n, f"user{n}@example.com"
    signup_and_link(serve, telegram, email, f"cus_e2e{n}", chat_id, order, update_base=n * 1000)
    question = text_update(n * 1000 + 1, chat_id, f"hello agent {n}")
    assert serve.telegram(question).status_code == 200
    assert serve.telegram(question).json()["outcome"] == "duplicate"
    expected = f"echo: hello agent {n}"
    wait_until(lambda: any(m.text == expected for m in telegram.chat_messages(chat_id)),
               60, "the agent's reply in the chat")
    replies = [m for m in telegram.chat_messages(chat_id) if m.text.startswith("echo:")]
    assert len(replies) == 1
    sent_to = {str(c.params["chat_id"]) for c in telegram.calls
               if c.method in ("sendMessage", "editMessageText") and expected in c.params.get("text", "")}
    assert sent_to == {str(chat_id)}
    assert any(r["json"].get("stream") for r in anthropic.requests)
    assert serve.http.get("/readyz").status_code == 200


def test_agent_killed_mid_turn_is_restarted_and_answers_exactly_once(stack):
    serve, telegram, anthropic, responder = stack
    chat_id = 620001
    signup_and_link(serve, telegram, "crash@example.com", "cus_crash", chat_id, "subscription_first", 5000)
    tenant_dir = next(p.parent for p in (serve.data_dir / "agents").glob("*/machine.json")
                      if "cus_crash" not in p.read_text() and _is_tenant(p, serve, "crash@example.com"))
    pid = serve.agent_pid(tenant_dir)
    serve.telegram(text_update(5001, chat_id, SLOW_PROMPT))
    wait_until(lambda: responder.slow_requests == 1, 60, "the agent to be mid-turn")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (p := serve.agent_pid(tenant_dir)) and p != pid, 60, "the supervisor's restart")
    wait_until(lambda: any(m.text == "Here is my considered answer." for m in telegram.chat_messages(chat_id)),
               60, "the answer after the restart")
    answers = [m for m in telegram.chat_messages(chat_id) if "considered answer" in m.text or m.text == "too late"]
    assert [m.text for m in answers] == ["Here is my considered answer."]


def _is_tenant(machine_file: Path, serve: Serve, email: str) -> bool:
    shown = subprocess.run([sys.executable, "-m", "cli.main", "tenants", "show", email],
                           env=serve.env, capture_output=True, text=True)
    return shown.returncode == 0 and json.loads(shown.stdout)["id"] == int(machine_file.parent.name)


def test_sigterm_stops_everything_and_leaves_no_agent_behind(stack):
    serve, *_ = stack
    pids = [serve.agent_pid(p.parent) for p in (serve.data_dir / "agents").glob("*/machine.json")]
    assert pids and all(pids)
    assert serve.stop() == 0
    wait_until(lambda: not any(_alive(pid) for pid in pids), 15, "agent processes to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()
