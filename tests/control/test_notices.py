"""Notices reach every user on the platform they use, and by e-mail (issue 20, "notices").

Four tenants, each reachable one way only: linked on Slack, on WhatsApp, on Discord, or with
just a web account.  Cancellations arrive as signed Stripe webhooks; the real app's tasks run
inline (``huey_immediate``); the platforms are
their stand-ins on loopback (Slack's Web API, WhatsApp's Graph API, Discord's REST API), the
machines the real ``LocalProvisioner`` on a stopped agent's data dir, the ready events go
through the real delivery worker.
"""

from __future__ import annotations

import json
import time

import pytest
from support.webhooks import post_stripe
from support.whatsapp import configure

from control.db import database
from control.models import Machine, MachineState, Message, OutboxMail, Subscription, Tenant, utcnow
from control.services import lifecycle, linking, web_chat
from control.services.accounts import create_account
from control.services.delivery import DeliveryWorker
from control.services.machine_health import RESTORED_DETAIL, RESUMED_DETAIL
from control.services.notices import Notice, render
from control.services.secrets_box import box_from_settings
from control.services.slack_install import DatabaseInstallationStore
from standins import stripe_events as se
from standins.discord_api import DiscordApiStandin
from standins.slack_api import SlackApiStandin
from standins.whatsapp_api import WhatsAppApiStandin
from wire.protocol import Event, events_stream

TEAM, SLACK_TOKEN, SLACK_USER = "T9TK3CUKW", "xoxb-notice-test", "U061F7AUR"
WA_ID = "972987654321"
DISCORD_USER = "80351110224678912"


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def platforms():
    with SlackApiStandin() as slack, WhatsAppApiStandin() as whatsapp, DiscordApiStandin() as discord:
        slack.add_token(SLACK_TOKEN, TEAM)
        yield slack, whatsapp, discord


@pytest.fixture
def settings(settings, platforms):
    slack, _, discord = platforms
    return settings.with_overrides(
        huey_immediate=True, slack_signing_secret="slack-signing-secret", slack_api_base=slack.base_url,
        discord_bot_token=discord.bot_token, discord_application_id=discord.application_id,
        discord_api_base=discord.base_url)


@pytest.fixture
def tenants(app, runtime, settings, platforms):
    """``{way: tenant}`` for the four users, each with a ready machine on the local provider."""
    from slack_sdk.oauth.installation_store import Bot

    _, whatsapp, _ = platforms
    # Outside the 24-hour window, notices go out as the approved template (Meta's rule).
    configure(app, runtime, whatsapp, template="hermes_notice:en")
    made = {}
    with database.connection_context():
        DatabaseInstallationStore(box_from_settings(settings)).save_bot(Bot(
            team_id=TEAM, bot_token=SLACK_TOKEN, bot_id="B1", bot_user_id="U0KRQLJ9H",
            installed_at=time.time()))
        for way, identity in (("slack", f"{TEAM}:{SLACK_USER}"), ("whatsapp", WA_ID),
                              ("discord", DISCORD_USER), ("web", None)):
            email = f"{way}@example.com"
            if identity is None:
                tenant = create_account(email, "correct horse battery staple").tenant
            else:
                tenant = Tenant.create(email=email)
                token = linking.current_token(tenant, 3600).token
                linking.redeem(token, way, identity, identity.rpartition(":")[2])
            Tenant.update(plan="light", status="active", stripe_customer_id=f"cus_{way}").where(
                Tenant.id == tenant.id).execute()
            Subscription.create(stripe_subscription_id=f"sub_{way}", tenant=tenant.id,
                                stripe_customer_id=f"cus_{way}", status="active", plan="light")
            Machine.create(tenant=tenant, plan="light", state=MachineState.READY, ready_at=utcnow())
            # A stopped agent's data dir: what the local provider pauses and resumes.
            data = runtime.provisioner.data_dir(str(tenant.id))
            data.mkdir(parents=True)
            (data / "machine.json").write_text(json.dumps({"tenant": str(tenant.id), "plan": "light",
                                                           "env": {}}))
            made[way] = Tenant.get_by_id(tenant.id)
    return made


