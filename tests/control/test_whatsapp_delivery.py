"""WhatsApp end to end through the real delivery worker and a live control plane: a signed
message reaches the agent's inbox, the agent's reply reaches the user (Graph API stand-in), Meta's
signed status callbacks land in the ledger, a ``failed`` status un-delivers the reply, the
24-hour window switches to the template (or fails clearly without one), rate limits wait."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from support.delivery import publish, run_until
from support.whatsapp import APP_SECRET, PATH, WA_ID, configure
from werkzeug.serving import make_server

from control.db import database
from control.models import AttentionItem, Delivery, utcnow
from control.services import linking
from control.services.delivery import DeliveryWorker
from control.services.whatsapp_window import record_inbound
from standins.whatsapp_api import WhatsAppApiStandin, message_body, post_webhook, status_body
from wire.protocol import (
    AGENT_GROUP,
    DELIVERY_GROUP,
    Envelope,
    events_stream,
    messages_stream,
)


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def settings(settings):
    return settings.with_overrides(huey_immediate=True)


@pytest.fixture
def api():
    with WhatsAppApiStandin() as standin:
        yield standin


@pytest.fixture
def live_url(app):
    """The app served over real HTTP (Meta's webhooks arrive as real signed POSTs)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}{PATH}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def adapter(app, runtime, api):
    return configure(app, runtime, api)


@pytest.fixture
def linked(adapter, tenant, live_url, api):
    with database.connection_context():
        token = linking.current_token(tenant, 3600).token
    assert post_webhook(live_url, message_body(text=f"/link {token}", wa_id=WA_ID), APP_SECRET) == 200
    assert api.texts_to(WA_ID)[-1].startswith("Linked!")
    return tenant


def worker_for(runtime, adapter, tenant, edit_interval: float | None = 0.1) -> DeliveryWorker:
    return DeliveryWorker(runtime.bus, {"whatsapp": adapter}, lambda: [tenant.id],
                          edit_interval=edit_interval)


def reply(runtime, tenant, message_id: str, text: str) -> None:
    """The agent's final answer to ``message_id`` on the tenant's events stream."""
    publish(runtime.bus, tenant, message_id, 1, "final", text, channel="whatsapp", chat_id=WA_ID)


def ledger(message_id: str) -> Delivery | None:
    with database.connection_context():
        return Delivery.get_or_none(Delivery.envelope_id == message_id)


def state_is(message_id: str, state: str):
    return lambda: (row := ledger(message_id)) is not None and row.state == state


def test_a_message_is_answered_and_meta_confirms_delivery_in_the_ledger(
        runtime, adapter, linked, live_url, api):
    wamid = "wamid.HBgLOTcyOTg3NjU0MzIxFQIAEhgUM0E"
    assert post_webhook(live_url, message_body(text="What's on tomorrow?", wa_id=WA_ID,
                                               wamid=wamid), APP_SECRET) == 200
    [inbound] = runtime.bus.read([messages_stream(str(linked.id))], AGENT_GROUP, "agent", count=10)
    envelope = Envelope.from_json(inbound.payload)
    assert (envelope.text, envelope.platform_message_id) == ("What's on tomorrow?", wamid)

    worker = worker_for(runtime, adapter, linked)
    reply(runtime, linked, envelope.id, "**Two** meetings:\n- 9:00 standup")
    run_until(worker, state_is(envelope.id, "delivered"))
    assert api.texts_to(WA_ID)[-1] == "*Two* meetings:\n- 9:00 standup"
    row = ledger(envelope.id)
    assert row.platform_message_id == api.sent[-1].wamid and row.platform_status is None
    assert worker.bus.pending_count(events_stream(str(linked.id)), DELIVERY_GROUP) == 0

    assert post_webhook(live_url, status_body(row.platform_message_id, "sent"), APP_SECRET) == 200
    assert api.post_statuses(live_url, APP_SECRET, "delivered") == [200, 200]
    row = ledger(envelope.id)
    assert (row.state, row.platform_status) == ("delivered", "delivered")


def test_a_failed_status_shows_the_reply_as_not_delivered_and_tells_an_operator(
        runtime, adapter, linked, live_url, api):
    worker = worker_for(runtime, adapter, linked)
    reply(runtime, linked, "env-fail", "this will not arrive")
    run_until(worker, state_is("env-fail", "delivered"))
    wamid = ledger("env-fail").platform_message_id
    assert post_webhook(live_url, status_body(wamid, "failed"), APP_SECRET) == 200
    row = ledger("env-fail")
    assert (row.state, row.platform_status) == ("failed", "failed") and "130472" in row.failure
    with database.connection_context():
        assert AttentionItem.get(AttentionItem.kind == "whatsapp_failed").subject == "env-fail"
    # A late "delivered" for the same message does not bring it back.
    assert post_webhook(live_url, status_body(wamid, "delivered"), APP_SECRET) == 200
    assert ledger("env-fail").state == "failed"


def _close_window(wa_id: str) -> None:
    with database.connection_context():
        from control.models import WhatsAppWindow

        WhatsAppWindow.update(last_inbound_at=utcnow() - timedelta(hours=25)).where(
            WhatsAppWindow.wa_id == wa_id).execute()


def test_outside_the_24_hour_window_cron_output_goes_as_the_template(
        app, runtime, api, tenant, linked):
    adapter = configure(app, runtime, api, template="hermes_update:en")
    _close_window(WA_ID)
    worker = worker_for(runtime, adapter, linked)
    reply(runtime, linked, "cron-1", "Daily digest: **3** new mails")
    run_until(worker, state_is("cron-1", "delivered"))
    sent = api.sent[-1]
    assert (sent.type, sent.template, sent.text) == ("template", "hermes_update",
                                                     "Daily digest: *3* new mails")


def test_outside_the_window_without_a_template_the_reply_is_failed_not_delivered(
        runtime, adapter, linked, api):
    _close_window(WA_ID)
    before = len(api.sent)
    worker = worker_for(runtime, adapter, linked)
    reply(runtime, linked, "cron-2", "nobody will see this")
    run_until(worker, state_is("cron-2", "failed"))
    assert len(api.sent) == before
    assert "24-hour" in ledger("cron-2").failure
    with database.connection_context():
        assert AttentionItem.get(AttentionItem.kind == "delivery_refused").subject == "cron-2"
    assert worker.bus.pending_count(events_stream(str(linked.id)), DELIVERY_GROUP) == 0


def test_a_throughput_limit_130429_is_retried_after_its_wait_and_sent_once(
        runtime, adapter, linked, api):
    api.fail_next(130429)
    posts_before = len(api.requests)
    worker = worker_for(runtime, adapter, linked)
    reply(runtime, linked, "env-rl", "after the pause")
    run_until(worker, state_is("env-rl", "delivered"))
    attempts = api.requests[posts_before:]
    assert len(attempts) == 2 and attempts[1]["at"] - attempts[0]["at"] >= 0.95  # waited 1 s
    assert api.texts_to(WA_ID).count("after the pause") == 1


def test_replies_to_one_user_keep_the_pair_rate_limit_spacing(runtime, adapter, linked, api):
    worker = worker_for(runtime, adapter, linked, edit_interval=None)  # the adapter's 6 s
    reply(runtime, linked, "p1", "first")
    reply(runtime, linked, "p2", "second")
    run_until(worker, lambda: state_is("p1", "delivered")() and state_is("p2", "delivered")(),
              timeout=30)
    first, second = [m for m in api.sent if m.text in ("first", "second")]
    assert second.at - first.at >= 5.9


def test_the_window_follows_the_users_messages(runtime, adapter, linked):
    with database.connection_context():
        record_inbound("4915100000009", utcnow() - timedelta(hours=23, minutes=59))
    from control.services.whatsapp_window import in_window

    with database.connection_context():
        assert in_window("4915100000009") and in_window(WA_ID)
        assert not in_window("4915100000010")  # never wrote


def test_a_long_reply_goes_in_4096_character_messages_and_a_failed_chunk_fails_the_reply(
        runtime, adapter, linked, live_url, api):
    text = "\n".join(f"line {i}: " + "z" * 90 for i in range(90))  # about 8,900 characters
    worker = worker_for(runtime, adapter, linked)
    reply(runtime, linked, "env-long", text)
    run_until(worker, state_is("env-long", "delivered"))
    shown = api.texts_to(WA_ID)[-3:]
    assert all(len(part) <= 4096 for part in shown) and "\n".join(shown) == text
    last_chunk = ledger("env-long").chunk_message_ids.split(",")[-1]
    assert post_webhook(live_url, status_body(last_chunk, "failed"), APP_SECRET) == 200
    assert ledger("env-long").state == "failed"
