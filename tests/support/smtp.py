"""A real SMTP server for tests (aiosmtpd), recording every message it accepts."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from support.serve import free_port


class SmtpServer:
    """aiosmtpd on 127.0.0.1 in a background thread; ``messages`` holds what it accepted.

    Args:
        user, password: when given, clients must log in with them (AUTH over plain TCP
            is allowed, as a local relay would).
        tls_context: an ``ssl.SSLContext`` to offer STARTTLS with (required when given).
    """

    def __init__(self, user: str = "", password: str = "", tls_context=None):
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[tuple[str, str]] = []
        self.port = free_port()
        self._credentials = (user, password)
        options = {}
        if user:
            options.update(authenticator=self._authenticate, auth_required=True,
                           auth_require_tls=tls_context is not None)
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        # handled=False: aiosmtpd then answers "535 ... credentials invalid" itself.
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == self._credentials, handled=False)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()
