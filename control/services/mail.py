"""Outgoing e-mail through a transactional outbox (issue #10).

A caller writes an ``OutboxMail`` row with ``queue_mail`` inside the transaction that causes
the mail (a reset token, a failed payment), so the mail exists exactly when the change does.
``send_pending`` later delivers the rows over SMTP (``SMTP_URL``; a Huey periodic task, every
minute); without ``SMTP_URL`` (local mode) ``print_pending`` writes them to ``hermes serve``'s
console instead, so a local user can still follow a reset link.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from control.errors import ConfigError
from control.models import OutboxMail, utcnow
from control.services.attention import raise_attention
from wire import logs

log = logging.getLogger(__name__)

# A mail is tried once per run of the periodic task (every minute): ten attempts ride out an
# SMTP server restart or a short outage; past that an operator must look (attention item), and
# a reset link, valid one hour, is of little use much later anyway.
MAX_ATTEMPTS = 10
# Seconds to wait for the SMTP server on connect and on each command (smtplib's ``timeout``).
SMTP_TIMEOUT = 30
# Default ports: 25 for smtp:// (IANA's port for SMTP), 465 for smtps://, implicit TLS
# (RFC 8314, 7.3 "submissions").
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
CONSOLE_NOTE = "printed to console"


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to deliver: parsed from ``SMTP_URL`` by ``parse_smtp_url``."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    user: str
    password: str


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse ``smtp://[user:password@]host[:port][?starttls=1]`` or ``smtps://...``.

    User and password may be percent-encoded (RFC 3986 userinfo).

    Raises:
        ConfigError: another scheme, no host, or a port that is not a number.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError("SMTP_URL must look like smtp://user:password@host:port or smtps://...")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError("SMTP_URL has an invalid port") from None
    starttls = parse_qs(parts.query).get("starttls", ["0"])[-1].lower() in ("1", "true", "yes")
    return SmtpTarget(host=parts.hostname, port=port, implicit_tls=parts.scheme == "smtps",
                      starttls=starttls and parts.scheme == "smtp",
                      user=unquote(parts.username or ""), password=unquote(parts.password or ""))


def queue_mail(to_addr: str, subject: str, body: str) -> OutboxMail:
    """Write an unsent mail to the outbox; call it inside the caller's own transaction.

    Args:
        to_addr: the recipient's address.
        subject: one line (line breaks are replaced by spaces: they would end the header).
        body: plain text.

    Returns:
        The new ``OutboxMail`` row.
    """
    subject = " ".join(subject.split())
    return OutboxMail.create(to_addr=to_addr, subject=subject, body=body)


def _pending(limit: int) -> list[OutboxMail]:
    return list(OutboxMail.select()
                .where(OutboxMail.sent_at.is_null() & (OutboxMail.attempts < MAX_ATTEMPTS))
                .order_by(OutboxMail.id).limit(limit))


def _message(mail: OutboxMail, mail_from: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = mail.to_addr
    message["Subject"] = mail.subject
    message.set_content(mail.body)
    return message


def _connect(target: SmtpTarget) -> smtplib.SMTP:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if target.implicit_tls:
        smtp = smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT, context=context)
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT)
        if target.starttls:
            smtp.starttls(context=context)
    if target.user:
        smtp.login(target.user, target.password)
    return smtp


def _failed(mail: OutboxMail, error: str, permanent: bool = False) -> None:
    """Count a failed attempt; on the last one (or a permanent refusal) raise an attention item."""
    mail.attempts = MAX_ATTEMPTS if permanent else mail.attempts + 1
    mail.error = error[:2000]
    mail.save()
    log.warning("mail %s to %s failed (attempt %s): %s", mail.id, mail.to_addr, mail.attempts, error)
    if mail.attempts >= MAX_ATTEMPTS:
        raise_attention("mail_failed", f"outbox_mail:{mail.id}",
                        f"gave up sending {mail.subject!r} to {mail.to_addr} after "
                        f"{mail.attempts} attempt(s): {mail.error}")


def send_pending(settings, limit: int = 50) -> int:
    """Send up to ``limit`` unsent outbox mails over ``settings.smtp_url``, oldest first.

    One SMTP connection serves the batch. A sent mail gets ``sent_at``; a failure counts an
    attempt and records the error, and after ``MAX_ATTEMPTS`` (at once for a refused
    recipient, which retrying cannot fix) the mail is given up with an attention item.
    Needs an open database connection.

    Args:
        settings: ``Settings`` (``smtp_url``, ``mail_from``).
        limit: most mails sent in one call.

    Returns:
        The number of mails sent.

    Raises:
        ConfigError: ``smtp_url`` is empty or invalid.
    """
    if not settings.smtp_url:
        raise ConfigError("SMTP_URL is not set")
    target = parse_smtp_url(settings.smtp_url)
    mails = _pending(limit)
    if not mails:
        return 0
    try:
        smtp = _connect(target)
    except (OSError, smtplib.SMTPException) as exc:
        for mail in mails:
            _failed(mail, f"cannot reach {target.host}:{target.port}: {exc}")
        return 0
    sent = 0
    try:
        for mail in mails:
            try:
                smtp.send_message(_message(mail, settings.mail_from))
            except smtplib.SMTPRecipientsRefused as exc:
                _failed(mail, f"recipient refused: {exc.recipients}", permanent=True)
                continue
            except (OSError, smtplib.SMTPException) as exc:
                _failed(mail, str(exc))
                continue
            mail.sent_at = utcnow()
            mail.attempts += 1
            mail.error = ""
            mail.save()
            sent += 1
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return sent


def print_pending(stream: TextIO, limit: int = 50, as_log: bool = False) -> int:
    """Local mode without ``SMTP_URL``: write each unsent mail to ``stream`` once and mark it
    sent (error ``"printed to console"``), so a local user can follow a reset link.

    Args:
        stream: where the mails are written (``hermes serve``'s standard output).
        limit: mails handled per call.
        as_log: write each mail as a log record instead (``HERMES_LOG_FORMAT=json``: the
            process's output stays one JSON object per line).

    Returns:
        The number of mails printed.
    """
    mails = _pending(limit)
    for mail in mails:
        if as_log:
            with logs.bound(mail_to=mail.to_addr, subject=mail.subject):
                log.info("e-mail not sent (SMTP_URL is not set): %s", mail.body)
        else:
            stream.write(f"\n----- e-mail (not sent: SMTP_URL is not set) -----\nTo: {mail.to_addr}\n"
                         f"Subject: {mail.subject}\n\n{mail.body}\n"
                         "----- end of e-mail -----\n")
            stream.flush()
        mail.sent_at = utcnow()
        mail.attempts += 1
        mail.error = CONSOLE_NOTE
        mail.save()
    return len(mails)
