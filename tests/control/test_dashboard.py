"""The dashboard pages of a signed-in user: overview, settings, linked chats, commands (issue #10).

Real app (``control.create_app``) on SQLite and PostgreSQL; users sign up through
``create_account`` and log in by POSTing ``/login`` with the page's CSRF token.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from support.dashboard import csrf_token, make_ready, sign_in

from agent.commands import HANDLERS
from control.db import database
from control.models import (
    ChatIdentity,
    LlmCall,
    Message,
    Subscription,
    Tenant,
    Usage,
    utcnow,
)
from control.services import dashboard


def test_pages_need_a_session(client):
    for path in ("/dashboard", "/dashboard/chat", "/dashboard/settings", "/dashboard/chats",
                 "/dashboard/commands", "/dashboard/chat/stream/abc"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_new_user_without_a_plan_is_offered_checkout(client):
    sign_in(client, "new@example.com")
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert 'href="/billing/checkout?plan=light"' in page.text
    assert dashboard.NO_MACHINE_WORDING in page.text


def test_overview_shows_machine_state_and_usage_this_period(client):
    tenant = sign_in(client, "ada@example.com")
    make_ready(tenant)
    now = utcnow()
    with database.connection_context():
        # The period began a month before the subscription's renewal date.
        Subscription.create(stripe_subscription_id="sub_1", tenant=tenant, status="active", plan="light",
                            current_period_end=now + timedelta(days=20))
        before_period = now - timedelta(days=15)
        for i, (direction, at) in enumerate([("in", now), ("out", now), ("in", now),
                                             ("in", before_period)]):
            Message.create(tenant=tenant, envelope_id=f"e{i}", direction=direction, channel="telegram",
                           chat_id="1", text="x", created_at=at)
        # The gateway's metering counts; what an agent reports about itself does not.
        LlmCall.create(tenant=tenant, api="anthropic", model="claude-haiku-4-5", status=200,
                       input_tokens=1000, output_tokens=200, cost_cents=15.0, created_at=now)
        LlmCall.create(tenant=tenant, api="openai", model="qwen/qwen3-8b", status=200,
                       input_tokens=200, output_tokens=100, cost_cents=5.0, created_at=now)
        LlmCall.create(tenant=tenant, api="anthropic", model="claude-haiku-4-5", status=200,
                       input_tokens=999, output_tokens=999, cost_cents=99.0, created_at=before_period)
        Usage.create(tenant=tenant, envelope_id="e1", model="claude-haiku-4-5", input_tokens=5000,
                     output_tokens=5000, cost_cents=40.0, created_at=now)
    page = client.get("/dashboard").text
    assert 'data-testid="machine-state">ready<' in page
    assert dashboard.MACHINE_WORDING["ready"] in page
    assert 'data-testid="messages-in">2<' in page
    assert 'data-testid="messages-out">1<' in page
    assert 'data-testid="tokens">1,200 / 300<' in page
    assert 'data-testid="cost">$0.20<' in page
    # Light's budget is 50 cents a UTC day: 20 cents spent today is 40 %.
    assert "Today: $0.20 of\n        $0.50 daily model budget" in page
    assert 'aria-valuenow="40"' in page
    split = page.split('data-testid="today-by-model"')[1].split("</table>")[0]
    assert re.findall(r"<th scope=\"row\">([^<]+)</th><td>([^<]+)</td>", split) == [
        ("claude-haiku-4-5", "$0.15"), ("qwen/qwen3-8b", "$0.05")]
    assert "checkout?plan=light" not in page


def test_period_is_the_month_before_renewal_else_the_calendar_month(client):
    tenant = sign_in(client, "period@example.com")
    now = datetime(2026, 3, 17, 12, 0)
    with database.connection_context():
        assert dashboard.period_start(tenant, now) == datetime(2026, 3, 1)
        Subscription.create(stripe_subscription_id="sub_p", tenant=tenant, status="active",
                            plan="light", current_period_end=datetime(2026, 3, 31, 9, 0))
        # 31 March less a month is 28 February (no 31st), at the renewal's time of day.
        assert dashboard.period_start(tenant, now) == datetime(2026, 2, 28, 9, 0)


@pytest.mark.parametrize(("state_attr", "text"), [
    ("past_due", "Payment failed - update your card in billing"),
    ("paused", "Paused because your subscription ended; data kept until 2030-01-08"),
])
def test_banner_tells_a_past_due_or_paused_user_why(client, state_attr, text):
    tenant = sign_in(client, "late@example.com")
    make_ready(tenant)
    with database.connection_context():
        if state_attr == "past_due":
            Tenant.update(status="past_due", past_due_since=utcnow()).where(Tenant.id == tenant.id).execute()
        else:
            Tenant.update(status="canceled", paused_at=utcnow(),
                          grace_until=datetime(2030, 1, 8)).where(Tenant.id == tenant.id).execute()
    for path in ("/dashboard", "/dashboard/chat", "/dashboard/settings"):
        page = client.get(path).text
        assert 'class="banner warn" role="alert"' in page and text in page, path


def test_settings_are_stored_and_a_bad_time_zone_stores_nothing(client):
    tenant = sign_in(client, "tz@example.com")
    token = csrf_token(client, "/dashboard/settings")
    bad = client.post("/dashboard/settings", data={
        "csrf_token": token, "model": "", "timezone": "Mars/Olympus_Mons", "language": "de",
        "preferences": "short answers"})
    assert bad.status_code == 400
    assert "Not an IANA time zone" in bad.text
    assert 'aria-invalid="true"' in bad.text
    assert 'value="Mars/Olympus_Mons"' in bad.text  # the user's input is kept for correction
    with database.connection_context():
        stored = Tenant.get_by_id(tenant.id)
        assert (stored.timezone, stored.language, stored.preferences) == (None, None, None)

    too_long = client.post("/dashboard/settings", data={
        "csrf_token": token, "model": "", "timezone": "", "language": "", "preferences": "x" * 1001})
    assert too_long.status_code == 400 and "At most 1000 characters" in too_long.text
    for field, value, message in [("language", "not a tag!", "Not a language tag"),
                                  ("model", "gpt-9-imaginary", "Choose a model from the list")]:
        data = {"csrf_token": token, "model": "", "timezone": "", "language": "", "preferences": ""}
        data[field] = value
        answer = client.post("/dashboard/settings", data=data)
        assert answer.status_code == 400 and message in answer.text, field

    good = client.post("/dashboard/settings", data={
        "csrf_token": token, "model": "", "timezone": "Europe/Berlin", "language": "de",
        "preferences": "I am a nurse in Lyon.\r\nKeep answers short."})
    assert good.status_code == 302
    with database.connection_context():
        stored = Tenant.get_by_id(tenant.id)
        assert (stored.timezone, stored.language, stored.model) == ("Europe/Berlin", "de", None)
        assert stored.preferences == "I am a nurse in Lyon.\nKeep answers short."
    page = client.get("/dashboard/settings").text
    assert 'value="Europe/Berlin"' in page and "Settings saved" in page


def test_settings_without_csrf_token_are_refused(client):
    tenant = sign_in(client, "csrf@example.com")
    answer = client.post("/dashboard/settings", data={"timezone": "Europe/Berlin", "model": ""})
    assert answer.status_code == 400
    with database.connection_context():
        assert Tenant.get_by_id(tenant.id).timezone is None


def test_model_menu_comes_from_the_router_catalog(client, app):
    from wire.pricing import PRICES_CENTS_PER_MTOK

    app.extensions["hermes"].settings.agent_env.update({"HERMES_LLM_CHAIN": "anthropic,local"})
    tenant = sign_in(client, "model@example.com")
    page = client.get("/dashboard/settings").text
    for model in PRICES_CENTS_PER_MTOK:
        assert f'<option value="{model}"' in page
    assert '<option value="local"' in page
    answer = client.post("/dashboard/settings", data={
        "csrf_token": csrf_token(client, "/dashboard/settings"), "model": "claude-haiku-4-5",
        "timezone": "", "language": "", "preferences": ""})
    assert answer.status_code == 302
    with database.connection_context():
        assert Tenant.get_by_id(tenant.id).model == "claude-haiku-4-5"


def test_linked_chats_list_unlink_and_telegram_link(client, app):
    tenant = sign_in(client, "chats@example.com")
    other = sign_in(app.test_client(), "other@example.com")
    with database.connection_context():
        mine = ChatIdentity.create(channel="telegram", chat_id="987654321", tenant=tenant)
        theirs = ChatIdentity.create(channel="telegram", chat_id="111222333", tenant=other)
    page = client.get("/dashboard/chats").text
    assert "•••321" in page and "987654321" not in page and "•••333" not in page
    link = re.search(r"https://t\.me/HermesMaxBot\?start=([A-Za-z0-9_-]+)", page)
    assert link is not None
    assert "<svg" in page and "QR code of the Telegram link" in page
    assert client.get("/dashboard/chats").text.count(link.group(0)) >= 1  # same unused token again

    token = csrf_token(client, "/dashboard/chats")
    assert client.post(f"/dashboard/chats/{theirs.id}/unlink", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/dashboard/chats/{mine.id}/unlink").status_code == 400  # no CSRF token
    answer = client.post(f"/dashboard/chats/{mine.id}/unlink", data={"csrf_token": token})
    assert answer.status_code == 302
    with database.connection_context():
        assert ChatIdentity.get_or_none(ChatIdentity.id == mine.id) is None
        assert ChatIdentity.get_or_none(ChatIdentity.id == theirs.id) is not None
    assert "No chat is linked yet" in client.get("/dashboard/chats").text


def test_commands_page_lists_every_registered_command(client):
    sign_in(client, "cmd@example.com")
    page = client.get("/dashboard/commands").text
    for name in HANDLERS:
        assert f'id="cmd-{name}"' in page, name
    assert "<code>/cron add &#34;&lt;min hour day month weekday&gt;&#34; [tz=Area/City] PROMPT</code>" in page
    assert len(re.findall(r'<tr id="cmd-', page)) == len(HANDLERS)


def test_telegram_messages_carry_the_settings_to_the_agent(client, app):
    from support.webhooks import post_telegram

    from standins.telegram_updates import text_update
    from wire.protocol import Envelope, messages_stream

    tenant = sign_in(client, "tg@example.com")
    make_ready(tenant)
    with database.connection_context():
        ChatIdentity.create(channel="telegram", chat_id="4242", tenant=tenant)
    bus = app.extensions["hermes"].bus

    def published(update_id: int, text: str) -> Envelope:
        assert post_telegram(client, text_update(update_id, 4242, text)).json["outcome"] == "published"
        [entry] = bus.read([messages_stream(str(tenant.id))], "agent", "test", count=10)
        bus.ack(entry.stream, "agent", entry.entry_id)
        return Envelope.from_json(entry.payload)

    assert published(1, "hi").preferences == {}  # nothing set: the agent uses its defaults
    token = csrf_token(client, "/dashboard/settings")
    client.post("/dashboard/settings", data={"csrf_token": token, "model": "", "timezone": "Asia/Tokyo",
                                             "language": "ja", "preferences": "Call me Ada."})
    assert published(2, "hello").preferences == {"timezone": "Asia/Tokyo", "language": "ja",
                                                 "about": "Call me Ada."}


def test_a_goal_started_from_the_dashboard_reaches_the_agent_as_a_goal_command(client, app):
    from wire.protocol import Envelope, messages_stream

    tenant = sign_in(client, "goal@example.com")
    make_ready(tenant)
    bus = app.extensions["hermes"].bus
    stream = messages_stream(str(tenant.id))
    token = csrf_token(client, "/dashboard/chat")
    assert 'action="/dashboard/goals"' in client.get("/dashboard/chat").text

    for refused, why in (("   ", "Describe what the goal should achieve."),
                         ("Status", "is a goal command")):
        page = client.post("/dashboard/goals", data={"csrf_token": token, "objective": refused},
                           follow_redirects=True).text
        assert why in page
    assert bus.length(stream) == 0
    assert client.post("/dashboard/goals", data={"objective": "plan a trip"}).status_code == 400  # no CSRF
    assert bus.length(stream) == 0

    page = client.post("/dashboard/goals", data={"csrf_token": token, "objective": "plan a\n trip to Porto"},
                       follow_redirects=True).text
    assert "Goal started" in page
    [entry] = bus.read([stream], "agent", "test", count=10)
    envelope = Envelope.from_json(entry.payload)
    assert (envelope.text, envelope.channel) == ("/goal plan a trip to Porto", "web")
