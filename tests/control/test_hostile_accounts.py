"""The accounts layer from the attacker's side (issue 19): account takeover by sign-up, address
probing, rate-limit evasion, stream hogging, tokens in access logs, subscription adoption and
OAuth-state flooding.  One test per finding, through the real app."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from types import SimpleNamespace

import redis
from gunicorn.config import Config as GunicornConfig
from support.dashboard import csrf_token as dashboard_csrf
from support.dashboard import make_ready, sign_in
from support.slack import slack_settings
from support.webhooks import post_stripe

from control import create_app, gunicorn_conf
from control.db import database
from control.models import (
    Account,
    Machine,
    OutboxMail,
    SlackOAuthState,
    Subscription,
    Tenant,
    utcnow,
)
from control.runtime import Runtime
from control.services import signup as signup_service
from control.services.accounts import create_account
from control.services.stream_slots import KEY, stream_slots
from standins import stripe_events as se
from standins.slack_api import SlackApiStandin

# -- finding 15: a tenant without a Stripe customer id adopts nobody's subscription -----------

def test_a_tenant_without_customer_id_does_not_adopt_another_paid_subscription(client):
    # A paid subscription whose event names no customer (a placeholder tenant holds it).
    paid = se.subscription_created(customer=None, subscription="sub_victim", plan="heavy",
                                   event_id="evt_sub_victim")
    assert post_stripe(client, paid).status_code == 200
    # Another tenant, also without a customer id, gets any billing event of its own.
    mallory = se.checkout_completed(email="mallory@example.com", customer=None,
                                    subscription=None, event_id="evt_mallory")
    assert post_stripe(client, mallory).status_code == 200
    with database.connection_context():
        tenant = Tenant.get(Tenant.email == "mallory@example.com")
        assert not Machine.select().where(Machine.tenant == tenant).exists()
        assert tenant.plan is None
        assert Subscription.get(Subscription.stripe_subscription_id == "sub_victim").tenant_id != tenant.id


REDIS_URL = "redis://127.0.0.1:6379/0"


# -- helpers: a browser on the account pages ---------------------------------------------------

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PASSWORD = "correct horse battery"
TOKEN_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
VERIFY_LINK = re.compile(r"https?://[^/\s]+(/signup/verify/[\w-]+)")


def submit(client, path: str, data: dict, *, form_path: str | None = None, addr: str = "127.0.0.1"):
    """POST ``data`` like the form on ``form_path or path`` would, from client address ``addr``."""
    environ = {"REMOTE_ADDR": addr}
    page = client.get(form_path or path, headers=BROWSER, environ_base=environ)
    data = {"csrf_token": TOKEN_INPUT.search(page.text).group(1), **data}
    return client.post(path, data=data, headers=BROWSER, environ_base=environ)


def start_sign_up(client, email: str, password: str = PASSWORD, addr: str = "127.0.0.1"):
    return submit(client, "/signup", {"email": email, "password": password, "confirm": password},
                  addr=addr)


def mails_to(address: str) -> list[OutboxMail]:
    with database.connection_context():
        return list(OutboxMail.select().where(OutboxMail.to_addr == address).order_by(OutboxMail.id))


def signed_in(client) -> bool:
    return client.get("/login", headers=BROWSER).status_code == 302


def main_text(html: str) -> str:
    return html.split("<main", 1)[1].split("</main>", 1)[0]


def paid_by_payment_link(client, email: str) -> int:
    """A tenant made by Stripe alone (a Payment Link): paid, a machine requested, no account."""
    assert post_stripe(client, se.subscription_created(
        customer="cus_V", subscription="sub_V", plan="light", event_id="evt_sub_V")).status_code == 200
    assert post_stripe(client, se.checkout_completed(
        email=email, customer="cus_V", subscription="sub_V", event_id="evt_co_V")).status_code == 200
    with database.connection_context():
        tenant = Tenant.get(Tenant.email == email)
        assert Machine.select().where(Machine.tenant == tenant).exists()
        assert not Account.select().where(Account.tenant == tenant).exists()
        return tenant.id


# -- finding 5: a sign-up attaches to a paying tenant only once the address is verified --------

def test_signing_up_with_a_paying_tenants_address_gives_nothing_until_its_owner_confirms(app):
    attacker, victim = app.test_client(), app.test_client()
    tenant_id = paid_by_payment_link(attacker, "victim@example.com")

    answer = start_sign_up(attacker, "victim@example.com")
    assert answer.status_code == 200 and "Check your e-mail" in answer.text
    assert not signed_in(attacker)
    assert attacker.get("/dashboard", headers=BROWSER).status_code == 302  # to /login
    with database.connection_context():
        assert Account.select().count() == 0

    # Only the address's owner gets the link; using it creates the account on the paid tenant.
    (confirmation,) = mails_to("victim@example.com")
    path = VERIFY_LINK.search(confirmation.body).group(1)
    assert victim.get(path, headers=BROWSER).status_code == 200  # a GET creates nothing
    with database.connection_context():
        assert Account.select().count() == 0
    done = submit(victim, path, {})
    assert done.status_code == 302 and done.headers["Location"] == "/dashboard"
    assert signed_in(victim) and not signed_in(attacker)
    with database.connection_context():
        assert Account.get().tenant_id == tenant_id
    # The link works once.
    again = victim.get(path, headers=BROWSER)
    assert again.status_code == 400 and "already used" in again.text


# -- finding 13: sign-up answers alike for new, paying and registered addresses ----------------

def test_sign_up_gives_the_same_answer_whether_or_not_the_address_is_known(app, monkeypatch):
    paid_by_payment_link(app.test_client(), "paid@example.com")
    with database.connection_context():
        create_account("member@example.com", "the member's password")
    hashes = []
    real_hash = signup_service.hash_password
    monkeypatch.setattr(signup_service, "hash_password",
                        lambda password: hashes.append(password) or real_hash(password))

    answers = {email: start_sign_up(app.test_client(), email)
               for email in ("new@example.com", "paid@example.com", "member@example.com")}
    assert {a.status_code for a in answers.values()} == {200}
    pages = {main_text(a.text).replace(email, "ADDRESS") for email, a in answers.items()}
    assert len(pages) == 1
    assert len(hashes) == 3  # every path pays the one Argon2 hash before it looks anything up
    # ...and every address gets exactly one mail: the link, or a note to the account's owner.
    assert [len(mails_to(email)) for email in answers] == [1, 1, 1]
    assert "tried to create a Hermes Max account" in mails_to("member@example.com")[0].body


# -- finding 10: rate limits per IPv6 /64 and per account ---------------------------------------

def test_failed_logins_from_one_ipv6_64_share_one_limit(client):
    with database.connection_context():
        create_account("ada@example.com", PASSWORD)
    statuses = [submit(client, "/login", {"email": "ada@example.com", "password": f"wrong{i}"},
                       addr=f"2001:db8:1:2::{i + 1:x}").status_code for i in range(6)]
    assert statuses == [400] * 5 + [429]
    # Another network is not held back by it.
    assert submit(client, "/login", {"email": "ada@example.com", "password": PASSWORD},
                  addr="2001:db8:1:3::1").status_code == 302


def test_failed_logins_on_one_account_are_limited_whatever_network_they_come_from(client):
    with database.connection_context():
        create_account("ada@example.com", PASSWORD)
    for i in range(10):  # each from a network of its own, under every per-network limit
        answer = submit(client, "/login", {"email": "Ada@Example.com", "password": f"wrong{i}"},
                        addr=f"2001:db8:{i + 1:x}::1")
        assert answer.status_code == 400
    blocked = submit(client, "/login", {"email": "ada@example.com", "password": PASSWORD},
                     addr="198.51.100.7")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert not signed_in(client)
    # The owner's successful log-ins never counted: another account is untouched.
    with database.connection_context():
        create_account("bob@example.com", PASSWORD)
    assert submit(client, "/login", {"email": "bob@example.com", "password": PASSWORD},
                  addr="198.51.100.7").status_code == 302


def test_reset_mail_to_one_address_is_limited_across_networks(client):
    with database.connection_context():
        create_account("ada@example.com", PASSWORD)
    statuses = [submit(client, "/reset", {"email": "ada@example.com"},
                       addr=f"203.0.113.{i + 1}").status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert len(mails_to("ada@example.com")) == 3


# -- finding 16: anonymous Slack install visits cannot pile up OAuth states ---------------------

def test_slack_install_purges_expired_states_and_is_rate_limited(settings):
    with SlackApiStandin() as api:
        app = create_app(slack_settings(settings, api),
                         Runtime(slack_settings(settings, api), upgrade_schema=True))
        try:
            client = app.test_client()
            with database.connection_context():
                SlackOAuthState.insert_many(
                    [{"state": f"stale-{i}", "expires_at": utcnow() - timedelta(seconds=1)}
                     for i in range(50)]).execute()
            statuses = [client.get("/slack/install", environ_base={"REMOTE_ADDR": "2001:db8::1"})
                        .status_code for _ in range(11)]
            assert statuses == [200] * 10 + [429]
            with database.connection_context():
                assert SlackOAuthState.select().count() == 10  # the live ones only
                assert not SlackOAuthState.select().where(
                    SlackOAuthState.expires_at <= utcnow()).exists()
        finally:
            app.extensions["hermes"].close()


# -- finding 12: tokens never reach an access log -----------------------------------------------

def test_gunicorn_access_log_masks_reset_media_and_oauth_tokens(tmp_path):
    log_file = tmp_path / "access.log"
    config = GunicornConfig()
    config.set("accesslog", str(log_file))
    logger = gunicorn_conf.logger_class(config)
    secret = "s3cr3t-token-value"
    requests = [("/reset/" + secret, "", "https://hermes.test/reset/" + secret),
                ("/media/" + secret, "", "-"),
                ("/signup/verify/" + secret, "", "-"),
                ("/slack/oauth_redirect", f"code={secret}&state={secret}", "-")]
    for path, query, referer in requests:
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": path + (f"?{query}" if query else ""),
                   "PATH_INFO": path, "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1",
                   "REMOTE_ADDR": "203.0.113.9", "HTTP_REFERER": referer}
        response = SimpleNamespace(status="200 OK", sent=2, headers=[])
        logger.access(response, SimpleNamespace(headers=[("Referer", referer)]), environ,
                      timedelta(milliseconds=3))
    for handler in logger.access_log.handlers:
        handler.flush()
    written = log_file.read_text()
    assert secret not in written
    assert '"GET /reset/*** HTTP/1.1"' in written and '"https://hermes.test/reset/***"' in written
    assert '"GET /media/*** HTTP/1.1"' in written and '"GET /signup/verify/*** HTTP/1.1"' in written
    assert '"GET /slack/oauth_redirect HTTP/1.1"' in written


def test_the_apps_request_log_masks_the_token_of_a_reset_link(client, capsys):
    client.get("/reset/s3cr3t-token-value", headers=BROWSER)
    logged = capsys.readouterr()
    assert "path=/reset/***" in logged.out + logged.err
    assert "s3cr3t-token-value" not in logged.out + logged.err


# -- finding 11: one tenant cannot hold every request slot with streams -------------------------

def test_a_tenant_gets_429_beyond_its_stream_cap_and_a_slot_back_when_a_stream_ends(app, runtime):
    client = app.test_client()
    tenant = sign_in(client, "streamer@example.com")
    make_ready(tenant)
    token = dashboard_csrf(client, "/dashboard/chat")

    def stream_url() -> str:
        sent = client.post("/dashboard/chat/messages", json={"text": "hi"},
                           headers={"X-CSRFToken": token})
        assert sent.status_code == 202, sent.text
        return sent.json["stream_url"]

    cap = runtime.settings.streams_per_tenant
    held = [client.get(stream_url(), buffered=False) for _ in range(cap)]
    assert [r.status_code for r in held] == [200] * cap
    refused = client.get(stream_url())
    assert refused.status_code == 429 and refused.json["error"] == "too_many_streams"
    assert int(refused.headers["Retry-After"]) > 0
    # Another tenant is not affected.
    other = app.test_client()
    make_ready(sign_in(other, "other@example.com"))
    other_token = dashboard_csrf(other, "/dashboard/chat")
    sent = other.post("/dashboard/chat/messages", json={"text": "hi"},
                      headers={"X-CSRFToken": other_token})
    opened = other.get(sent.json["stream_url"], buffered=False)
    assert opened.status_code == 200
    opened.close()
    # A stream that ends (or whose client leaves) gives its slot back.
    held.pop().close()
    again = client.get(stream_url(), buffered=False)
    assert again.status_code == 200
    for response in [*held, again]:
        response.close()


def test_stream_slots_in_redis_are_shared_by_every_worker():
    client = redis.Redis.from_url(REDIS_URL)
    tenant_id = int.from_bytes(os.urandom(3), "big") + 10_000_000  # a key no other run uses
    try:
        workers = [stream_slots(REDIS_URL, cap=3) for _ in range(3)]  # three gunicorn workers
        taken = [worker.acquire(tenant_id) for worker in workers]
        assert all(taken)
        assert [worker.acquire(tenant_id) for worker in workers] == [None, None, None]
        assert workers[1].acquire(tenant_id + 1) is not None  # per tenant
        workers[2].release(tenant_id, taken[0])  # released by another worker than took it
        assert workers[0].acquire(tenant_id) is not None
    finally:
        client.delete(KEY.format(tenant=tenant_id), KEY.format(tenant=tenant_id + 1))
