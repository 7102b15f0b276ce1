"""Budgets a user sees (issue 23): the LLM gateway warns the user's linked chat once a day when
today's spend crosses 80 % of the plan's daily budget.  The gateway on a real port, called with
Anthropic's SDK, in front of the Anthropic stand-in; the warning arrives at the Telegram Bot API
stand-in through the control plane's ``send_notice`` task."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.live_app import live_app

from control.models import ChatIdentity, LlmCall, Tenant, utcnow
from control.services import budget_warning, llm_gateway, spend_anomaly
from control.settings import Settings
from standins.anthropic_api import AnthropicStandin, text_reply
from standins.telegram_bot_api import TelegramBotApiStandin

CHAT = 4242


@pytest.fixture
def claude():
    with AnthropicStandin() as standin:
        yield standin


@pytest.fixture
def telegram():
    with TelegramBotApiStandin() as standin:
        yield standin


@pytest.fixture
def gateway(tmp_path, claude, telegram):
    """The control app on a real 127.0.0.1 port (light plan: 10 cents a day); yields
    ``(public_url, runtime)``."""
    def settings_for(public_url: str) -> Settings:
        return Settings(data_dir=str(tmp_path / "data"), public_url=public_url,
                        llm_anthropic_api_key="sk-ant-operator", llm_anthropic_url=claude.base_url,
                        plan_budget_cents={"light": 10, "heavy": 150},
                        telegram_bot_token=telegram.token, telegram_api_base=telegram.base_url,
                        huey_immediate=True)

    with live_app(settings_for) as served:
        yield served


def linked_tenant(runtime) -> str:
    """A light tenant with a linked Telegram chat; returns its gateway token."""
    with runtime.db.connection_context():
        row = Tenant.create(email="budget@example.com", plan="light", status="active")
        ChatIdentity.create(channel="telegram", chat_id=str(CHAT), user_id="1", tenant=row,
                            linked_at=utcnow())
        return llm_gateway.issue(row.id)


def ask(url: str, token: str, claude, input_tokens: int) -> None:
    """One Haiku 4.5 call costing ``input_tokens`` / 10,000 cents (100 cents per MTok input)."""
    claude.script([text_reply("ok", input_tokens=input_tokens, output_tokens=1)])
    anthropic.Anthropic(api_key=token, base_url=url + llm_gateway.ANTHROPIC_PATH,
                        max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def test_crossing_80_percent_warns_the_linked_chat_exactly_once(gateway, claude, telegram):
    url, runtime = gateway
    token = linked_tenant(runtime)
    ask(url, token, claude, 70_000)  # 7 of 10 cents: below the mark
    assert telegram.chat_messages(CHAT) == []
    ask(url, token, claude, 15_000)  # 8.5 cents: crossed
    (warning,) = telegram.chat_messages(CHAT)
    assert "85 % of today's model budget" in warning.text and "of $0.10" in warning.text
    ask(url, token, claude, 10_000)  # 9.5 cents: still past the mark, already warned today
    ask(url, token, claude, 5_000)  # the budget is spent: warned already, nothing more
    assert [m.text for m in telegram.chat_messages(CHAT)] == [warning.text]


def test_workers_racing_past_the_mark_send_one_warning_between_them(gateway):
    _, runtime = gateway
    linked_tenant(runtime)
    sent: list[tuple[str, str, str]] = []
    with runtime.db.connection_context():
        tenant = Tenant.get(Tenant.email == "budget@example.com")
        LlmCall.create(tenant=tenant, api="anthropic", model="claude-haiku-4-5", status=200,
                       cost_cents=9.0)
    barrier = threading.Barrier(4)

    def worker(_):
        with runtime.db.connection_context():
            barrier.wait(timeout=10)
            return budget_warning.warn_if_crossed(tenant, {"light": 10},
                                                  lambda *notice: sent.append(notice))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))
    assert results.count(True) == 1 and sent == [("telegram", str(CHAT), sent[0][2])]


def test_a_tenant_burning_its_budget_shows_in_its_plan_and_bucket_for_the_operator(gateway, claude):
    url, runtime = gateway
    token = linked_tenant(runtime)
    ask(url, token, claude, 60_000)  # 6 of 10 cents within the hour
    with runtime.db.connection_context():
        tenant_id = Tenant.get(Tenant.email == "budget@example.com").id
    text = httpx.get(url + "/metrics").text
    series = {(s.labels["plan"], s.labels["bucket"]): s.value
              for family in text_string_to_metric_families(text)
              if family.name == "hermes_llm_tenant_hourly_spend_ratio" for s in family.samples}
    bucket = str(tenant_id % spend_anomaly.SPEND_BUCKETS)
    assert series.pop(("light", bucket)) == pytest.approx(0.6, abs=0.01)
    assert len(series) == 2 * spend_anomaly.SPEND_BUCKETS - 1 and set(series.values()) == {0.0}
