"""Sentry (SENTRY_DSN): an unhandled error in a route reaches the project, without secrets."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import pytest
import sentry_sdk
from support.serve import wait_until

from control import create_app
from control.runtime import Runtime
from control.settings import Settings

BOT_TOKEN = "123456:AAH-bot-token-never-leaves"
WEBHOOK_SECRET = "tg-webhook-secret-never-leaves"
ANTHROPIC_KEY = "sk-ant-api-key-never-leaves"
BEARER = "Bearer agent-token-never-leaves"


class SentryReceiver:
    """A Sentry ingest stand-in: ``POST /api/<project>/envelope/`` (Sentry developer docs,
    "Envelopes": newline-separated JSON headers and items, gzip/deflate/br allowed); keeps every
    envelope's decoded bytes and its items."""

    def __init__(self):
        self.envelopes: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":  # sentry-sdk compresses with brotli when it is installed
                    body = brotli.decompress(body)
                elif encoding:
                    self.send_response(415)
                    self.end_headers()
                    return
                if not self.path.startswith("/api/42/envelope/"):
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.envelopes.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "ok"}')

            def log_message(self, *_args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_port}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        """Every ``event`` item received so far."""
        found = []
        for envelope in self.envelopes:
            lines = envelope.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = SentryReceiver()
    yield receiver
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    receiver.close()


SESSION_KEY = "session-Signing-Key-0123456789"
STRIPE_KEY = "sk_live_Stripe-Secret-Key-42"


def test_unhandled_route_error_reaches_sentry_without_any_secret(tmp_path, receiver):
    settings = Settings(data_dir=str(tmp_path), sentry_dsn=receiver.dsn, env="staging",
                        secret_key=SESSION_KEY, stripe_secret_key=STRIPE_KEY,
                        telegram_bot_token=BOT_TOKEN, telegram_webhook_secret=WEBHOOK_SECRET,
                        llm_anthropic_api_key=ANTHROPIC_KEY)
    app = create_app(settings, Runtime(settings, upgrade_schema=True))

    @app.get("/boom")
    def boom():
        bot_api_url = f"https://api.telegram.org/bot{settings.telegram_bot_token}/sendMessage"
        raise RuntimeError(f"send failed: {bot_api_url}")

    response = app.test_client().get("/boom", headers={
        "Authorization": BEARER, "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET,
        "X-Api-Key": ANTHROPIC_KEY})
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal_error", "message": "internal error"}
    sentry_sdk.flush(timeout=5)
    (event,) = wait_until(receiver.events, 10, "the Sentry event")

    assert event["environment"] == "staging"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "send failed: https://api.telegram.org/bot[Filtered]/sendMessage"
    assert event["request"]["url"].endswith("/boom")
    raw = b"".join(receiver.envelopes).decode()
    for secret in (BOT_TOKEN, WEBHOOK_SECRET, ANTHROPIC_KEY, BEARER, "agent-token-never-leaves",
                   SESSION_KEY, STRIPE_KEY):
        assert secret not in raw


def test_no_dsn_sends_nothing(tmp_path, receiver):
    settings = Settings(data_dir=str(tmp_path))
    app = create_app(settings, Runtime(settings, upgrade_schema=True))

    @app.get("/boom")
    def boom():
        raise RuntimeError("nobody hears this")

    assert app.test_client().get("/boom").status_code == 500
    sentry_sdk.flush(timeout=2)
    assert not sentry_sdk.get_client().is_active()
    assert receiver.envelopes == []
