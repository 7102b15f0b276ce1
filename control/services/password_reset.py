"""Password reset by e-mail link (OWASP Forgot Password Cheat Sheet,
https://cheatsheetseries.owasp.org/cheatsheets/Forgot_Password_Cheat_Sheet.html).

The token is 32 random bytes (``secrets.token_urlsafe``); only its SHA-256 is stored, so a
copy of the database cannot be used to reset anybody's password.  A link is single use and
lives ``RESET_TTL``; using one ends every session of the account and voids its other links.
Asking for a link gives the same answer whether or not the address has an account.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from control.db import write_transaction
from control.errors import BadRequest
from control.models import Account, PasswordReset, utcnow
from control.services import mail
from control.services.accounts import (
    check_password_rules,
    end_sessions,
    hash_password,
    normalize_email,
)

# OWASP Forgot Password Cheat Sheet: reset tokens "should expire after an appropriate period";
# one hour leaves time to open the mail, and keeps a leaked link's window short.
RESET_TTL = timedelta(hours=1)
TOKEN_BYTES = 32  # 256 bits of entropy (secrets module docs: 32 bytes is "enough")
INVALID_LINK = "This password reset link is invalid, expired or already used. Ask for a new one."


def token_hash(token: str) -> str:
    """Return the hex SHA-256 of ``token`` (what ``PasswordReset.token_hash`` stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


def request_reset(email: str, public_url: str) -> str | None:
    """Queue a reset link for ``email`` if it has an account; do nothing otherwise.

    Args:
        email: the address typed by the user (normalized here).
        public_url: the site's base URL (``settings.public_url``); the link is
            ``<public_url>/reset/<token>``.

    Returns:
        The token when a link was queued, else None (callers must answer the same either way).

    Raises:
        BadRequest: ``email`` is not a valid address (says nothing about accounts).
    """
    email = normalize_email(email)
    with write_transaction():
        account = Account.get_or_none(Account.email == email)
        if account is None or account.tenant.deleted_at:
            return None
        token = secrets.token_urlsafe(TOKEN_BYTES)
        PasswordReset.create(account=account, token_hash=token_hash(token),
                             expires_at=utcnow() + RESET_TTL)
        link = f"{public_url.rstrip('/')}/reset/{token}"
        mail.queue_mail(account.email, "Reset your Hermes Max password", (
            "Someone (hopefully you) asked to reset the password of your Hermes Max account.\n\n"
            f"Open this link within {int(RESET_TTL.total_seconds() // 60)} minutes to choose a "
            f"new password:\n\n{link}\n\n"
            "The link works once. If you did not ask for it, ignore this e-mail: your password "
            "stays as it is.\n"))
    return token


def valid_reset(token: str) -> PasswordReset:
    """Return the unused, unexpired reset for ``token``.

    Raises:
        BadRequest: unknown, expired or already used (one message for all three).
    """
    reset = PasswordReset.get_or_none(PasswordReset.token_hash == token_hash(token or ""))
    if (reset is None or reset.used_at is not None or reset.expires_at <= utcnow()
            or reset.account.tenant.deleted_at):
        raise BadRequest(INVALID_LINK, code="invalid_reset_link")
    return reset


def finish_reset(token: str, password: str) -> Account:
    """Set a new password with a reset link; the link and every other open link of the
    account are used up, and every session of the account ends.

    Returns:
        The account, with its new ``session_version`` (log the caller in with it).

    Raises:
        BadRequest: invalid link (``valid_reset``) or password (``check_password_rules``).
    """
    check_password_rules(password)
    password_hash = hash_password(password)
    with write_transaction():
        account = valid_reset(token).account
        now = utcnow()
        PasswordReset.update(used_at=now).where(
            (PasswordReset.account == account) & PasswordReset.used_at.is_null()).execute()
        Account.update(password_hash=password_hash).where(Account.id == account.id).execute()
        account.password_hash = password_hash
        end_sessions(account)
    return account
