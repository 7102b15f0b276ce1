"""``hermes demo``: the whole walking skeleton on this machine, no network and no keys needed.

Starts ``hermes serve`` on a temporary data directory with a local Telegram Bot API stand-in,
replays a signed Stripe subscription built from Stripe's published objects, links a Telegram
chat with ``/start <token>``, asks a question and prints the transcript with timings.  Uses
Claude when ``ANTHROPIC_API_KEY`` is set, else the bundled local model.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import httpx

from standins import stripe_events
from standins.stripe_api import StripeStandin
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update

DEMO_EMAIL = "ada@example.com"
DEMO_CHAT_ID = 424242
QUESTION = "Hi Hermes! In one sentence: what can you help me with?"
DEMO_PRICES = {"light": "price_demo_light", "heavy": "price_demo_heavy"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise click.ClickException(f"timed out after {timeout:.0f}s waiting for {what}")


class _Demo:
    def __init__(self, data_dir: Path, port: int, standin, stripe_api):
        self.data_dir, self.port, self.standin = data_dir, port, standin
        self.stripe_secret = "whsec_" + secrets.token_hex(16)
        # The stand-in's hosted Checkout and portal send their signed events to us.
        self.stripe_api = stripe_api
        stripe_api.webhook_url = f"http://127.0.0.1:{port}/webhooks/stripe"
        stripe_api.webhook_secret = self.stripe_secret
        self.telegram_secret = secrets.token_urlsafe(24)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.t0 = time.monotonic()

    def say(self, who: str, text: str) -> None:
        click.echo(f"[{time.monotonic() - self.t0:7.2f}s] {who:<9} {text}")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HERMES_DATA_DIR=str(self.data_dir), HERMES_PORT=str(self.port),
                   STRIPE_WEBHOOK_SECRET=self.stripe_secret,
                   TELEGRAM_BOT_TOKEN=self.standin.token, TELEGRAM_WEBHOOK_SECRET=self.telegram_secret,
                   TELEGRAM_API_BASE=self.standin.base_url, TELEGRAM_BOT_USERNAME=self.standin.username,
                   STRIPE_SECRET_KEY=self.stripe_api.secret_key,
                   STRIPE_API_BASE=self.stripe_api.base_url,
                   STRIPE_PRICE_LIGHT=DEMO_PRICES["light"], STRIPE_PRICE_HEAVY=DEMO_PRICES["heavy"],
                   HF_HUB_OFFLINE="1")
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        return env

    def post_stripe(self, event: dict) -> float:
        body = json.dumps(event).encode()
        started = time.monotonic()
        r = self.http.post("/webhooks/stripe", content=body,
                           headers={"Stripe-Signature": stripe_events.sign(body, self.stripe_secret),
                                    "Content-Type": "application/json"})
        r.raise_for_status()
        return (time.monotonic() - started) * 1000

    def post_telegram(self, update: dict) -> None:
        r = self.http.post("/webhooks/telegram", json=update,
                           headers={"X-Telegram-Bot-Api-Secret-Token": self.telegram_secret})
        r.raise_for_status()


@click.command()
@click.option("--keep", is_flag=True, help="Keep the temporary data directory.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for each step.")
@click.option("--stay/--no-stay", default=None,
              help="Keep serving the web dashboard after the transcript until Ctrl-C "
                   "(default: when run from a terminal).")
def demo(keep: bool, timeout: float, stay: bool | None) -> None:
    """Run a paid signup → provisioned agent → Telegram conversation, locally; then serve
    the web dashboard (sign up, pay against the local Stripe stand-in, chat)."""
    if stay is None:
        stay = sys.stdin.isatty()
    data_dir = Path(tempfile.mkdtemp(prefix="hermes-demo-"))
    llm = "Claude (ANTHROPIC_API_KEY)" if os.environ.get("ANTHROPIC_API_KEY") else "local SmolLM2-135M"
    with TelegramBotApiStandin() as standin, StripeStandin(prices=DEMO_PRICES) as stripe_api, \
            open(data_dir / "serve.log", "wb") as log:
        d = _Demo(data_dir, _free_port(), standin, stripe_api)
        server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=d.env(),
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            d.say("hermes", f"serve started (pid {server.pid}, data {data_dir}, LLM: {llm})")
            _converse(d, standin, server, timeout)
            d.say("web", f"dashboard: http://127.0.0.1:{d.port}/ (sign up, pay with the local "
                         f"Stripe stand-in in LOCAL TEST MODE, chat); mail is printed in "
                         f"{data_dir / 'serve.log'}")
            if stay:
                _serve_until_interrupted(d, server)
        finally:
            _stop(server)
    d.say("hermes", f"stopped cleanly (exit {server.returncode}); log: {data_dir / 'serve.log'}")
    if not keep and server.returncode == 0:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def _converse(d: _Demo, standin, server: subprocess.Popen, timeout: float) -> None:
    _wait(lambda: _healthy(d.http, server), 60, "hermes serve to answer /healthz")
    d.say("hermes", "control plane is up")
    _signup(d, stripe_events, timeout)
    token = _wait_ready(d, timeout)
    d.post_telegram(text_update(1, DEMO_CHAT_ID, f"/start {token}"))
    d.say("user", f"/start {token}")
    linked = _wait(lambda: _bot_says(standin, "Linked"), timeout, "the link confirmation")
    d.say("bot", linked)
    before = len(standin.calls)
    d.post_telegram(text_update(2, DEMO_CHAT_ID, QUESTION))
    asked = time.monotonic()
    d.say("user", QUESTION)
    reply = _wait(lambda: _delivered_reply(d.data_dir), timeout, "the agent's reply")
    d.say("agent", reply)
    calls = [c.method for c in standin.calls[before:]]
    d.say("hermes", f"reply delivered {time.monotonic() - asked:.2f}s after the question "
                    f"(typing shown, {calls.count('sendMessage')} message sent, "
                    f"{calls.count('editMessageText')} edits as it streamed)")


def _serve_until_interrupted(d: _Demo, server: subprocess.Popen) -> None:
    click.echo("Serving until Ctrl-C.")
    try:
        while server.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        d.say("hermes", "Ctrl-C: stopping")


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _healthy(http: httpx.Client, server: subprocess.Popen) -> bool:
    if server.poll() is not None:
        raise click.ClickException(f"hermes serve exited with code {server.returncode}")
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _signup(d: _Demo, stripe_events, timeout: float) -> None:
    sub = stripe_events.subscription_created(customer="cus_demo", subscription="sub_demo", plan="light",
                                             event_id="evt_demo_subscription")
    ms = d.post_stripe(sub)
    d.say("stripe", f"customer.subscription.created (plan light) accepted in {ms:.1f} ms")
    checkout = stripe_events.checkout_completed(email=DEMO_EMAIL, customer="cus_demo",
                                                subscription="sub_demo", event_id="evt_demo_checkout")
    ms = d.post_stripe(checkout)
    d.say("stripe", f"checkout.session.completed ({DEMO_EMAIL}) accepted in {ms:.1f} ms")


def _wait_ready(d: _Demo, timeout: float) -> str:
    env = d.env()
    started = time.monotonic()

    def token():
        out = subprocess.run([sys.executable, "-m", "cli.main", "tenants", "link-token", DEMO_EMAIL],
                             env=env, capture_output=True, text=True, check=False)
        return out.stdout if out.returncode == 0 else None

    printed = _wait(token, timeout, "the tenant's agent to report ready")
    d.say("hermes", f"agent reported ready {time.monotonic() - started:.2f}s after checkout")
    for line in printed.splitlines():
        d.say("operator", line)
    return printed.split("token:", 1)[1].split()[0]


def _bot_says(standin, prefix: str) -> str | None:
    for message in standin.chat_messages(DEMO_CHAT_ID):
        if message.text.startswith(prefix):
            return message.text
    return None


def _delivered_reply(data_dir: Path) -> str | None:
    import sqlite3

    db = sqlite3.connect(data_dir / "control.db")
    try:
        row = db.execute("SELECT text FROM message WHERE direction = 'out' "
                         "AND envelope_id NOT LIKE 'control-%' ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    return row[0] if row else None