def told_on_each_platform(platforms, tenants, notice: Notice) -> None:
    """Assert each user got ``notice``'s text where they are, and its subject by e-mail."""
    slack, whatsapp, discord = platforms
    subject, text = render(notice, None, **FIELDS[notice])
    assert [m.text for m in slack.channel_messages("D" + SLACK_USER.lstrip("U"))] == [text]
    assert whatsapp.texts_to(WA_ID) == [text]
    assert [m.template for m in whatsapp.sent] == ["hermes_notice"]
    assert [m.content for m in discord.channel_messages(discord.dm_channels[DISCORD_USER])] == [text]
    with database.connection_context():
        assert [m.text for m in web_chat.history(tenants["web"])] == [text]
        mails = {m.to_addr: m for m in OutboxMail.select()}
        assert sorted(mails) == sorted(t.email for t in tenants.values())
        assert {m.subject for m in mails.values()} == {subject}
        assert all(text in m.body for m in mails.values())
        # Each platform's message is logged with its id and tenant (delivery recovery skips it).
        logged = Message.select().where(Message.channel.in_(["slack", "whatsapp", "discord"]))
        assert sorted((m.channel, m.tenant_id) for m in logged if m.platform_message_id) == sorted(
            (way, tenants[way].id) for way in ("slack", "whatsapp", "discord"))


FIELDS = {Notice.PAUSED: {"until": "", "url": "http://127.0.0.1:8000/billing"},
          Notice.READY: {}, Notice.RESTORED: {}, Notice.RESUMED: {}}


def test_a_canceled_user_is_told_on_their_platform_and_by_email(client, runtime, tenants, platforms):
    for way in tenants:  # Stripe says each subscription ended (signed, as Stripe signs)
        ended = se.subscription_created(customer=f"cus_{way}", subscription=f"sub_{way}", plan="light",
                                        status="canceled", event_id=f"evt_end_{way}",
                                        event_type="customer.subscription.deleted")
        assert post_stripe(client, ended).json["outcome"] == "processed"

    with database.connection_context():
        states = {Machine.get(Machine.tenant == t.id).state for t in tenants.values()}
        grace_until = Tenant.get_by_id(tenants["web"].id).grace_until
    assert states == {MachineState.PAUSED}
    FIELDS[Notice.PAUSED]["until"] = grace_until.strftime("%Y-%m-%d %H:%M")
    told_on_each_platform(platforms, tenants, Notice.PAUSED)


@pytest.mark.parametrize(("detail", "notice"), [("", Notice.READY),
                                                 (f"{RESTORED_DETAIL} archives/x", Notice.RESTORED),
                                                 (RESUMED_DETAIL, Notice.RESUMED)])
def test_a_ready_agent_is_announced_on_every_platform_and_by_email(runtime, tenants, platforms,
                                                                    detail, notice):
    with database.connection_context():
        Machine.update(state=MachineState.BOOTING, detail=detail).execute()
    ids = [t.id for t in tenants.values()]
    worker = DeliveryWorker(runtime.bus, runtime.tasks.adapters, lambda: ids,
                            send_notice=runtime.tasks.send_notice, tenant_refresh=0.0)
    for tenant_id in ids:
        runtime.bus.append(events_stream(str(tenant_id)),
                           Event.lifecycle_event(str(tenant_id), "ready", "hermes-max 1.0; llm chain x")
                           .to_json())
    with database.connection_context():
        while worker.step(block=0.05):
            pass
        assert {m.state for m in Machine.select()} == {MachineState.READY}
    told_on_each_platform(platforms, tenants, notice)


def test_a_user_who_set_a_language_is_told_in_it(runtime, tenants, platforms):
    slack, _, _ = platforms
    with database.connection_context():
        Tenant.update(language="de-AT").where(Tenant.id == tenants["slack"].id).execute()
        lifecycle.begin_grace(Tenant.get_by_id(tenants["slack"].id), runtime.settings.grace_days)
    runtime.tasks.pause_machine(tenants["slack"].id)
    [message] = slack.channel_messages("D" + SLACK_USER.lstrip("U"))
    assert message.text.startswith("Dein Hermes-Abo ist beendet")
    with database.connection_context():
        assert OutboxMail.get().subject == "Dein Hermes-Agent ist pausiert"
