"""The mail outbox: queued rows go out over a real SMTP server (aiosmtpd), failures are counted
and given up with an attention item, and without SMTP_URL ``hermes serve`` prints them."""

from __future__ import annotations

import io
import ssl
from dataclasses import replace

import pytest
from support.serve import free_port, wait_until
from support.smtp import SmtpServer
from support.tls_certs import issue_certificates

from control.db import database
from control.errors import ConfigError
from control.models import AttentionItem, OutboxMail
from control.server import Server
from control.services import mail


def _queue(*recipients: str) -> list[int]:
    with database.atomic():
        return [mail.queue_mail(to, f"Hello {to}", f"Body for {to}\nhttp://x/reset/abc").id
                for to in recipients]


def _rows() -> list[OutboxMail]:
    with database.connection_context():
        return list(OutboxMail.select().order_by(OutboxMail.id))


def test_queued_mail_is_sent_once_over_smtp_with_login(runtime, settings):
    with SmtpServer(user="mailer", password="p@ss:word") as server:
        url = f"smtp://mailer:p%40ss%3Aword@127.0.0.1:{server.port}"
        smtp_settings = replace(settings, smtp_url=url, mail_from="Hermes Max <no-reply@hermes.test>")
        with database.connection_context():
            _queue("ada@example.com", "bob@example.com")
            assert mail.send_pending(smtp_settings) == 2
            assert mail.send_pending(smtp_settings) == 0  # nothing goes out twice

    assert server.logins == [("mailer", "p@ss:word")]  # percent-decoded from the URL
    assert [m["To"] for m in server.messages] == ["ada@example.com", "bob@example.com"]
    first = server.messages[0]
    assert first["From"] == "Hermes Max <no-reply@hermes.test>"
    assert first["Subject"] == "Hello ada@example.com"
    assert "http://x/reset/abc" in first.get_content()
    assert server.envelopes[0] == ("no-reply@hermes.test", ["ada@example.com"])
    rows = _rows()
    assert all(r.sent_at is not None and r.attempts == 1 and r.error == "" for r in rows)


def test_starttls_verifies_the_server_certificate(runtime, settings, tmp_path, monkeypatch):
    certs = issue_certificates(tmp_path / "tls", common_name="Test SMTP CA")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs["cert"], certs["key"])
    with SmtpServer(user="u", password="pw", tls_context=context) as server:
        url = f"smtp://u:pw@127.0.0.1:{server.port}?starttls=1"
        with database.connection_context():
            _queue("ada@example.com")
            # Our CA is unknown to the system store: the certificate check must refuse it.
            assert mail.send_pending(replace(settings, smtp_url=url)) == 0
            assert "CERTIFICATE_VERIFY_FAILED" in _rows()[0].error
            monkeypatch.setenv("SSL_CERT_FILE", str(certs["ca"]))
            assert mail.send_pending(replace(settings, smtp_url=url)) == 1
    assert [m["To"] for m in server.messages] == ["ada@example.com"]
    assert _rows()[0].attempts == 2


def test_failures_are_counted_then_given_up_with_an_attention_item(runtime, settings):
    with SmtpServer(user="mailer", password="right") as server:
        bad = replace(settings, smtp_url=f"smtp://mailer:wrong@127.0.0.1:{server.port}")
        with database.connection_context():
            (mail_id,) = _queue("ada@example.com")
            for attempt in range(1, mail.MAX_ATTEMPTS + 1):
                assert mail.send_pending(bad) == 0
                row = OutboxMail.get_by_id(mail_id)
                assert (row.attempts, row.sent_at) == (attempt, None)
                assert "535" in row.error  # the server's "authentication failed" reply
            items = list(AttentionItem.select().where(AttentionItem.kind == "mail_failed"))
            assert [i.subject for i in items] == [f"outbox_mail:{mail_id}"]
            # Given up: a later run (even with a working URL) leaves it alone.
            good = replace(settings, smtp_url=f"smtp://mailer:right@127.0.0.1:{server.port}")
            assert mail.send_pending(good) == 0
    assert server.messages == []


def test_an_unreachable_server_counts_an_attempt_and_keeps_the_mail(runtime, settings):
    closed = replace(settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    with database.connection_context():
        _queue("ada@example.com")
        assert mail.send_pending(closed) == 0
    (row,) = _rows()
    assert row.sent_at is None and row.attempts == 1 and "cannot reach 127.0.0.1" in row.error


def test_a_refused_recipient_is_given_up_at_once(runtime, settings):
    class Refusing(SmtpServer):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            return "550 5.1.1 No such user"

    with Refusing() as server, database.connection_context():
        _queue("nobody@example.com")
        assert mail.send_pending(replace(settings, smtp_url=f"smtp://127.0.0.1:{server.port}")) == 0
        assert AttentionItem.select().where(AttentionItem.kind == "mail_failed").count() == 1
    (row,) = _rows()
    assert row.attempts == mail.MAX_ATTEMPTS and "550" in row.error


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example:2525", ("mail.example", 2525, False, False, "", "")),
    ("smtp://u:p@mail.example?starttls=1", ("mail.example", 25, False, True, "u", "p")),
    ("smtps://user%40x:s%2Fcret@mail.example", ("mail.example", 465, True, False, "user@x", "s/cret")),
])
def test_smtp_urls_are_parsed(url, expected):
    t = mail.parse_smtp_url(url)
    assert (t.host, t.port, t.implicit_tls, t.starttls, t.user, t.password) == expected


@pytest.mark.parametrize("url", ["http://mail.example", "smtp://", "smtp://host:port"])
def test_invalid_smtp_urls_are_refused(url):
    with pytest.raises(ConfigError):
        mail.parse_smtp_url(url)


def test_without_smtp_url_send_pending_refuses(settings):
    with pytest.raises(ConfigError):
        mail.send_pending(settings)


def test_the_periodic_task_exists_only_with_smtp_and_sends(settings):
    from control.runtime import Runtime

    with SmtpServer() as server:
        smtp_settings = replace(settings, smtp_url=f"smtp://127.0.0.1:{server.port}")
        rt = Runtime(smtp_settings, upgrade_schema=True)
        try:
            with database.connection_context():
                _queue("ada@example.com")
            assert rt.tasks.send_mail.call_local() == 1
        finally:
            rt.close()
        plain = Runtime(settings)
        try:
            assert not hasattr(plain.tasks, "send_mail")
        finally:
            plain.close()
    assert [m["To"] for m in server.messages] == ["ada@example.com"]


def test_print_pending_writes_each_mail_once_and_marks_it(runtime):
    out = io.StringIO()
    with database.connection_context():
        _queue("ada@example.com")
        assert mail.print_pending(out) == 1
        assert mail.print_pending(out) == 0
    text = out.getvalue()
    assert text.count("To: ada@example.com") == 1 and "http://x/reset/abc" in text
    (row,) = _rows()
    assert row.sent_at is not None and row.error == mail.CONSOLE_NOTE


def test_hermes_serve_prints_outbox_mail_to_its_console_without_smtp(settings, capsys):
    server = Server(settings)
    try:
        server._start_mail_console()
        with database.connection_context():
            _queue("ada@example.com")
        wait_until(lambda: _rows()[0].sent_at is not None, 10, "the console printer")
        assert server.runtime.workers_alive()["mail"]
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert "To: ada@example.com" in out and "http://x/reset/abc" in out
