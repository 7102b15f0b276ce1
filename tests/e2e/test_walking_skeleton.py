"""End to end: `hermes serve` as a subprocess, Stripe → machine → Telegram link → Claude reply.

Only the internet's edge is replaced: Telegram's Bot API and Anthropic's Messages API (SSE
streaming) by local stand-ins speaking their wire formats; Stripe events are signed with
Stripe's scheme from Stripe's published objects.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.serve import ServeProcess, wait_until

from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, echo_responder, last_user_text, text_reply
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import text_update

SLOW_PROMPT = "please think slowly about this"


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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    responder = SlowOnceResponder()
    with TelegramBotApiStandin() as telegram, AnthropicStandin(responder=responder) as anthropic:
        serve = ServeProcess(tmp_path_factory.mktemp("e2e"), telegram, anthropic)
        yield serve, telegram, anthropic, responder
        serve.stop()


def signup_and_link(serve, telegram, email, customer, chat_id, order, update_base):
    sub = se.subscription_created(customer=customer, subscription=f"sub_{customer}", plan="light",
                                  event_id=f"evt_s_{customer}")
    checkout = se.checkout_completed(email=email, customer=customer, subscription=f"sub_{customer}",
                                     event_id=f"evt_c_{customer}")
    first, second = (sub, checkout) if order == "subscription_first" else (checkout, sub)
    assert serve.stripe(first).status_code == 200
    assert serve.cli("tenants", "link-token", email).returncode != 0  # not ready: only half the signup arrived
    assert serve.stripe(second).status_code == 200
    assert serve.stripe(second).json()["outcome"] == "duplicate"
    printed = wait_until(lambda: (r := serve.cli("tenants", "link-token", email)).returncode == 0 and r.stdout,
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
    serve, telegram, _, responder = stack
    chat_id = 620001
    signup_and_link(serve, telegram, "crash@example.com", "cus_crash", chat_id, "subscription_first", 5000)
    tenant_dir = serve.agent_dir("crash@example.com")
    pid = serve.agent_pid(tenant_dir)
    serve.telegram(text_update(5001, chat_id, SLOW_PROMPT))
    wait_until(lambda: responder.slow_requests == 1, 60, "the agent to be mid-turn")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (p := serve.agent_pid(tenant_dir)) and p != pid, 60, "the supervisor's restart")
    wait_until(lambda: any(m.text == "Here is my considered answer." for m in telegram.chat_messages(chat_id)),
               60, "the answer after the restart")
    answers = [m for m in telegram.chat_messages(chat_id) if "considered answer" in m.text or m.text == "too late"]
    assert [m.text for m in answers] == ["Here is my considered answer."]


def test_sigterm_stops_everything_and_leaves_no_agent_behind(stack):
    serve, telegram, *_ = stack
    # Its own tenant, so the test does not depend on which of the others ran before it.
    signup_and_link(serve, telegram, "sigterm@example.com", "cus_sigterm", 630001, "subscription_first", 7000)
    pids = [serve.agent_pid(p.parent) for p in (serve.data_dir / "agents").glob("*/machine.json")]
    assert serve.agent_pid(serve.agent_dir("sigterm@example.com")) in pids
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
