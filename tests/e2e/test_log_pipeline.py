"""End to end: one message followed through JSON logs, from the webhook to the delivery.

`hermes serve` (control plane, delivery worker, supervisor) and the local agent it starts run as
real processes with HERMES_LOG_FORMAT=json; Telegram's Bot API and Anthropic's Messages API are
the local stand-ins.  Every line either process writes must be a JSON object, and one webhook's
request id and the envelope id must lead from the webhook through routing and the agent's turn
to the delivery.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.serve import TELEGRAM_SECRET, ServeProcess, wait_until

from control.services.routing import envelope_id_for, envelope_key
from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, echo_responder
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update

CHAT_ID = 630001
REQUEST_ID = "trace-0f9c2d7e-webhook"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with TelegramBotApiStandin() as telegram, AnthropicStandin(responder=echo_responder) as anthropic:
        tmp = tmp_path_factory.mktemp("logs")
        serve = ServeProcess(tmp, telegram, anthropic, extra_env={"HERMES_LOG_FORMAT": "json"})
        yield serve, telegram, tmp / "serve.log"
        serve.stop()


def json_lines(path: Path) -> list[dict]:
    """Every line of ``path`` as a JSON object; a line that is not one fails the test."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), f"{path.name} line {number} is not an object: {line!r}"
        assert {"timestamp", "level", "logger", "event"} <= set(record), line
        records.append(record)
    return records


def post_update(serve, update: dict, request_id: str | None = None):
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return serve.http.post("/webhooks/telegram", json=update, headers=headers)


def link_chat(serve, telegram, email: str) -> str:
    """Pay, wait for the agent, link CHAT_ID; return the tenant id."""
    for event in (se.subscription_created(customer="cus_logs", subscription="sub_logs", plan="light",
                                          event_id="evt_s_logs"),
                  se.checkout_completed(email=email, customer="cus_logs", subscription="sub_logs",
                                        event_id="evt_c_logs")):
        assert serve.stripe(event).status_code == 200
    printed = wait_until(lambda: (r := serve.cli("tenants", "link-token", email)).returncode == 0
                         and r.stdout, 180, "the machine to become ready")
    token = printed.split("token:")[1].split()[0]
    post_update(serve, text_update(7000, CHAT_ID, f"/start {token}"))
    wait_until(lambda: any(m.text.startswith("Linked!") for m in telegram.chat_messages(CHAT_ID)),
               30, "the link confirmation")
    return str(json.loads(serve.cli("tenants", "show", email).stdout)["id"])


def test_one_message_is_followed_from_webhook_to_delivery_in_json_logs(stack):
    serve, telegram, serve_log = stack
    tenant = link_chat(serve, telegram, "logs@example.com")
    agent_log = serve.data_dir / "agents" / tenant / "agent.log"

    answer = post_update(serve, text_update(7001, CHAT_ID, "follow me"), request_id=REQUEST_ID)
    assert answer.status_code == 200 and answer.json()["outcome"] == "published"
    assert answer.headers["X-Request-ID"] == REQUEST_ID
    key = envelope_key((serve.data_dir / "secret_key").read_text().strip())  # local mode's
    envelope_id = envelope_id_for(key, "telegram", str(CHAT_ID), "7001")
    wait_until(lambda: any(m.text == "echo: follow me" for m in telegram.chat_messages(CHAT_ID)),
               60, "the agent's reply in the chat")
    wait_until(lambda: any(r.get("envelope_id") == envelope_id and "delivered" in r["event"]
                           for r in json_lines(serve_log)), 30, "the delivery's log line")

    control, agent = json_lines(serve_log), json_lines(agent_log)
    webhook = [r for r in control if r.get("request_id") == REQUEST_ID]
    assert any(r["event"] == "request" and r.get("path") == "/webhooks/telegram"
               and r.get("status") == 200 for r in webhook)
    [routed] = [r for r in webhook if r.get("envelope_id") == envelope_id]
    assert routed["tenant"] == tenant and routed["logger"] == "control.services.channel_routing"

    turn = [r for r in agent if r.get("envelope_id") == envelope_id]
    assert {r["event"].split(":")[0] for r in turn} >= {"turn started for telegram chat 630001",
                                                       "turn answered"}
    assert all(r.get("request_id") == REQUEST_ID and r.get("tenant") == tenant for r in turn)

    delivered = [r for r in control if r.get("envelope_id") == envelope_id
                 and r["logger"] == "control.services.delivery"]
    assert any("delivered" in r["event"] for r in delivered)
    assert all(r.get("tenant") == tenant for r in delivered)
    assert telegram.token not in serve_log.read_text()  # Bot API URLs hold the token


def test_a_malformed_request_id_is_replaced_and_echoed(stack):
    serve, _, serve_log = stack
    answer = serve.http.get("/healthz", headers={"X-Request-ID": "two words"})
    fresh = answer.headers["X-Request-ID"]
    assert fresh != "two words" and len(fresh) == 32
    wait_until(lambda: any(r.get("request_id") == fresh and r.get("path") == "/healthz"
                           for r in json_lines(serve_log)), 10, "the request's log line")
